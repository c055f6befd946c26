"""Goodness-of-fit helpers for fidelity checks: chi-square with merged sparse bins, and
total-variation distance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FitResult:
    """chi-square statistic, degrees of freedom, p-value, total-variation distance, draws."""

    chi2: float
    dof: int
    p_value: float
    tv: float
    draws: int


def counts_of(samples: np.ndarray, size: int) -> np.ndarray:
    """Histogram of integer samples in [0, size)."""
    return np.bincount(np.asarray(samples, dtype=np.int64), minlength=size)[:size]


def total_variation(counts: np.ndarray, probs: np.ndarray) -> float:
    """TV = 1/2 sum_i |n_i / N - p_i|."""
    counts = np.asarray(counts, dtype=np.float64)
    return 0.5 * float(np.abs(counts / counts.sum() - np.asarray(probs, np.float64)).sum())


def chi_square(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> FitResult:
    """Pearson chi-square test of observed counts against probabilities.

    Bins whose expected count N p_i is below ``min_expected`` are merged, smallest first, into one
    pooled bin (which is itself merged into the next-smallest bin while it stays below). Observed
    counts in zero-probability bins make the test reject outright (p = 0).
    """
    from scipy.stats import chi2 as chi2_dist

    counts = np.asarray(counts, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum()
    draws = int(counts.sum())
    tv = total_variation(counts, probs)
    if (counts[probs == 0] > 0).any():
        return FitResult(float("inf"), 0, 0.0, tv, draws)
    expected = draws * probs
    order = np.argsort(expected)
    exp_sorted, obs_sorted = expected[order], counts[order]
    small = int(np.searchsorted(np.cumsum(exp_sorted), min_expected, side="left")) + 1
    n_small = int((exp_sorted < min_expected).sum())
    cut = max(n_small, min(small, len(exp_sorted)) if n_small else 0)
    if cut:
        exp_bins = np.concatenate([[exp_sorted[:cut].sum()], exp_sorted[cut:]])
        obs_bins = np.concatenate([[obs_sorted[:cut].sum()], obs_sorted[cut:]])
    else:
        exp_bins, obs_bins = exp_sorted, obs_sorted
    keep = exp_bins > 0
    exp_bins, obs_bins = exp_bins[keep], obs_bins[keep]
    dof = len(exp_bins) - 1
    if dof < 1:
        return FitResult(0.0, 0, 1.0, tv, draws)
    stat = float(((obs_bins - exp_bins) ** 2 / exp_bins).sum())
    return FitResult(stat, dof, float(chi2_dist.sf(stat, dof)), tv, draws)
