"""Generation helpers: the ``custom_generate`` callable and a streaming text generator.

``custom_generate``: transformers 5.x accepts a callable that runs the decoding loop after
``generate`` has prepared inputs, cache, processors and stopping criteria; keyword arguments that
the callable declares beyond ``_sample``'s are routed to it. `qsample_generate` uses that for a
one-keyword API without re-implementing the loop::

    model.generate(**inputs, custom_generate=qsample_generate,
                   qsample={"mode": "gumbel", "backend": "neal", "top_k": 64, "seed": 0})

It drops transformers' sampling warpers (qsample applies its own temperature and truncation),
appends a `QSampleLogitsProcessor` and runs transformers' own ``_sample`` loop greedily over the
forced scores. Pass a `QSampleLogitsProcessor` instead of a dict to read its telemetry afterwards.
Limitation (transformers 5.19): ``generate`` does not forward ``streamer`` to a custom callable;
stream with ``logits_processor=[QSampleLogitsProcessor(...)]`` instead.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import torch
from transformers import GenerationMixin, LogitsProcessorList, TextStreamer
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopHLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from qsample import SamplerConfig

from .processor import QSampleLogitsProcessor

WARPERS = (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper,
           TopHLogitsWarper, TypicalLogitsWarper, EpsilonLogitsWarper, EtaLogitsWarper)


def qsample_generate(model, input_ids: torch.LongTensor, logits_processor: LogitsProcessorList,
                     stopping_criteria, generation_config, qsample: Any = None, **model_kwargs):
    """A ``custom_generate`` callable: transformers' sampling loop with qsample choosing tokens.

    ``qsample``: a `QSampleLogitsProcessor`, a `SamplerConfig`, or a mapping of its fields.
    """
    if (generation_config.num_beams or 1) > 1:
        raise ValueError("qsample_generate forces one token per row: num_beams must be 1")
    if isinstance(qsample, QSampleLogitsProcessor):
        processor = qsample
    elif isinstance(qsample, SamplerConfig):
        processor = QSampleLogitsProcessor(qsample)
    elif qsample is None or isinstance(qsample, Mapping):
        processor = QSampleLogitsProcessor(**dict(qsample or {}))
    else:
        raise TypeError("qsample= takes a QSampleLogitsProcessor, a SamplerConfig or a dict of "
                        f"SamplerConfig fields, not {type(qsample).__name__}")
    processors = LogitsProcessorList(
        p for p in logits_processor
        if not isinstance(p, (*WARPERS, QSampleLogitsProcessor))
    )
    processors.append(processor)
    config = copy.copy(generation_config)
    config.do_sample = False
    return GenerationMixin._sample(model, input_ids, logits_processor=processors,
                                   stopping_criteria=stopping_criteria, generation_config=config,
                                   **model_kwargs)


class _StreamTo(TextStreamer):
    """TextStreamer that writes to a given text stream."""

    def __init__(self, tokenizer, out: TextIO) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.out = out

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.out.write(text + ("\n" if stream_end else ""))
        self.out.flush()


@dataclass
class GenerationResult:
    """Text and token counts of one generation, its wall time and the processor (None for plain
    sampling)."""

    text: str
    new_tokens: int
    seconds: float
    processor: QSampleLogitsProcessor | None

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def encode_prompt(tokenizer, prompts: list[str], chat: bool, device) -> dict[str, torch.Tensor]:
    """Tokenise prompts (left padded), applying the chat template when ``chat``."""
    if chat:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    return tokenizer(prompts, return_tensors="pt", padding=True).to(device)


def generate_text(model, tokenizer, prompt: str, config: SamplerConfig, *, plain: bool = False,
                  max_new_tokens: int = 64, seed: int = 0, chat: bool = False,
                  stream: TextIO | None = None) -> GenerationResult:
    """Generate a continuation of ``prompt`` with qsample, or with ``plain=True`` with ordinary
    transformers sampling at the config's temperature / top-k / top-p / min-p and the same seed.
    Streams the text to ``stream`` as it is produced."""
    inputs = encode_prompt(tokenizer, [prompt], chat, model.device)
    streamer = _StreamTo(tokenizer, stream) if stream is not None else None
    common: dict[str, Any] = {"max_new_tokens": max_new_tokens, "streamer": streamer,
                              "pad_token_id": tokenizer.pad_token_id}
    processor = None
    if not plain:
        processor = QSampleLogitsProcessor(config.replace(seed=seed))
        kwargs = {"do_sample": False, "logits_processor": [processor],
                  "temperature": None, "top_k": None, "top_p": None, "min_p": None}
    else:
        torch.manual_seed(seed)
        kwargs = plain_sampling_settings(config)
    start = time.perf_counter()
    output = model.generate(**inputs, **common, **kwargs)
    seconds = time.perf_counter() - start
    new = output[0, inputs["input_ids"].shape[1]:]
    text = tokenizer.decode(new, skip_special_tokens=True)
    return GenerationResult(text, int(new.shape[0]), seconds, processor)


def plain_sampling_settings(config: SamplerConfig) -> dict[str, Any]:
    """transformers ``generate`` settings that sample the config's target distribution."""
    if config.temperature == 0:
        return {"do_sample": False, "temperature": None, "top_k": None, "top_p": None,
                "min_p": None}
    return {"do_sample": True, "temperature": config.temperature, "top_k": config.top_k,
            "top_p": config.top_p, "min_p": config.min_p or None}
