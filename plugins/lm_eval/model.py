"""``qsample-hf``: lm-evaluation-harness's ``hf`` model with every generated token sampled by
qsample.

`QSampleHFLM` is lm-eval's `HFLM` whose ``generate`` runs `qsample_generate` (transformers'
sampling loop, its warpers dropped, qsample's `QSampleLogitsProcessor` choosing each token), so
the target is qsample's settings whatever the task's ``do_sample`` / ``temperature`` say
(lm-eval turns a task greedy unless ``do_sample=True``; over qsample's forced scores greedy and
sampling pick the same token). Log-likelihood tasks are lm-eval's own: nothing is sampled there.

qsample's settings come in ``--model_args`` with a ``qsample_`` prefix (any `SamplerConfig`
field), ``qsample_telemetry=PATH`` writes one JSON line per generated sample (task, doc_id,
sampler seconds, fallbacks) beside lm-eval's ``--log_samples`` output::

    --model qsample-hf --model_args pretrained=DIR,qsample_mode=gumbel,qsample_top_k=64,\
qsample_temperature=0.8,qsample_seed=0,qsample_telemetry=out/qsample.jsonl

lm-eval 0.4.13 discovers no model classes from entry points: importing this module registers
``qsample-hf`` (``python -m qsample.plugins.lm_eval`` does it before lm-eval's own CLI).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from qsample import SamplerConfig
from qsample.plugins.transformers.generation import qsample_generate
from qsample.plugins.transformers.processor import QSampleLogitsProcessor

PREFIX = "qsample_"  # --model_args keys that are qsample's
KEY_TOKENS = 64  # a request is matched to its row by its last context tokens (left truncation)


@register_model("qsample-hf")
class QSampleHFLM(HFLM):
    """`HFLM` generating with qsample (module docstring).

    Args:
        qsample_telemetry: JSONL path for the per-sample telemetry (appended), or None.
        qsample_*: `SamplerConfig` fields; the rest goes to `HFLM` (``device`` defaults to
            the CPU where CUDA is not available, not to HFLM's "cuda").

    Attributes:
        processor: the `QSampleLogitsProcessor` of every generation call.
        sample_telemetry: one dict per generated sample, in the order of lm-eval's requests.
    """

    def __init__(self, *args: Any, qsample_telemetry: str | None = None, **kwargs: Any) -> None:
        fields = {key[len(PREFIX):]: kwargs.pop(key) for key in list(kwargs)
                  if key.startswith(PREFIX)}
        config = SamplerConfig.from_dict(fields)  # a bad field raises ConfigError naming it
        if kwargs.get("device") is None:
            kwargs["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        super().__init__(*args, **kwargs)
        self.processor = QSampleLogitsProcessor(config)
        self.telemetry_path = Path(qsample_telemetry) if qsample_telemetry else None
        self.sample_telemetry: list[dict[str, Any]] = []
        self._rows: dict[tuple[int, ...], list[dict[str, Any]]] = defaultdict(list)

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str],
                        **generation_kwargs: Any) -> torch.Tensor:
        """lm-eval's generation with `qsample_generate`; each row's telemetry kept by its
        context (`_row_key`)."""
        telemetry = self.processor.telemetry
        telemetry.clear()
        out = super()._model_generate(context, max_length, stop,
                                      custom_generate=qsample_generate, qsample=self.processor,
                                      **generation_kwargs)
        steps = telemetry.steps
        for row, tokens in enumerate(context.tolist()):
            self._rows[self._row_key(tokens)].append({
                "tokens": len(steps),
                "fallbacks": sum(int(step.fallback_kind[row] != 0) for step in steps),
                "sampler_seconds": sum(step.sampler_seconds / step.batch_size for step in steps),
                "batch_size": context.shape[0],
            })
        telemetry.clear()
        return out

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """lm-eval's ``generate_until``; then each request's telemetry, in request order."""
        out = super().generate_until(requests, disable_tqdm)
        records = []
        for request in requests:
            rows = self._rows.get(self._row_key(self.tok_encode(request.args[0])))
            records.append({"task": request.task_name, "doc_id": request.doc_id,
                            "repeat": request.repeats, "qsample": rows.pop(0) if rows else None})
        self._rows.clear()
        self.sample_telemetry.extend(records)
        if self.telemetry_path is not None:
            self.telemetry_path.parent.mkdir(parents=True, exist_ok=True)
            with self.telemetry_path.open("a", encoding="utf-8") as sink:
                sink.writelines(json.dumps(record) + "\n" for record in records)
        return out

    def _row_key(self, tokens: list[int]) -> tuple[int, ...]:
        """The last `KEY_TOKENS` context tokens after the left padding: the same for a request's
        own encoding and its (padded, maybe left-truncated) row."""
        pad = self.tokenizer.pad_token_id
        start = 0
        while start < len(tokens) and tokens[start] == pad:
            start += 1
        return tuple(tokens[start:][-KEY_TOKENS:])
