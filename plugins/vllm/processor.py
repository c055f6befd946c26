"""vLLM sampler plugin: per-request annealer sampling in vLLM serving.

One class, `QSampleVLLMProcessor`, implements both of vLLM's logits-processor interfaces (it
subclasses both ABCs and tells them apart by their constructor arguments), so one entry point
in the ``vllm.logits_processors`` group loads under either model runner:

- legacy V1 runner (CPU, ``VLLM_USE_V2_MODEL_RUNNER=0``): ``__init__(vllm_config, device,
  is_pin_memory)``, ``update_state(batch_update)``, ``apply(logits)``;
- Model Runner V2: ``__init__(vllm_config, req_states)``, ``add_request(slot, params)``,
  ``apply(logits, ctx)`` with ``ctx.idx_mapping_np`` mapping rows to request slots.

Requests opt in through ``SamplingParams(extra_args={...})`` or the server's ``vllm_xargs``:
``"qsample": 1`` (operator defaults) and/or any of ``qsample_mode``, ``qsample_backend``,
``qsample_top_k``, ``qsample_top_p``, ``qsample_min_p``, ``qsample_temperature``, ``qsample_seed``,
``qsample_num_reads``, ``qsample_num_sweeps``, ``qsample_penalty``. Temperature / top-k / top-p /
min-p default to the request's own sampling parameters, so the annealer samples the distribution
the request asked for. Requests without these keys are not touched: ``apply`` returns the logits
unchanged (bit-identical output).

Each step, all opted-in rows with the same configuration go to one `QuantumSampler.sample` call
(row keys hash(request seed, output position), so a request's tokens do not depend on its batch
neighbours); their logits become -inf except the chosen token. Operator settings come from the
JSON file named by ``QSAMPLE_VLLM_CONFIG`` (see `OperatorConfig`); backend credentials only ever
come from the operator's environment.
"""

from __future__ import annotations

import json
import os
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from vllm.logger import init_logger
from vllm.v1.sample.logits_processor import BatchUpdate, process_dict_updates
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsProcessor as V2LogitsProcessor,
)

from qsample import ConfigError, QuantumSampler, SamplerConfig
from qsample import rng as qrng

logger = init_logger("vllm.qsample")  # under vLLM's configured "vllm" logger

#: Per-request keys (``qsample_<field>``) and the SamplerConfig field each sets.
REQUEST_FIELDS = ("mode", "backend", "top_k", "top_p", "min_p", "temperature", "seed",
                  "num_reads", "num_sweeps", "penalty")
