"""The transformers engine of `qsample ab`: one group of ``arm.n`` continuations per call.

One ``model.generate`` call with ``num_return_sequences = arm.n`` per group, any arm (both
through `generate_group`): ``plain`` arms sample with transformers' own warpers (temperature,
top-k, top-p, min-p) under ``torch.manual_seed(seed)``; ``qsample`` arms force the tokens with
`QSampleLogitsProcessor` seeded with the same seed, which couples the n rows of the prompt as the
arm's ``coupling`` says. Each generation keeps the model's raw logits of every step, which
the runner scores (`qsample.evaluation.runner.score_steps`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from qsample import SamplerConfig
from qsample.evaluation.config import Arm
from qsample.evaluation.engine import RESAMPLE_SEED, Generation, Resampler, qsample_resampler

from .generation import generate_group
from .processor import QSampleLogitsProcessor

#: Per-step telemetry fields a qsample arm's record keeps (``group``: the sibling group the row
#: was drawn jointly with, -1 for none).
TELEMETRY_FIELDS = ("energy", "valid_reads", "num_reads", "fallback", "fallback_reason",
                    "backend_seconds", "group")
#: Texts per forward pass of `TransformersEngine.features` (default), and the tokens kept of each.
FEATURE_BATCH = 8
FEATURE_MAX_TOKENS = 256


class TransformersEngine:
    """`qsample.evaluation.engine.Engine` on a transformers causal LM and its tokenizer."""

    def __init__(self, model, tokenizer, *, chat: bool = False) -> None:
        self.model, self.tokenizer, self.chat = model, tokenizer, chat

    def generate(self, prompt: str, arm: Arm, seed: int, max_new_tokens: int
                 ) -> list[Generation]:
        """``arm.n`` continuations from one ``generate`` call (`generate_group`); each gets 1/n
        of the group's time."""
        group = generate_group(self.model, self.tokenizer, prompt, arm.config, n=arm.n,
                               plain=arm.kind == "plain", max_new_tokens=max_new_tokens,
                               seed=seed, chat=self.chat, raw_logits=True)
        seconds = group[0].seconds / arm.n
        return [Generation(result.text, result.token_ids, seconds, result.logits,
                           record=_cost(result.processor, row, result.new_tokens, arm.n,
                                        seconds))
                for row, result in enumerate(group)]

    def resampler(self, arm: Arm) -> Resampler:
        """The arm's mechanism in this engine: qsample's sampler, or transformers' warpers."""
        return qsample_resampler(arm) if arm.kind == "qsample" else plain_resampler(arm.config)

    def features(self, texts: list[str], batch: int = FEATURE_BATCH) -> np.ndarray:
        """Mean last-layer hidden state of each text under the model (MAUVE's embedding)."""
        rows = []
        for start in range(0, len(texts), batch):
            inputs = self.tokenizer(texts[start : start + batch], return_tensors="pt",
                                    padding=True, truncation=True, max_length=FEATURE_MAX_TOKENS)
            inputs = inputs.to(self.model.device)
            with torch.no_grad():
                hidden = self.model(**inputs, output_hidden_states=True).hidden_states[-1]
            mask = inputs["attention_mask"][..., None].to(hidden.dtype)
            rows.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu())
        return torch.cat(rows).numpy()


def _cost(processor: QSampleLogitsProcessor | None, row: int, length: int, n: int,
          seconds: float) -> dict[str, Any]:
    """A qsample arm's sampler time, backend time, QPU use (each the group's total / n, as the
    sampler draws the group's rows together), and row ``row``'s fallbacks and telemetry over its
    ``length`` steps."""
    if processor is None:
        return {}
    summary = processor.summary(wall_seconds=seconds * n)
    timing = summary.get("backend_timing") or {}
    steps = [r for r in processor.telemetry.records() if r["row"] == row and r["step"] < length]
    qpu_time, qpu_calls = timing.get("qpu_access_time"), timing.get("qpu_calls")
    return {"sampler_seconds": summary["sampler_seconds"] / n,
            "backend_seconds": summary["backend_seconds"] / n,
            "fallbacks": sum(1 for r in steps if r["fallback"] is not None),
            "qpu_access_time_us": qpu_time / n if qpu_time else qpu_time,
            "qpu_calls": qpu_calls / n if qpu_calls else qpu_calls,
            "telemetry": [{k: r.get(k) for k in TELEMETRY_FIELDS} for r in steps]}


def plain_resampler(config: SamplerConfig) -> Resampler:
    """transformers' sampling at the config's settings: its warpers in ``generate``'s order
    (temperature, top-k, top-p, min-p), then one multinomial draw per row."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(config.temperature),
                                   TopKLogitsWarper(config.top_k)])
    if config.top_p < 1:
        warpers.append(TopPLogitsWarper(config.top_p))
    if config.min_p:
        warpers.append(MinPLogitsWarper(config.min_p))
    generator = torch.Generator().manual_seed(RESAMPLE_SEED)

    def sample(logits: torch.Tensor) -> torch.Tensor:
        scores = warpers(None, logits.clone())
        return torch.multinomial(torch.softmax(scores, dim=1), 1, generator=generator)[:, 0]

    return sample
