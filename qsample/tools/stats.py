"""Statistics: goodness of fit for fidelity checks (chi-square with merged sparse bins,
total-variation distance) and paired A/B comparisons (bootstrap confidence intervals, sign-flip
permutation tests, Holm's correction, the smallest difference a run can detect)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA_POWER = 0.05  # the test level of `detectable_difference`
POWER = 0.8  # the detection probability of `detectable_difference`


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


def tv_noise_floor(probs: np.ndarray, draws: int) -> float:
    """Expected TV of ``draws`` faithful draws from ``probs``: the binomial count n_i has
    E|n_i - N p_i| ~ sqrt(2 N p_i (1 - p_i) / pi), so E[TV] ~ 1/2 sum_i sqrt(2 p_i (1 - p_i) /
    (pi N))."""
    probs = np.asarray(probs, dtype=np.float64)
    return 0.5 * float(np.sqrt(2 * probs * (1 - probs) / (np.pi * draws)).sum())


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


# ------------------------------------------------------------------ paired A/B comparisons


@dataclass
class PairedComparison:
    """Arm minus baseline on paired units (same prompt, same sample seed).

    Attributes:
        difference: mean of the paired differences.
        low, high: percentile bootstrap confidence interval of that mean.
        p_value: two-sided sign-flip permutation test of a zero mean difference.
        p_adjusted: ``p_value`` after the multiple-comparison correction (`holm`).
        pairs: number of pairs used (units where either value is nan are dropped).
        detectable: the smallest true difference this many pairs detect with probability
            `POWER` at `ALPHA_POWER` (two-sided): (z_(1-alpha/2) + z_power) sd(d) / sqrt(pairs).
    """

    difference: float
    low: float
    high: float
    p_value: float
    pairs: int
    p_adjusted: float = float("nan")
    detectable: float = float("nan")


def paired_comparison(arm: np.ndarray, baseline: np.ndarray, *, resamples: int = 2000,
                      level: float = 0.95, seed: int = 0) -> PairedComparison:
    """Bootstrap CI and permutation p-value of mean(arm - baseline) over paired units."""
    a, b = np.asarray(arm, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    if d.size == 0:
        return PairedComparison(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, (resamples, d.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    signs = rng.choice((-1.0, 1.0), size=(resamples, d.size))
    observed = abs(d.mean())
    extreme = (np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).sum()
    p = (extreme + 1) / (resamples + 1)
    return PairedComparison(float(d.mean()), float(low), float(high), float(p), int(d.size),
                            detectable=detectable_difference(d))


def detectable_difference(d: np.ndarray, alpha: float = ALPHA_POWER,
                          power: float = POWER) -> float:
    """The minimum detectable mean of paired differences like ``d`` (normal approximation):
    (z_(1-alpha/2) + z_power) * sd(d) / sqrt(len(d)); nan below two pairs."""
    from scipy.stats import norm

    if d.size < 2:
        return float("nan")
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return float(z * d.std(ddof=1) / np.sqrt(d.size))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control; nan stays nan)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite])]
    m = order.size
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        out[index] = running
    return out
