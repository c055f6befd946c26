"""Effective temperature of a backend in ``boltzmann`` mode: measure, correct, save.

A backend asked for exp(-E) over the one-hot states may sample exp(-beta_eff E) instead (a QPU
whose temperature differs from the assumed one, a short chain, a transverse field). On one-hot
states this is p_i proportional to target_i^beta_eff, so beta_eff has a one-dimensional maximum
likelihood estimate from the sampled candidates c_n:

    sum_n z_{c_n} = N E_beta[z],   z_i = log target_i,

solved by bisection on log beta (E_beta[z] increases with beta). beta_eff = 1 is faithful.
Reported: total-variation distance of the samples to the target (before correction) and to the
temperature-corrected model softmax(beta_eff z) (after: what remains is not a temperature
error). The result is saved under the qsample cache so that backends with a temperature knob use
it (`dwave`: beta_qpu <- beta_qpu x beta_eff).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import cache
from ..backends import make_backend
from ..cache import calibration_path, load_calibration
from ..config import SamplerConfig
from .fidelity import measure, reference_logits
from .stats import total_variation

__all__ = ["CalibrationResult", "beta_interval", "calibrate", "calibration_path", "fit_beta",
           "fit_beta_joint", "load_calibration", "plot", "save_calibration", "tempered"]

BETA_BOUNDS = (1e-3, 1e3)  # the search interval of beta_eff and of its confidence limits
BISECTIONS = 100
LEVEL = 0.95  # the confidence level of beta_eff's interval


def fit_beta(counts: np.ndarray, target: np.ndarray) -> float:
    """Maximum-likelihood beta_eff of counts [K] under p(beta) = softmax(beta log target)."""
    return fit_beta_joint([counts], [target])


def fit_beta_joint(counts: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """One beta_eff for several (counts, target) pairs: the root of the summed score
    sum_n z_{c_n} - N E_beta[z], by bisection on log beta in `BETA_BOUNDS`."""
    def score(beta: float) -> float:
        total = 0.0
        for c, t in zip(counts, targets, strict=True):
            support = t > 0
            z, n = np.log(t[support]), np.asarray(c, np.float64)[support]
            w = np.exp(beta * (z - z.max()))
            total += (n * z).sum() - n.sum() * (w * z).sum() / w.sum()
        return total

    low, high = np.log(BETA_BOUNDS[0]), np.log(BETA_BOUNDS[1])
    if score(np.exp(low)) <= 0:
        return float(np.exp(low))
    if score(np.exp(high)) >= 0:
        return float(np.exp(high))
    for _ in range(BISECTIONS):
        middle = (low + high) / 2
        if score(np.exp(middle)) > 0:
            low = middle
        else:
            high = middle
    return float(np.exp((low + high) / 2))


def log_likelihood(beta: float, counts: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """sum over pairs and candidates of n_i log softmax(beta z)_i, z = log target."""
    total = 0.0
    for c, t in zip(counts, targets, strict=True):
        support = t > 0
        z, n = beta * np.log(t[support]), np.asarray(c, np.float64)[support]
        top = z.max()
        total += (n * z).sum() - n.sum() * (top + np.log(np.exp(z - top).sum()))
    return float(total)


def beta_interval(counts: list[np.ndarray], targets: list[np.ndarray], beta: float | None = None,
                  level: float = LEVEL) -> tuple[float, float]:
    """Profile-likelihood confidence interval of beta_eff (`fit_beta_joint`): the betas whose
    log-likelihood is within chi2_1(level) / 2 of the maximum, found by bisection on log beta
    on each side of the estimate (clipped to `BETA_BOUNDS`)."""
    from scipy.stats import chi2

    beta = fit_beta_joint(counts, targets) if beta is None else beta
    floor = log_likelihood(beta, counts, targets) - chi2.ppf(level, 1) / 2

    def limit(bound: float) -> float:
        inside, outside = np.log(beta), np.log(bound)
        if log_likelihood(bound, counts, targets) >= floor:
            return bound
        for _ in range(BISECTIONS):
            middle = (inside + outside) / 2
            if log_likelihood(np.exp(middle), counts, targets) >= floor:
                inside = middle
            else:
                outside = middle
        return float(np.exp((inside + outside) / 2))

    return limit(BETA_BOUNDS[0]), limit(BETA_BOUNDS[1])


def tempered(target: np.ndarray, beta: float) -> np.ndarray:
    """softmax(beta log target): the target at inverse temperature beta."""
    with np.errstate(divide="ignore"):
        z = np.where(target > 0, beta * np.log(target), -np.inf)
    w = np.exp(z - z.max())
    return w / w.sum()


@dataclass
class CalibrationResult:
    mode: str
    backend: str
    solver: str
    k: int
    draws: int
    beta_eff: float
    beta_low: float  # the LEVEL profile-likelihood interval of beta_eff (`beta_interval`)
    beta_high: float
    tv_before: float
    tv_after: float
    valid_read_rate: float
    seconds: float
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)
    backend_setting: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(backend: str, *, mode: str = "boltzmann", k: int = 16, draws: int = 4000,
              temperature: float = 0.8,
              seed: int = 0, shapes: tuple[str, ...] = ("flat", "peaked"), chunk: int = 1000,
              config: dict[str, Any] | None = None) -> tuple[CalibrationResult, dict]:
    """Sample ``draws`` tokens per logits shape in ``mode`` (``chunk`` rows per sampler call),
    fit beta_eff jointly over the shapes, and return the result plus the per-shape data for
    plots. In ``gumbel`` mode beta_eff measures how a missed ground state softens (< 1) or
    sharpens (> 1) the distribution; only a ``boltzmann`` result sets a backend's temperature."""
    backend_obj = make_backend(backend, (config or {}).get("backend_params"))
    settings = {"mode": mode, "backend": backend_obj, "top_k": k,
                "temperature": temperature, "seed": seed, **(config or {})}
    start = time.perf_counter()
    data: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sampler_config = SamplerConfig.from_dict(settings)
        for shape in shapes:
            result = measure(sampler_config, reference_logits(shape, k), draws, chunk=chunk)
            valid = result.telemetry.get("valid_read_rate", float("nan"))
            data[shape] = {"counts": result.counts, "target": result.target, "valid": valid}
    counts, targets = [d["counts"] for d in data.values()], [d["target"] for d in data.values()]
    beta = fit_beta_joint(counts, targets)
    low, high = beta_interval(counts, targets, beta)
    per_shape = {}
    for shape, d in data.items():
        per_shape[shape] = {
            "beta_eff": fit_beta(d["counts"], d["target"]),
            "tv_before": total_variation(d["counts"], d["target"]),
            "tv_after": total_variation(d["counts"], tempered(d["target"], beta))}
    solver = str(getattr(backend_obj, "solver_id", backend_obj.name))
    setting = {}
    if hasattr(backend_obj, "beta_qpu") and mode == "boltzmann":
        setting = {"beta_qpu_assumed": float(backend_obj.beta_qpu),
                   "beta_qpu_calibrated": float(backend_obj.beta_qpu) * beta}
    out = CalibrationResult(
        mode=mode, backend=backend_obj.name, solver=solver, k=k, draws=draws * len(shapes),
        beta_eff=beta, beta_low=low, beta_high=high,
        tv_before=float(np.mean([v["tv_before"] for v in per_shape.values()])),
        tv_after=float(np.mean([v["tv_after"] for v in per_shape.values()])),
        valid_read_rate=float(np.mean([d["valid"] for d in data.values()])),
        seconds=time.perf_counter() - start, shapes=per_shape, backend_setting=setting)
    return out, data


