"""Backends: the solvers a `QuantumSampler` hands each step's problems to."""

from ..annealer.step import STATUS_EMPTY, STATUS_NAN, STATUS_NO_VALID_READ, StepOutput
from .base import (
    THERMAL_BETA,
    Backend,
    FailureKind,
    Failures,
    RejectedResult,
    SolveRequest,
    SolveResult,
    StepSpec,
    describe,
)
from .batched_sa import BatchedSABackend
from .dimod_backends import DimodBackend, ExactBackend, NealBackend, TabuBackend, TreeBackend
from .registry import available_backends, make_backend, register_backend

__all__ = [
    "STATUS_EMPTY",
    "STATUS_NAN",
    "STATUS_NO_VALID_READ",
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
    "StepOutput",
    "StepSpec",
    "TabuBackend",
    "TreeBackend",
    "available_backends",
    "describe",
    "make_backend",
    "register_backend",
]
