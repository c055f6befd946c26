"""The transformers engine of `qsample ab`: one continuation per call, any arm.

``plain`` arms sample with transformers' own warpers (temperature, top-k, top-p, min-p) under
``torch.manual_seed(seed)``; ``qsample`` arms force the token with `QSampleLogitsProcessor`
seeded with the same seed. Both ask ``generate`` for the raw logits of every step, from which
`qsample.evaluation.runner.score_steps` computes the fidelity data.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from qsample.evaluation.config import Arm
from qsample.evaluation.runner import score_steps

from .generation import encode_prompt, plain_sampling_settings
from .processor import QSampleLogitsProcessor


class TransformersEngine:
    def __init__(self, model, tokenizer, *, chat: bool = False) -> None:
        self.model, self.tokenizer, self.chat = model, tokenizer, chat

    def generate(self, prompt: str, arm: Arm, seed: int, max_new_tokens: int,
                 keep_steps: int = 0) -> dict[str, Any]:
        inputs = encode_prompt(self.tokenizer, [prompt], self.chat, self.model.device)
        common: dict[str, Any] = {"max_new_tokens": max_new_tokens, "output_logits": True,
                                  "return_dict_in_generate": True,
                                  "pad_token_id": self.tokenizer.pad_token_id}
        processor = None
        if arm.kind == "qsample":
            processor = QSampleLogitsProcessor(arm.config.replace(seed=seed))
            kwargs = {"do_sample": False, "logits_processor": [processor], "temperature": None,
                      "top_k": None, "top_p": None, "min_p": None}
        else:
            torch.manual_seed(seed)
            kwargs = plain_sampling_settings(arm.config)
        start = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**inputs, **common, **kwargs)
        seconds = time.perf_counter() - start
        new = out.sequences[0, inputs["input_ids"].shape[1]:]
        raw = torch.stack([step[0] for step in out.logits])[: new.shape[0]]
        record: dict[str, Any] = {
            "text": self.tokenizer.decode(new, skip_special_tokens=True),
            "token_ids": new.tolist(), "seconds": seconds,
            **score_steps(raw, new, arm, seed, keep_steps)}
        if processor is not None:
            summary = processor.summary(wall_seconds=seconds)
            timing = summary.get("backend_timing") or {}
            keep = ("energy", "valid_reads", "num_reads", "fallback", "fallback_reason",
                    "backend_seconds")
            record.update({"sampler_seconds": summary["sampler_seconds"],
                           "backend_seconds": summary["backend_seconds"],
                           "fallbacks": summary["fallbacks"],
                           "qpu_access_time_us": timing.get("qpu_access_time"),
                           "qpu_calls": timing.get("qpu_calls"),
                           "telemetry": [{k: r.get(k) for k in keep}
                                         for r in processor.telemetry.records()]})
        return record


    def features(self, texts: list[str], batch: int = 8) -> torch.Tensor:
        """Mean last-layer hidden state of each text under the model (MAUVE's embedding)."""
        rows = []
        for start in range(0, len(texts), batch):
            inputs = self.tokenizer(texts[start : start + batch], return_tensors="pt",
                                    padding=True, truncation=True, max_length=256)
            inputs = inputs.to(self.model.device)
            with torch.no_grad():
                hidden = self.model(**inputs, output_hidden_states=True).hidden_states[-1]
            mask = inputs["attention_mask"][..., None].to(hidden.dtype)
            rows.append(((hidden * mask).sum(1) / mask.sum(1)).float().cpu())
        return torch.cat(rows).numpy()


def arm_sampler(arm: Arm):
    """logits [N, V] -> token ids [N] by the arm's own mechanism, for exact TV estimates."""
    if arm.kind == "qsample":
        import warnings

        from qsample import QuantumSampler

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sampler = QuantumSampler(arm.config.replace(seed=12345), telemetry=False)
        return sampler.sample

    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    cfg = arm.config
    warpers = LogitsProcessorList([TemperatureLogitsWarper(cfg.temperature),
                                   TopKLogitsWarper(cfg.top_k)])
    if cfg.top_p < 1:
        warpers.append(TopPLogitsWarper(cfg.top_p))
    if cfg.min_p:
        warpers.append(MinPLogitsWarper(cfg.min_p))
    generator = torch.Generator().manual_seed(12345)

    def sample(logits: torch.Tensor) -> torch.Tensor:
        scores = warpers(None, logits.clone())
        return torch.multinomial(torch.softmax(scores, dim=1), 1, generator=generator)[:, 0]

    return sample