def save_calibration(result: CalibrationResult) -> Path:
    """Write the result where `load_calibration` finds it. ``beta_eff`` is always relative (1
    is faithful); ``backend_setting`` holds the corrected knob of backends that have one (dwave:
    ``beta_qpu_calibrated``, which `DWaveBackend` then uses)."""
    if result.mode != "boltzmann":
        raise ValueError("only a boltzmann calibration sets a backend's temperature")
    return cache.save_calibration(result.to_dict())


def plot(results: list[tuple[CalibrationResult, dict]], path: str | Path) -> None:
    """Sampled against target probabilities, one panel per backend (log-log), with the fitted
    temperature-corrected curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4), squeeze=False)
    for ax, (result, data) in zip(axes[0], results, strict=True):
        for shape, d in data.items():
            target = np.asarray(d["target"])
            sampled = np.asarray(d["counts"]) / max(1, int(np.sum(d["counts"])))
            ax.scatter(target, np.maximum(sampled, 1e-5), s=12, label=f"{shape} samples")
            order = np.argsort(target)
            ax.plot(target[order], tempered(target, result.beta_eff)[order], lw=1,
                    label=f"{shape} softmax(β_eff log p)")
        lims = [1e-5, 1.0]
        ax.plot(lims, lims, "k--", lw=0.8, label="faithful")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("target probability")
        ax.set_ylabel("sampled frequency")
        ax.set_title(f"{result.backend}: β_eff = {result.beta_eff:.3f} "
                     f"[{result.beta_low:.3f}, {result.beta_high:.3f}]\n"
                     f"TV {result.tv_before:.3f} → {result.tv_after:.3f}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
