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
multinomial per step that can only re-pick the forced token. ``num_return_sequences > 1`` is the
exception: transformers requires ``do_sample=True`` for it.

What a bare ``logits_processor=[QSampleLogitsProcessor(...)]`` cannot detect: transformers calls
a processor with ``(input_ids, scores)`` and nothing else, so it cannot tell which decoding loop
calls it. It therefore cannot refuse beam search (``num_beams > 1``: each beam is forced to one
token and beam search then ranks qsample's picks by likelihood instead of sampling), assisted or
speculative decoding (``assistant_model=``, ``prompt_lookup_num_tokens=``: the draft and the
verification steps each get an independently sampled token), or warn about ``do_sample=True``.
`check_generation_mode` refuses these from the generation config, which transformers gives to a
``custom_generate`` callable: `qsample.plugins.transformers.qsample_generate` runs it. (A
``custom_generate`` callable is not given ``assistant_model``, so there an assistant is ignored
and decoding stays qsample's one token per step.)

Joint sampling (``coupling`` > 0, `qsample.coupling`): the ``num_return_sequences = n`` rows
of each prompt are siblings (transformers puts them next to each other: rows p n .. p n + n - 1),
drawn as one coupled problem per step; with ``coupling_scope="prefix"`` only rows whose
``input_ids`` are identical so far stay coupled. A bare processor is told n
(``QSampleLogitsProcessor(coupling="distinct", num_return_sequences=4)``); `qsample_generate`
takes it from the generation config.

Example:
    >>> from qsample.plugins.transformers import QSampleLogitsProcessor
    >>> qs = QSampleLogitsProcessor(mode="gumbel", backend="batched-sa", top_k=64, seed=0)
    >>> out = model.generate(**inputs, logits_processor=[qs], do_sample=False, max_new_tokens=32)
    >>> qs.telemetry.write_jsonl("trace.jsonl"); qs.summary()
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor
from transformers.generation import GenerationMode

from qsample import ConfigError, QuantumSampler, SamplerConfig
from qsample.coupling import prefix_ids, split_by_prefix
from qsample.telemetry import TelemetryLog

#: The decoding modes that emit one forced token per row per step (transformers' ``_sample``).
ONE_TOKEN_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)


def check_generation_mode(generation_config: GenerationConfig) -> None:
    """Raise ``ValueError`` unless the config decodes greedily or by sampling, one token per row
    per step: beam search, assisted / prompt-lookup decoding, contrastive search, DoLa and
    constrained or group beam search would corrupt (or be corrupted by) the forced tokens."""
    mode = generation_config.get_generation_mode()
    if mode not in ONE_TOKEN_MODES:
        raise ValueError(
            f"qsample forces one token per row and cannot run {mode.value.replace('_', ' ')}; "
            "use num_beams=1, no prompt lookup and no assistant")


class QSampleLogitsProcessor(LogitsProcessor):
    """Force each row's next token to the one qsample samples.

    Args:
        config: a `SamplerConfig`; keyword arguments override its fields (or build one alone:
            ``QSampleLogitsProcessor(backend="batched-sa", top_k=32)``).
        max_telemetry_steps: keep at most this many steps of telemetry (None: all).
        num_return_sequences: the n of ``generate``'s ``num_return_sequences``: with a
            ``coupling`` > 0 each prompt's n rows are coupled siblings (required then).

    Attributes:
        sampler: the core `QuantumSampler`.
        telemetry: its `TelemetryLog` (per step, per row records; ``write_jsonl``, ``summary``).
    """

    def __init__(self, config: SamplerConfig | None = None, *,
                 max_telemetry_steps: int | None = None,
                 num_return_sequences: int | None = None, **fields: Any) -> None:
        if config is None:
            config = SamplerConfig.from_dict(fields)
        elif fields:
            config = config.replace(**fields)
        self.config = config
        self.num_return_sequences = num_return_sequences
        self._check_siblings()
        self.sampler = QuantumSampler(config, max_telemetry_steps=max_telemetry_steps)

    def _check_siblings(self) -> None:
        n = self.num_return_sequences
        if (n is None and self.config.coupling > 0) or (
                n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1)):
            raise ConfigError("num_return_sequences", n,
                              "generate's num_return_sequences, an integer >= 1 (required with "
                              "coupling > 0: each prompt's rows are coupled)")

    def groups(self, input_ids: torch.LongTensor) -> np.ndarray | None:
        """Sibling group per row, rows p n .. p n + n - 1 together (split by identical
        ``input_ids`` with ``coupling_scope="prefix"``), or None when nothing is coupled."""
        n = self.num_return_sequences
        if self.config.coupling == 0 or n == 1:
            return None
        batch = input_ids.shape[0]
        if batch % n:
            raise ValueError(f"{batch} rows are not prompts of num_return_sequences = {n} rows "
                             "each: pass generate's num_return_sequences to the processor")
        groups = np.arange(batch) // n
        if self.config.coupling_scope == "prefix":
            groups = split_by_prefix(groups, prefix_ids(input_ids))
        return groups

    @property
    def telemetry(self) -> TelemetryLog:
        return self.sampler.telemetry

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        tokens = self.sampler.sample(scores, groups=self.groups(input_ids))
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, tokens[:, None], 0.0)
        return forced

    def summary(self, wall_seconds: float | None = None) -> dict[str, Any]:
        """Tokens, fallbacks, sampler seconds, the sampler's one-time ``warmup_seconds`` (not
        part of the sampler seconds) and, given the generation's wall time, the sampler's share
        of it."""
        summary = self.telemetry.summary()
        summary["warmup_seconds"] = self.sampler.warmup_seconds
        if wall_seconds:
            summary["wall_seconds"] = wall_seconds
            summary["sampler_share"] = summary["sampler_seconds"] / wall_seconds
        return summary
