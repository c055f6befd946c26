"""Exact Boltzmann references for the annealer tests (shared by the numba tests and the Triton
interpreter script, which runs in its own process)."""

import numpy as np

from qsample.tools.stats import chi_square

ALPHA = 1e-3


def all_states(k: int) -> np.ndarray:
    """All 2^k binary states [2^k, k]; row index = sum_i x_i 2^i."""
    return ((np.arange(2**k)[:, None] >> np.arange(k)[None, :]) & 1).astype(np.int8)


def state_index(states: np.ndarray) -> np.ndarray:
    """Index of each binary state [..., k] in `all_states`."""
    return (states.astype(np.int64) << np.arange(states.shape[-1])).sum(axis=-1)


def dense_problem(k: int, seed: int, scale: float = 0.5):
    """A random dense BQM: h ~ N(0, 1), J symmetric ~ N(0, scale^2) off the diagonal."""
    draw = np.random.default_rng(seed)
    h = draw.normal(size=k)
    j = np.triu(draw.normal(scale=scale, size=(k, k)), 1)
    return h, j + j.T


def dense_energies(h: np.ndarray, j: np.ndarray, offset: float = 0.0) -> np.ndarray:
    x = all_states(len(h)).astype(np.float64)
    return offset + x @ h + np.einsum("si,ij,sj->s", x, j, x)


def onehot_energies(w: np.ndarray, penalty: float) -> np.ndarray:
    x = all_states(len(w)).astype(np.float64)
    return -x @ w + penalty * (x.sum(axis=1) - 1) ** 2


def boltzmann(energies: np.ndarray, beta: float) -> np.ndarray:
    p = np.exp(-beta * (energies - energies.min()))
    return p / p.sum()


def fit_states(states: np.ndarray, probs: np.ndarray):
    """Chi-square of sampled states [N, k] against exact state probabilities [2^k]."""
    counts = np.bincount(state_index(states), minlength=len(probs))
    return chi_square(counts, probs)
