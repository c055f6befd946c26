"""Generation throughput: plain transformers sampling against qsample, in one run.

Each arm generates exactly ``new_tokens`` tokens per row (EOS suppressed with
``min_new_tokens``) from the same prompts at the same settings; the table reports the median
tokens/s over repeats and the ratio qsample / plain (1.0 = the sampler costs nothing).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from qsample import SamplerConfig
from qsample.tools.bench import write_report

from .generation import encode_prompt, plain_sampling_settings
from .processor import QSampleLogitsProcessor

PROMPTS = [
    "Once upon a time, in a village by the sea,",
    "The old lighthouse keeper had a secret:",
    "When the train stopped in the middle of the desert,",
    "My grandmother always said that the best soup",
    "The robot looked at the painting for a long time and",
    "On the first day of school, Maya found a note",
    "The storm had knocked out the power, so we",
    "Deep in the forest there was a door that",
]


def run_generation_bench(model, tokenizer, *, batches: Sequence[int] = (1, 8),
                         combos: Sequence[tuple[str, str]] = (
                             ("gumbel", "batched-sa"), ("boltzmann", "batched-sa"),
                             ("gumbel", "neal"), ("boltzmann", "neal")),
                         new_tokens: int = 64, repeats: int = 3, top_k: int = 64,
                         temperature: float = 0.8, log: Callable[[str], None] = print
                         ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for batch in batches:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        inputs = encode_prompt(tokenizer, prompts, chat=False, device=model.device)
        common = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens,
                  "pad_token_id": tokenizer.pad_token_id}
        base = SamplerConfig(top_k=top_k, temperature=temperature, seed=0)
        arms: list[tuple[str, Callable[[], Any]]] = [
            ("plain", partial(_plain, model, inputs, common, base))]
        for mode, backend in combos:
            config = base.replace(mode=mode, backend=backend)
            arms.append((f"qsample {mode}/{backend}",
                         partial(_qsample, model, inputs, common, config)))
        plain_tps = None
        for name, arm in arms:
            torch.manual_seed(0)
            arm()  # warm-up
            times, shares = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                processor = arm()
                seconds = time.perf_counter() - start
                times.append(seconds)
                if isinstance(processor, QSampleLogitsProcessor):
                    shares.append(processor.summary(wall_seconds=seconds)["sampler_share"])
            median = statistics.median(times)
            tps = batch * new_tokens / median
            plain_tps = tps if name == "plain" else plain_tps
            row = {"arm": name, "batch": batch, "new_tokens": new_tokens, "median_s": median,
                   "tokens_per_s": tps, "ratio_vs_plain": tps / plain_tps,
                   "sampler_share": statistics.median(shares) if shares else None,
                   "repeats": repeats}
            rows.append(row)
            log(format_row(row))
    return rows


def _plain(model, inputs, common, config: SamplerConfig) -> None:
    model.generate(**inputs, **common, **plain_sampling_settings(config))


def _qsample(model, inputs, common, config: SamplerConfig) -> QSampleLogitsProcessor:
    processor = QSampleLogitsProcessor(config)
    model.generate(**inputs, **common, logits_processor=[processor], do_sample=False,
                   temperature=None, top_k=None, top_p=None, min_p=None)
    return processor


HEADER = (f"{'arm':26s} {'B':>3s} {'tokens':>6s} {'median s':>9s} {'tokens/s':>9s} "
          f"{'vs plain':>8s} {'sampler%':>8s}")


def format_row(row: dict[str, Any]) -> str:
    share = row["sampler_share"]
    shown = f"{100 * share:7.1f}%" if share is not None else "       -"
    return (f"{row['arm']:26s} {row['batch']:3d} {row['new_tokens']:6d} {row['median_s']:9.2f} "
            f"{row['tokens_per_s']:9.2f} {row['ratio_vs_plain']:8.3f} {shown}")


def write_json(rows: list[dict[str, Any]], path: str | Path, **meta: Any) -> None:
    write_report(path, "generation tokens/s, plain sampling vs qsample", rows, **meta)
