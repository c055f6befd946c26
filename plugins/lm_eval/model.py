"""``qsample-hf``: lm-evaluation-harness's ``hf`` model with every generated token sampled by
qsample.

`QSampleHFLM` is lm-eval's `HFLM` whose ``generate`` runs `qsample_generate` (transformers'
sampling loop, its warpers dropped, qsample's `QSampleLogitsProcessor` choosing each token), so
the target is qsample's settings whatever the task's ``do_sample`` / ``temperature`` say
(lm-eval turns a task greedy unless ``do_sample=True``; over qsample's forced scores greedy and
sampling pick the same token). Log-likelihood tasks are lm-eval's own: nothing is sampled there.

qsample's settings come in ``--model_args`` with a ``qsample_`` prefix (every `SamplerConfig`
field), ``qsample_telemetry=PATH`` writes one JSON line per generated sample (task, doc_id,
sampler seconds, fallbacks, coupled steps) beside lm-eval's ``--log_samples`` output::

    --model qsample-hf --model_args pretrained=DIR,qsample_mode=gumbel,qsample_top_k=64,\
qsample_temperature=0.8,qsample_seed=0,qsample_telemetry=out/qsample.jsonl \
'qsample_backend_params={"order": "random"}'

Numbers may arrive as lm-eval's numbers or as strings (``SamplerConfig`` converts them).
``qsample_backend_params`` is a JSON object (lm-eval's command line hands it over as a dict, or
as its JSON text where the text is no Python literal, e.g. with ``true``): on lm-eval 0.4.13's
command line a ``{`` in the first ``--model_args`` word is refused as invalid JSON, so give it as
a later word of its own, single-quoted as above (or the whole ``--model_args`` as one JSON
object). `QSampleHFLM.create_from_arg_string` (``simple_evaluate(model_args="...")``) splits only
at commas outside brackets, braces and quotes, so ``qsample_backend_params={"a":1,"b":2}`` and
``qsample_beta_range=[0.1,10]`` work in a Python string too.

``qsample_coupling`` (``"distinct"``, or a number > 0 in mode ``boltzmann``) couples the
repeats of one document: lm-eval hands a task's ``repeats: n`` to ``generate_until`` as n copies
of the document's request, and with a coupling each document's copies are generated in one
batch as sibling rows (with ``qsample_coupling_scope=prefix``, the default, only while their
generated texts are identical). A document with one repeat is coupled to nothing; with
``"distinct"`` a document's repeats number at most ``qsample_top_k``.

lm-eval 0.4.13 discovers no model classes from entry points: importing this module registers
``qsample-hf`` (``python -m qsample.plugins.lm_eval`` does it before lm-eval's own CLI).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.utils import handle_arg_string
from tqdm import tqdm

from qsample import ConfigError, SamplerConfig
from qsample.coupling import number_groups, prefix_ids, split_by_prefix
from qsample.plugins.transformers.generation import qsample_generate
from qsample.plugins.transformers.processor import QSampleLogitsProcessor

PREFIX = "qsample_"  # --model_args keys that are qsample's
KEY_TOKENS = 64  # a request is matched to its row by its last context tokens (left truncation)
BACKEND_PARAMS = "backend_params"
BACKEND_PARAMS_ALLOWED = (
    "a JSON object of the backend's keyword arguments, e.g. {\"order\": \"random\"} (on "
    "lm-eval's command line a --model_args word of its own, single-quoted: "
    "'qsample_backend_params={\"order\": \"random\"}')")
OPENING, CLOSING, QUOTES = "[({", "])}", "\"'"


def sampler_config(fields: Mapping[str, Any]) -> SamplerConfig:
    """The `SamplerConfig` of the ``qsample_*`` model arguments (``fields``: prefix removed), as
    lm-eval delivers them: numbers as numbers or strings, ``backend_params`` as a mapping or its
    JSON text.

    Raises:
        ConfigError: naming the field, for an unknown field or a value `SamplerConfig` refuses;
            ``backend_params`` that is neither a mapping nor a JSON object.
    """
    fields = dict(fields)
    params = fields.get(BACKEND_PARAMS)
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except json.JSONDecodeError:
            raise ConfigError(BACKEND_PARAMS, fields[BACKEND_PARAMS],
                              BACKEND_PARAMS_ALLOWED) from None
        if not isinstance(params, dict):
            raise ConfigError(BACKEND_PARAMS, fields[BACKEND_PARAMS], BACKEND_PARAMS_ALLOWED)
        fields[BACKEND_PARAMS] = params
    return SamplerConfig.from_dict(fields)


def split_model_args(text: str) -> dict[str, Any]:
    """``key=value,...`` as lm-eval's `simple_parse_args_string` reads it (values typed by its
    `handle_arg_string`), but split only at commas outside brackets, braces and quotes."""
    parts, part, depth, quote = [], [], 0, None
    for char in text.strip():
        if quote is not None:
            quote = None if char == quote else quote
        elif char in QUOTES:
            quote = char
        elif char in OPENING:
            depth += 1
        elif char in CLOSING:
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            parts.append("".join(part))
            part = []
            continue
        part.append(char)
    parts.append("".join(part))
    pairs = (item.partition("=") for item in parts if item)
    return {key: handle_arg_string(value) for key, _, value in pairs}


class RepeatsProcessor(QSampleLogitsProcessor):
    """`QSampleLogitsProcessor` whose siblings are the rows of one ``generate`` call that start
    from one context (a document's lm-eval repeats, `QSampleHFLM.generate_until`).

    Attributes:
        contexts: per row, an id equal exactly where the rows' contexts are (set for each call;
            None: nothing coupled).
    """

    contexts: np.ndarray | None = None

    def groups(self, input_ids: torch.LongTensor) -> np.ndarray | None:
        """Rows of one context together (split by identical ``input_ids`` with
        ``coupling_scope="prefix"``), or None when nothing is coupled."""
        if self.config.coupling == 0 or self.contexts is None:
            return None
        groups = number_groups(self.contexts)
        if self.config.coupling_scope == "prefix":
            groups = split_by_prefix(groups, prefix_ids(input_ids))
        return groups


@register_model("qsample-hf")
class QSampleHFLM(HFLM):
    """`HFLM` generating with qsample (module docstring).

    Args:
        qsample_telemetry: JSONL path for the per-sample telemetry (appended), or None.
        qsample_*: `SamplerConfig` fields (`sampler_config`); the rest goes to `HFLM`
            (``device`` defaults to the CPU where CUDA is not available, not to HFLM's "cuda").

    Attributes:
        processor: the `RepeatsProcessor` of every generation call.
        sample_telemetry: one dict per generated sample, in the order of lm-eval's requests.
    """

    def __init__(self, *args: Any, qsample_telemetry: str | None = None, **kwargs: Any) -> None:
        fields = {key[len(PREFIX):]: kwargs.pop(key) for key in list(kwargs)
                  if key.startswith(PREFIX)}
        # a bad field raises ConfigError naming it, before the model loads
        self.processor = RepeatsProcessor(sampler_config(fields), num_return_sequences=1)
        if kwargs.get("device") is None:
            kwargs["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        super().__init__(*args, **kwargs)
        self.telemetry_path = Path(qsample_telemetry) if qsample_telemetry else None
        self.sample_telemetry: list[dict[str, Any]] = []
        self._rows: dict[tuple[int, ...], list[dict[str, Any]]] = defaultdict(list)

    @classmethod
    def create_from_arg_string(cls, arg_string: str,
                               additional_config: dict | None = None) -> QSampleHFLM:
        """lm-eval's constructor from ``key=value,...`` (``simple_evaluate(model_args=str)``),
        split by `split_model_args`: a JSON ``qsample_backend_params`` or a
        ``qsample_beta_range=[0.1,10]`` keeps its commas."""
        extra = {key: value for key, value in (additional_config or {}).items()
                 if value is not None}
        return cls(**split_model_args(arg_string), **extra)

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str],
                        **generation_kwargs: Any) -> torch.Tensor:
        """lm-eval's generation with `qsample_generate`, rows of one context coupled; each
        row's telemetry kept by its context (`_row_key`)."""
        telemetry = self.processor.telemetry
        telemetry.clear()
        self.processor.contexts = prefix_ids(context)
        try:
            out = super()._model_generate(context, max_length, stop,
                                          custom_generate=qsample_generate,
                                          qsample=self.processor, **generation_kwargs)
        finally:
            self.processor.contexts = None
        steps = telemetry.steps()
        for row, tokens in enumerate(context.tolist()):
            self._rows[self._row_key(tokens)].append({
                "tokens": len(steps),
                "fallbacks": sum(int(step.fallback_kind[row] != 0) for step in steps),
                "coupled": sum(int(step.group[row] >= 0) for step in steps),
                "sampler_seconds": sum(step.sampler_seconds / step.batch_size for step in steps),
                "batch_size": context.shape[0],
            })
        telemetry.clear()
        return out

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """lm-eval's ``generate_until`` (with a coupling: `_generate_coupled`); then each
        request's telemetry, in request order."""
        if self.processor.config.coupling:
            out = self._generate_coupled(requests, disable_tqdm)
        else:
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

    def _generate_coupled(self, requests: list, disable_tqdm: bool) -> list[str]:
        """lm-eval's ``generate_until`` one batch per `_repeat_batches` entry, so that every
        document's repeats are rows of one ``generate`` call; texts in request order."""
        capacity = (self.batch_size if isinstance(self.batch_size, int)
                    else self._detect_batch_size())
        texts: list[str] = [""] * len(requests)
        batches = _repeat_batches(requests, capacity)
        for batch in tqdm(batches, disable=disable_tqdm or self.rank != 0,
                          desc="Running coupled generate_until batches"):
            with self._batch_size(len(batch)):
                out = super().generate_until([requests[i] for i in batch], disable_tqdm=True)
            for index, text in zip(batch, out, strict=True):
                texts[index] = text
        return texts

    @contextmanager
    def _batch_size(self, size: int) -> Iterator[None]:
        """HFLM's batch size set to ``size`` for the block."""
        saved = self.batch_size_per_gpu
        self.batch_size_per_gpu = size
        try:
            yield
        finally:
            self.batch_size_per_gpu = saved

    def _row_key(self, tokens: list[int]) -> tuple[int, ...]:
        """The last `KEY_TOKENS` context tokens after the left padding: the same for a request's
        own encoding and its (padded, maybe left-truncated) row."""
        pad = self.tokenizer.pad_token_id
        start = 0
        while start < len(tokens) and tokens[start] == pad:
            start += 1
        return tuple(tokens[start:][-KEY_TOKENS:])


def _repeat_batches(requests: list, capacity: int) -> list[list[int]]:
    """Request indices in batches: a document's repeats (lm-eval passes its request object
    ``repeats`` times) all in one, documents added while a batch holds at most ``capacity``
    rows (a larger document alone), documents with other generation kwargs or with a context
    already in the batch (their rows would be coupled as one document's) in another."""
    documents: dict[int, list[int]] = {}
    for index, request in enumerate(requests):
        documents.setdefault(id(request), []).append(index)
    batches: list[list[int]] = []
    filling: dict[str, tuple[list[int], set[str]]] = {}  # by generation kwargs
    for rows in documents.values():
        context, gen_kwargs = requests[rows[0]].args[:2]
        key = json.dumps(gen_kwargs, sort_keys=True, default=str)
        batch, contexts = filling.get(key, (None, set()))
        if batch is None or len(batch) + len(rows) > capacity or context in contexts:
            batch, contexts = [], set()
            batches.append(batch)
            filling[key] = (batch, contexts)
        batch.extend(rows)
        contexts.add(context)
    return batches
