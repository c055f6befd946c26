"""Backends: the solvers a `QuantumSampler` hands each step's problems to."""

from .base import Backend, SolveRequest, SolveResult
from .batched_sa import BatchedSABackend
from .dimod_backends import DimodBackend, ExactBackend, NealBackend, TabuBackend, TreeBackend
from .registry import available_backends, make_backend, register_backend

__all__ = [
    "Backend",
    "BatchedSABackend",
    "DimodBackend",
    "ExactBackend",
    "NealBackend",
    "SolveRequest",
    "SolveResult",
    "TabuBackend",
    "TreeBackend",
    "available_backends",
    "make_backend",
    "register_backend",
]
