"""Joint-sampling step time: n coupled siblings per prompt against the same rows drawn
independently, in one run.

For each group size n, candidate count K and (mode, coupling), B = prompts x n rows whose
siblings share their logits (every prompt's rows at its first step: the largest coupled problem
the prefix scope builds). Times ``QuantumSampler.sample(logits, groups=...)`` at the coupling
and the same sampler settings at coupling 0 on the same logits; reports medians, the ratio
joint / independent (target: at most 1.5) and each arm's fallback rate.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config import SamplerConfig
from ..sampler import QuantumSampler
from .bench import timed_median

DEFAULT_COUPLINGS = (("gumbel", "distinct"), ("boltzmann", 1.0), ("boltzmann", "distinct"))
TARGET_RATIO = 1.5  # the bound on joint / independent step time
LOGIT_SCALE = 3.0  # logits ~ N(0, 3^2): peaked like a language model's


def _sampler(config: SamplerConfig) -> QuantumSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QuantumSampler(config)


def _timed(sampler: QuantumSampler, logits: torch.Tensor, groups: np.ndarray, repeats: int
           ) -> tuple[float, float]:
    """(median ms of a step, fallback rate over the timed steps)."""
    sampler.sample(logits, groups=groups)  # compile and caches, out of the summary
    sampler.telemetry.clear()
    median, _ = timed_median(lambda: sampler.sample(logits, groups=groups), repeats)
    return median, sampler.telemetry.summary()["fallback_rate"]


def run_joint_bench(sizes: Sequence[int] = (4, 8), ks: Sequence[int] = (16, 64),
                    couplings: Sequence[tuple[str, Any]] = DEFAULT_COUPLINGS,
                    prompts: int = 8, vocab: int = 49152, repeats: int = 5,
                    temperature: float = 0.8, log=print) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for k in ks:
        for n in sizes:
            source = torch.randn(prompts, vocab, generator=torch.Generator().manual_seed(n))
            logits = (source * LOGIT_SCALE).repeat_interleave(n, dim=0)
            groups = np.arange(prompts * n) // n
            for mode, coupling in couplings:
                joint_config = SamplerConfig(mode=mode, top_k=k, temperature=temperature, seed=0,
                                             coupling=coupling)
                joint, joint_fallback = _timed(_sampler(joint_config), logits, groups, repeats)
                alone, alone_fallback = _timed(_sampler(joint_config.replace(coupling=0)),
                                               logits, groups, repeats)
                row = {"mode": mode, "coupling": str(coupling), "n": n, "k": k,
                       "batch": prompts * n, "joint_ms": joint, "independent_ms": alone,
                       "ratio": joint / alone, "joint_fallback_rate": joint_fallback,
                       "independent_fallback_rate": alone_fallback, "repeats": repeats,
                       "target_met": joint / alone <= TARGET_RATIO}
                rows.append(row)
                log(format_row(row))
    return rows


HEADER = (f"{'mode':10s} {'coupling':>9s} {'n':>3s} {'K':>4s} {'B':>4s} {'joint ms':>9s} "
          f"{'indep ms':>9s} {'ratio':>7s} {'fallback joint/indep':>21s}")


def format_row(row: dict[str, Any]) -> str:
    return (f"{row['mode']:10s} {row['coupling']:>9s} {row['n']:3d} {row['k']:4d} "
            f"{row['batch']:4d} {row['joint_ms']:9.2f} {row['independent_ms']:9.2f} "
            f"{row['ratio']:6.2f}x {row['joint_fallback_rate']:10.4f}/"
            f"{row['independent_fallback_rate']:.4f}")
