"""Generation throughput: plain transformers sampling against qsample, in one run.

Each arm generates exactly ``new_tokens`` tokens per row (EOS suppressed with
``min_new_tokens``) from the same prompts at the same settings; the table reports the median
tokens/s over repeats and the ratio qsample / plain (1.0 = the sampler costs nothing).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from qsample import SamplerConfig
from qsample.evaluation.prompts import DEFAULT_PROMPTS
from qsample.tools.bench import MS_PER_S, timed_median, write_report

from .generation import encode_prompt, generate_kwargs

#: The benchmarks' prompts (also vLLM's, `qsample.plugins.vllm.bench`): the eight story openings
#: of the A/B set.
PROMPTS = [p.text for p in DEFAULT_PROMPTS if p.kind == "story"]


def run_generation_bench(model, tokenizer, *, batches: Sequence[int] = (1, 8),
                         combos: Sequence[tuple[str, str]] = (
                             ("gumbel", "batched-sa"), ("boltzmann", "batched-sa"),
                             ("gumbel", "neal"), ("boltzmann", "neal")),
                         new_tokens: int = 64, repeats: int = 3, top_k: int = 64,
                         temperature: float = 0.8, log: Callable[[str], None] = print
                         ) -> list[dict[str, Any]]:
    """One row per arm and batch size: median seconds of a batch (`timed_median`), tokens/s,
    the ratio to plain sampling and the sampler's share of the time (mean sampler seconds over
    the repeats / median)."""
    rows: list[dict[str, Any]] = []
    for batch in batches:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        inputs = encode_prompt(tokenizer, prompts, chat=False, device=model.device)
        common = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens,
                  "pad_token_id": tokenizer.pad_token_id}
        base = SamplerConfig(top_k=top_k, temperature=temperature, seed=0)
        arms = [("plain", base, True)] + [
            (f"qsample {mode}/{backend}", base.replace(mode=mode, backend=backend), False)
            for mode, backend in combos]
        plain_tps = None
        for name, config, plain in arms:
            sampler_seconds: list[float] = []  # per qsample call: the warm-up's, then each repeat's
            torch.manual_seed(0)
            median_ms, _ = timed_median(
                partial(_generate, model, {**inputs, **common}, config, plain, sampler_seconds),
                repeats)
            median = median_ms / MS_PER_S
            tps = batch * new_tokens / median
            plain_tps = tps if name == "plain" else plain_tps
            row = {"arm": name, "batch": batch, "new_tokens": new_tokens, "median_s": median,
                   "tokens_per_s": tps, "ratio_vs_plain": tps / plain_tps,
                   "sampler_share": statistics.mean(sampler_seconds[1:]) / median
                   if sampler_seconds else None,
                   "repeats": repeats}
            rows.append(row)
            log(format_row(row))
    return rows


def _generate(model, kwargs: dict[str, Any], config: SamplerConfig, plain: bool,
              sampler_seconds: list[float]) -> None:
    """One batch at the arm's settings; a qsample arm appends its sampler seconds."""
    settings, processor = generate_kwargs(config, plain=plain)
    model.generate(**kwargs, **settings)
    if processor is not None:
        sampler_seconds.append(processor.summary()["sampler_seconds"])


HEADER = (f"{'arm':26s} {'B':>3s} {'tokens':>6s} {'median s':>9s} {'tokens/s':>9s} "
          f"{'vs plain':>8s} {'sampler%':>8s}")


def format_row(row: dict[str, Any]) -> str:
    share = row["sampler_share"]
    shown = f"{100 * share:7.1f}%" if share is not None else "       -"
    return (f"{row['arm']:26s} {row['batch']:3d} {row['new_tokens']:6d} {row['median_s']:9.2f} "
            f"{row['tokens_per_s']:9.2f} {row['ratio_vs_plain']:8.3f} {shown}")


def write_json(rows: list[dict[str, Any]], path: str | Path, **meta: Any) -> None:
    write_report(path, "generation tokens/s, plain sampling vs qsample", rows, **meta)
