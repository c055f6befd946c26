"""A batched simulated annealer: all problems of a decoding step in one call, CPU and GPU.

- `anneal_onehot`, `anneal_dense`: array entry points (numba on CPU, Triton on CUDA);
- `anneal_coupled`: one-hot rows coupled in sibling groups (numba);
- `beta_schedule`: geometric, linear, fixed or custom inverse-temperature schedules;
- `BatchedSimulatedAnnealingSampler`: the same annealer as a ``dimod.Sampler``.
"""

from .core import (
    ACCEPTANCE,
    ORDERS,
    SCHEDULES,
    AnnealResult,
    anneal_coupled,
    anneal_dense,
    anneal_onehot,
    anneal_sparse,
    beta_schedule,
    problem_keys,
)
from .sampler import BatchedSimulatedAnnealingSampler

__all__ = [
    "ACCEPTANCE",
    "ORDERS",
    "SCHEDULES",
    "AnnealResult",
    "BatchedSimulatedAnnealingSampler",
    "anneal_coupled",
    "anneal_dense",
    "anneal_onehot",
    "anneal_sparse",
    "beta_schedule",
    "problem_keys",
]