OPT_IN_KEY = "qsample"


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator allows (JSON file named by ``QSAMPLE_VLLM_CONFIG``).

    Example file::

        {"defaults": {"mode": "gumbel", "backend": "batched-sa", "top_k": 64},
         "allowed_backends": ["batched-sa", "neal"],
         "max": {"top_k": 256, "num_reads": 32, "num_sweeps": 2000},
         "fallback": "exact"}

    ``defaults`` are SamplerConfig fields applied under each request's keys (``backend``
    defaults to the first allowed backend); ``allowed_backends`` lists the backends requests
    may choose; ``max`` caps per-request values so one request
    cannot make the server spend unbounded time; ``fallback`` is the core sampler's policy when a
    backend fails ("exact": sample the row classically, counted). Anything else that goes wrong
    in a step leaves those rows' logits untouched (vLLM samples them as usual) and is counted.
    """

    defaults: dict[str, Any] = field(default_factory=lambda: {"backend": "batched-sa"})
    allowed_backends: tuple[str, ...] = ("batched-sa", "neal")
    max: dict[str, int] = field(
        default_factory=lambda: {"top_k": 256, "num_reads": 32, "num_sweeps": 2000})
    fallback: str = "exact"

    @classmethod
    def from_env(cls) -> OperatorConfig:
        path = os.environ.get("QSAMPLE_VLLM_CONFIG")
        if not path:
            return cls()
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        known = {"defaults", "allowed_backends", "max", "fallback"}
        for key in data:
            if key not in known:
                raise ConfigError(f"{path}: {key}", data[key], "one of " + ", ".join(sorted(known)))
        allowed = tuple(data.get("allowed_backends", cls().allowed_backends))
        defaults = dict(data.get("defaults", cls().defaults))
        if allowed:  # without a default backend, requests get the first allowed one
            defaults.setdefault("backend", allowed[0])
        config = cls(
            defaults=defaults,
            allowed_backends=allowed,
            max={**cls().max, **data.get("max", {})},
            fallback=data.get("fallback", "exact"),
        )
        SamplerConfig.from_dict({**config.defaults, "fallback": config.fallback})  # validate
        return config


_OPERATOR: OperatorConfig | None = None


def operator_config() -> OperatorConfig:
    global _OPERATOR
    if _OPERATOR is None:
        _OPERATOR = OperatorConfig.from_env()
    return _OPERATOR


def request_config(params) -> tuple[SamplerConfig, int] | None:
    """The request's SamplerConfig and seed, or None when it does not opt in.

    Raises:
        ValueError: a bad or disallowed value (vLLM answers HTTP 400 with the message).
    """
    extra = getattr(params, "extra_args", None) or {}
    keys = [k for k in extra if k == OPT_IN_KEY or k.startswith(OPT_IN_KEY + "_")]
    if not keys or (keys == [OPT_IN_KEY] and not _truthy(extra[OPT_IN_KEY])):
        return None
    operator = operator_config()
    values: dict[str, Any] = dict(operator.defaults)
    values.update(_from_sampling_params(params))
    for key in keys:
        if key == OPT_IN_KEY:
            continue
        name = key[len(OPT_IN_KEY) + 1:]
        if name not in REQUEST_FIELDS:
            raise ValueError(f"unknown request argument {key!r}: allowed are "
                             + ", ".join(f"qsample_{f}" for f in REQUEST_FIELDS))
        values[name] = extra[key]
    try:
        config = SamplerConfig.from_dict({**values, "fallback": operator.fallback})
    except ConfigError as exc:
        raise ValueError(f"qsample_{exc.field}={exc.value!r} is not allowed: expected "
                         f"{exc.allowed}") from None
    if config.backend_name not in operator.allowed_backends:
        raise ValueError(f"qsample_backend={config.backend_name!r} is not allowed on this "
                         f"server: expected one of {', '.join(operator.allowed_backends)}")
    for name, cap in operator.max.items():
        value = getattr(config, name, None)
        if value is not None and value > cap:
            raise ValueError(f"qsample_{name}={value} exceeds this server's cap of {cap}")
    seed = config.seed  # validated above; the sampler itself runs at seed 0 with per-row keys
    if seed is None:
        seed = params.seed if getattr(params, "seed", None) is not None else _fresh_seed()
    return config.replace(seed=0), int(seed)


def _from_sampling_params(params) -> dict[str, Any]:
    """The request's own temperature / top-k / top-p / min-p as qsample settings."""
    out: dict[str, Any] = {}
    temperature = getattr(params, "temperature", None)
    if temperature is not None:
        out["temperature"] = max(float(temperature), 0.0)
    top_k = getattr(params, "top_k", None)
    if top_k is not None and top_k > 0:
        out["top_k"] = int(top_k)
    top_p = getattr(params, "top_p", None)
    if top_p is not None and 0 < top_p < 1:
        out["top_p"] = float(top_p)
    min_p = getattr(params, "min_p", None)
    if min_p:
        out["min_p"] = float(min_p)
    return out


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() not in ("", "0", "false", "no", "off", "none")


def _fresh_seed() -> int:
    return int.from_bytes(os.urandom(7), "little")


@dataclass
class _Request:
    config: SamplerConfig
    seed: int
    output_tokens: list[int] | None = None  # V1: vLLM's live list of output tokens
    position: int = 0  # V2: tokens sampled so far


@dataclass
class PluginStats:
    """Counters since start-up (read them in tests or export them)."""

    steps: int = 0
    rows: int = 0
    sampler_calls: int = 0
    fallbacks: int = 0
    errors: int = 0
    sampler_seconds: float = 0.0
    last_error: str | None = None


class QSampleVLLMProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """qsample as a vLLM logits processor (both runner interfaces; see the module docstring)."""

    instances: ClassVar[weakref.WeakSet] = weakref.WeakSet()  # live ones, for diagnostics

    def __init__(self, vllm_config: Any, *args: Any) -> None:
        if len(args) == 2:  # V1: (device, is_pin_memory)
            self.runner = "v1"
        elif len(args) == 1:  # Model Runner V2: (req_states)
            self.runner = "v2"
        else:
            raise TypeError("QSampleVLLMProcessor(vllm_config, device, is_pin_memory) or "
                            "(vllm_config, req_states)")
        self.requests: dict[int, _Request] = {}
        self.samplers: OrderedDict[SamplerConfig, QuantumSampler] = OrderedDict()
        self.stats = PluginStats()
        QSampleVLLMProcessor.instances.add(self)
        operator = operator_config()
        logger.info("qsample logits processor loaded (%s runner); backends allowed: %s; caps: %s",
                    self.runner, ", ".join(operator.allowed_backends), operator.max)

    # -- both interfaces ------------------------------------------------------------------

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        request_config(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False  # it forces one token per opted-in row

    # -- V1 ---------------------------------------------------------------------------------

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.requests, batch_update, self._new_v1_request)

    @staticmethod
    def _new_v1_request(params, prompt_tokens, output_tokens) -> _Request | None:
        parsed = request_config(params)
        if parsed is None:
            return None
        return _Request(parsed[0], parsed[1], output_tokens)

    # -- Model Runner V2 --------------------------------------------------------------------

    def add_request(self, req_idx: int, sampling_params) -> bool:
        parsed = request_config(sampling_params)
        if parsed is None:
            self.requests.pop(req_idx, None)
            return False
        self.requests[req_idx] = _Request(parsed[0], parsed[1])
        return True

    def apply_staged_writes(self) -> None:
        return None

    # -- the step ---------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        if not self.requests:
            return logits
        if ctx is None:  # V1: rows are batch indices
            rows = sorted(self.requests)
            owners = rows
        else:  # V2: row i belongs to slot idx_mapping_np[i] (one row per request)
            slots = np.asarray(ctx.idx_mapping_np)
            if len(slots) != logits.shape[0]:  # several rows per request (draft tokens)
                slots = ctx.expanded_idx_mapping.cpu().numpy()
            rows = [i for i, slot in enumerate(slots.tolist()) if slot in self.requests]
            owners = [int(slots[i]) for i in rows]
            if not rows:
                return logits
        self._sample_rows(logits, rows, [self.requests[o] for o in owners])
        return logits

    def _sample_rows(self, logits: torch.Tensor, rows: list[int], requests: list[_Request]
                     ) -> None:
        groups: dict[SamplerConfig, list[int]] = {}
        for n, request in enumerate(requests):
            groups.setdefault(request.config, []).append(n)
        self.stats.steps += 1
        for config, members in groups.items():
            index = torch.tensor([rows[n] for n in members], device=logits.device)
            positions = np.array([self._position(requests[n]) for n in members], dtype=np.uint64)
            seeds = np.array([requests[n].seed for n in members], dtype=np.uint64)
            start = time.perf_counter()
            try:
                sampler = self._sampler(config)
                tokens = sampler.sample(logits.index_select(0, index),
                                        row_seeds=qrng.combine(seeds, positions))
            except Exception as exc:  # leave these rows to vLLM's own sampling, counted
                self.stats.errors += len(members)
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                self.stats.sampler_seconds += time.perf_counter() - start
            forced = torch.full((len(members), logits.shape[1]), float("-inf"),
                                dtype=logits.dtype, device=logits.device)
            forced.scatter_(1, tokens[:, None], 0.0)
            logits.index_copy_(0, index, forced)
            self.stats.rows += len(members)
            self.stats.sampler_calls += 1
            if sampler.last_step is not None:
                self.stats.fallbacks += sampler.last_step.fallback_count
            for n in members:
                requests[n].position += 1

    @staticmethod
    def _position(request: _Request) -> int:
        if request.output_tokens is not None:
            return len(request.output_tokens)
        return request.position

    def _sampler(self, config: SamplerConfig) -> QuantumSampler:
        sampler = self.samplers.get(config)
        if sampler is None:
            sampler = QuantumSampler(config, max_telemetry_steps=1)
            self.samplers[config] = sampler
            if len(self.samplers) > 64:
                self.samplers.popitem(last=False)
        return sampler
