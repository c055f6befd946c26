"""Backends: the solvers a `QuantumSampler` hands each step's problems to."""

from .base import (
    THERMAL_BETA,
    Backend,
    FailureKind,
    Failures,
    RejectedResult,
    SolveRequest,
    SolveResult,
    describe,
)
from .batched_sa import BatchedSABackend
from .dimod_backends import DimodBackend, ExactBackend, NealBackend, TabuBackend, TreeBackend
from .registry import available_backends, make_backend, register_backend

__all__ = [
    "THERMAL_BETA",
    "Backend",
    "BatchedSABackend",
    "DimodBackend",
    "ExactBackend",
    "FailureKind",
    "Failures",
    "NealBackend",
    "RejectedResult",
    "SolveRequest",
    "SolveResult",
    "TabuBackend",
    "TreeBackend",
    "available_backends",
    "describe",
    "make_backend",
    "register_backend",
]
