"""vLLM throughput with and without opted-in requests, in one run on one engine.

Arms per batch size B: ``plain`` (no request opts in), ``qsample MODE/BACKEND`` (every request
opts in) and ``mixed`` (half of them). Every arm generates exactly ``new_tokens`` per request
(``min_tokens``) at the same temperature and top-k; tokens/s is the median over repeats and the
ratio is against ``plain``.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qsample.tools.bench import MS_PER_S, timed_median, write_report

from ..transformers.benchmark import PROMPTS

#: Share of the requests that opt in, in the ``mixed`` arms.
MIXED_SHARE = 0.5


def run_vllm_bench(model: str, *, batches: Sequence[int] = (8, 32),
                   combos: Sequence[tuple[str, str]] = (("gumbel", "batched-sa"),
                                                        ("gumbel", "neal")),
                   new_tokens: int = 64, repeats: int = 3, top_k: int = 64,
                   temperature: float = 0.8, max_model_len: int = 512,
                   log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """One row per arm and batch size: median seconds of a batch, tokens/s, the ratio to
    ``plain`` and the sampler's share of the time (mean sampler seconds / median)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    from vllm import LLM, SamplingParams

    from . import QSampleVLLMProcessor

    llm = LLM(model=model, enforce_eager=True, max_model_len=max_model_len, seed=0)

    def sampler_seconds() -> float:
        return sum(p.stats.sampler_seconds for p in QSampleVLLMProcessor.instances)

    def timed(prompts: list[str], params: list[SamplingParams]) -> tuple[float, float]:
        """(median seconds of one batch, mean sampler seconds per batch), after a warm-up."""
        sampler: list[float] = []  # per call: the warm-up's, then each repeat's

        def generate() -> None:
            before = sampler_seconds()
            llm.generate(prompts, params, use_tqdm=False)
            sampler.append(sampler_seconds() - before)

        median_ms, _ = timed_median(generate, repeats)
        return median_ms / MS_PER_S, statistics.mean(sampler[1:])

    rows: list[dict[str, Any]] = []
    for batch in batches:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]

        def requests(xargs, share=1.0, batch=batch):
            return [SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens,
                                   temperature=temperature, top_k=top_k, seed=i,
                                   extra_args=xargs if i < share * batch else None)
                    for i in range(batch)]

        arms = [("plain", requests(None))]
        for mode, backend in combos:
            xargs = {"qsample_mode": mode, "qsample_backend": backend}
            arms.append((f"qsample {mode}/{backend}", requests(xargs)))
            arms.append((f"mixed {MIXED_SHARE:.0%} {mode}/{backend}",
                         requests(xargs, MIXED_SHARE)))
        plain = None
        for name, params in arms:
            median, sampler_s = timed(prompts, params)
            tps = batch * new_tokens / median
            plain = tps if name == "plain" else plain
            row = {"arm": name, "batch": batch, "new_tokens": new_tokens, "median_s": median,
                   "tokens_per_s": tps, "ratio_vs_plain": tps / plain,
                   "sampler_share": sampler_s / median, "repeats": repeats}
            rows.append(row)
            log(f"{name:28s} {batch:3d} {median:9.2f} {tps:9.1f} {tps / plain:8.3f} "
                f"{100 * row['sampler_share']:7.1f}%")
    return rows

HEADER = f"{'arm':28s} {'B':>3s} {'median s':>9s} {'tokens/s':>9s} {'vs plain':>8s} {'sampler':>8s}"


def write_json(rows: Sequence[dict[str, Any]], path: str | Path, **meta: Any) -> None:
    write_report(path, "vLLM tokens/s with and without qsample requests", rows, **meta)
