"""Generation helpers: the ``custom_generate`` callable, the ``generate`` keyword set of an arm
(`generate_kwargs`) and a streaming text generator.

``custom_generate``: transformers 5.x accepts a callable that runs the decoding loop after
``generate`` has prepared inputs, cache, processors and stopping criteria; keyword arguments that
the callable declares beyond ``_sample``'s are routed to it. `qsample_generate` uses that for a
one-keyword API without re-implementing the loop::

    model.generate(**inputs, custom_generate=qsample_generate,
                   qsample={"mode": "gumbel", "backend": "neal", "top_k": 64, "seed": 0})

It drops transformers' sampling warpers (qsample applies its own temperature and truncation),
appends a `QSampleLogitsProcessor` and runs transformers' own ``_sample`` loop greedily over the
forced scores. Pass a `QSampleLogitsProcessor` instead of a dict to read its telemetry afterwards.
Unlike a bare processor it sees the generation config, so it refuses beam search and assisted
decoding (`check_generation_mode`). Limitation (transformers 5.19): ``generate`` does not forward
``streamer`` or ``assistant_model`` to a custom callable (an assistant is ignored); stream with
``logits_processor=[QSampleLogitsProcessor(...)]`` instead.
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

from .processor import QSampleLogitsProcessor, check_generation_mode

#: ``generate`` settings that switch transformers' own sampling off: greedy, no warpers.
_NO_SAMPLING = {"do_sample": False, "temperature": None, "top_k": None, "top_p": None,
                "min_p": None}
#: transformers' sampling warpers, which `qsample_generate` drops (qsample applies its own).
WARPERS = (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper,
           TopHLogitsWarper, TypicalLogitsWarper, EpsilonLogitsWarper, EtaLogitsWarper)


def qsample_generate(model, input_ids: torch.LongTensor, logits_processor: LogitsProcessorList,
                     stopping_criteria, generation_config, qsample: Any = None, **model_kwargs):
    """A ``custom_generate`` callable: transformers' sampling loop with qsample choosing tokens.

    ``qsample``: a `QSampleLogitsProcessor`, a `SamplerConfig`, or a mapping of its fields.
    Each prompt's ``num_return_sequences`` rows are its siblings (coupled with a ``coupling``).
    Beam search, assisted decoding and the other modes that do not emit one token per row per
    step are refused (`check_generation_mode`).
    """
    check_generation_mode(generation_config)
    siblings = generation_config.num_return_sequences or 1
    if isinstance(qsample, QSampleLogitsProcessor):
        processor = qsample
        processor.num_return_sequences = processor.num_return_sequences or siblings
    elif isinstance(qsample, SamplerConfig):
        processor = QSampleLogitsProcessor(qsample, num_return_sequences=siblings)
    elif qsample is None or isinstance(qsample, Mapping):
        processor = QSampleLogitsProcessor(**dict(qsample or {}), num_return_sequences=siblings)
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


def generate_kwargs(config: SamplerConfig, *, plain: bool = False, num_return_sequences: int = 1
                    ) -> tuple[dict[str, Any], QSampleLogitsProcessor | None]:
    """``model.generate`` keyword arguments that sample ``config``'s target, and the processor.

    qsample (default): a fresh `QSampleLogitsProcessor` at ``config`` chooses every token and
    decoding is greedy over its forced scores, transformers' warpers off. ``plain``: transformers'
    own sampling at the config's temperature / top-k / top-p / min-p (greedy at T = 0; seed it
    with ``torch.manual_seed``), and no processor. ``num_return_sequences`` n > 1: n rows per
    prompt (coupled by the config's ``coupling``); transformers then needs ``do_sample=True``,
    whose draw over the forced scores can only re-pick qsample's token.
    """
    n = {"num_return_sequences": num_return_sequences} if num_return_sequences > 1 else {}
    if not plain:
        processor = QSampleLogitsProcessor(config, num_return_sequences=num_return_sequences)
        return {**_NO_SAMPLING, **n, "logits_processor": [processor],
                "do_sample": bool(n)}, processor
    if config.temperature == 0:
        return {**_NO_SAMPLING, **n}, None
    return {"do_sample": True, "temperature": config.temperature, "top_k": config.top_k,
            "top_p": config.top_p, "min_p": config.min_p or None, **n}, None


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
    """One continuation: its text and new token ids, its wall time, the processor (None for plain
    sampling) and, when asked for, the model's raw logits of each step [T, V]."""

    text: str
    token_ids: list[int]
    seconds: float
    processor: QSampleLogitsProcessor | None
    logits: torch.Tensor | None = None

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def encode_prompt(tokenizer, prompts: list[str], chat: bool, device) -> dict[str, torch.Tensor]:
    """Tokenise prompts (left padded), applying the chat template when ``chat``."""
    if chat:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    return tokenizer(prompts, return_tensors="pt", padding=True).to(device)


def generate_group(model, tokenizer, prompt: str, config: SamplerConfig, *, n: int = 1,
                   plain: bool = False, max_new_tokens: int = 64, seed: int = 0,
                   chat: bool = False, stream: TextIO | None = None, raw_logits: bool = False
                   ) -> list[GenerationResult]:
    """``n`` continuations of ``prompt`` from one ``generate`` call (``num_return_sequences``;
    qsample couples them by the config's ``coupling``). With ``plain=True``, ordinary transformers
    sampling at the config's temperature / top-k / top-p / min-p and the same seed
    (`generate_kwargs`); ``stream`` receives the text as it is produced; ``raw_logits`` keeps the
    model's logits of each step in the results. Each row ends at
    its first end-of-sequence token (later steps are padding); all share the call's wall time
    and processor. Streaming needs n = 1."""
    if stream is not None and n > 1:
        raise ValueError("streaming shows one continuation: use n = 1 with a stream")
    inputs = encode_prompt(tokenizer, [prompt], chat, model.device)
    streamer = _StreamTo(tokenizer, stream) if stream is not None else None
    kwargs, processor = generate_kwargs(config.replace(seed=seed), plain=plain,
                                        num_return_sequences=n)
    if plain:
        torch.manual_seed(seed)
    start = time.perf_counter()
    output = model.generate(**inputs, **kwargs, max_new_tokens=max_new_tokens, streamer=streamer,
                            pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True,
                            output_logits=raw_logits)
    seconds = time.perf_counter() - start
    stop = model.generation_config.eos_token_id
    stop = set(stop if isinstance(stop, list) else [] if stop is None else [stop])
    results = []
    for row, new in enumerate(output.sequences[:, inputs["input_ids"].shape[1]:].tolist()):
        length = next((t + 1 for t, token in enumerate(new) if token in stop), len(new))
        logits = (torch.stack([step[row] for step in output.logits[:length]])
                  if raw_logits else None)
        results.append(GenerationResult(tokenizer.decode(new[:length], skip_special_tokens=True),
                                        new[:length], seconds, processor, logits))
    return results
