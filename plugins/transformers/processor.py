"""`QSampleLogitsProcessor`: annealer sampling inside ``model.generate``.

Each step it samples the next token of every row with the core `qsample.QuantumSampler` and
returns scores that are -inf everywhere except the chosen token (0 there), so both greedy and
sampling decoding emit exactly that token.

Composition with transformers' own settings (transformers 5.x): the sampling "warpers"
(temperature, top-k, top-p, min-p, typical, epsilon, eta) are appended *after* user processors,
so they never reach qsample and cannot change a forced row; the processors that run before it
(repetition penalty, bad words, min length, ...) shape the scores qsample samples from, as they
would for ordinary sampling. qsample applies its own temperature / top-k / top-p / min-p. Use
``do_sample=False``: with ``do_sample=True`` transformers adds a full-vocabulary softmax and
multinomial per step that can only re-pick the forced token (a warning says so once).
``num_return_sequences > 1`` is the exception: transformers requires ``do_sample=True`` for it.

Example:
    >>> from qsample.plugins.transformers import QSampleLogitsProcessor
    >>> qs = QSampleLogitsProcessor(mode="gumbel", backend="batched-sa", top_k=64, seed=0)
    >>> out = model.generate(**inputs, logits_processor=[qs], do_sample=False, max_new_tokens=32)
    >>> qs.telemetry.write_jsonl("trace.jsonl"); qs.summary()
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any

import torch
from transformers import LogitsProcessor

from qsample import QuantumSampler, SamplerConfig
from qsample.telemetry import TelemetryLog

#: Decoding loops in which forcing one token per row is wrong.
UNSUPPORTED_LOOPS = {
    "_beam_search": "beam search (num_beams > 1)",
    "_assisted_decoding": "assisted / speculative decoding",
    "_group_beam_search": "group beam search",
    "_constrained_beam_search": "constrained beam search",
}


class QSampleLogitsProcessor(LogitsProcessor):
    """Force each row's next token to the one qsample samples.

    Args:
        config: a `SamplerConfig`; keyword arguments override its fields (or build one alone:
            ``QSampleLogitsProcessor(backend="batched-sa", top_k=32)``).
        max_telemetry_steps: keep at most this many steps of telemetry (None: all).

    Attributes:
        sampler: the core `QuantumSampler`.
        telemetry: its `TelemetryLog` (per step, per row records; ``write_jsonl``, ``summary``).
    """

    def __init__(self, config: SamplerConfig | None = None, *,
                 max_telemetry_steps: int | None = None, **fields: Any) -> None:
        if config is None:
            config = SamplerConfig.from_dict(fields)
        elif fields:
            config = config.replace(**fields)
        self.config = config
        self.sampler = QuantumSampler(config, max_telemetry_steps=max_telemetry_steps)
        self._warned_do_sample = False
        self._first_call: float | None = None
        self._last_call: float | None = None

    @property
    def telemetry(self) -> TelemetryLog:
        return self.sampler.telemetry

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._check_decoding_loop()
        now = time.perf_counter()
        if self._first_call is None:
            self._first_call = now
        tokens = self.sampler.sample(scores)
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, tokens[:, None], 0.0)
        self._last_call = time.perf_counter()
        return forced

    def summary(self, wall_seconds: float | None = None) -> dict[str, Any]:
        """Tokens, fallbacks, sampler seconds and, given the generation's wall time, the
        sampler's share of it."""
        summary = self.telemetry.summary()
        if wall_seconds:
            summary["wall_seconds"] = wall_seconds
            summary["sampler_share"] = summary["sampler_seconds"] / wall_seconds
        return summary

    def _check_decoding_loop(self) -> None:
        """Refuse decoding loops where forcing one token per row corrupts the search, and warn
        once about ``do_sample=True``. transformers gives a processor no view of the generation
        mode, so this looks at the calling frames (a cheap walk of a few frames)."""
        frame = sys._getframe(2)
        for _ in range(6):
            if frame is None:
                return
            name = frame.f_code.co_name
            if name in UNSUPPORTED_LOOPS:
                raise ValueError(
                    f"QSampleLogitsProcessor forces one token per row and cannot be used with "
                    f"{UNSUPPORTED_LOOPS[name]}; use num_beams=1 and no assistant model")
            if name == "_sample":
                config = frame.f_locals.get("generation_config")
                # transformers requires do_sample=True for num_return_sequences > 1
                if (config is not None and getattr(config, "do_sample", False)
                        and (getattr(config, "num_return_sequences", 1) or 1) == 1
                        and not self._warned_do_sample):
                    self._warned_do_sample = True
                    warnings.warn(
                        "generate(do_sample=True) with QSampleLogitsProcessor: transformers' "
                        "temperature/top-k/top-p run after qsample and cannot change its token, "
                        "but cost a full-vocabulary softmax and multinomial per step; pass "
                        "do_sample=False (qsample applies its own temperature and truncation)",
                        stacklevel=4,
                    )
                return
            frame = frame.f_back
