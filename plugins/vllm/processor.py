"""`QSampleVLLMProcessor`: per-request annealer sampling inside vLLM's engine.

One class implements both of vLLM's logits-processor interfaces (it subclasses both ABCs and
tells them apart by their constructor arguments), so one entry point in the
``vllm.logits_processors`` group loads under either model runner:

- legacy V1 runner (CPU, ``VLLM_USE_V2_MODEL_RUNNER=0``): ``__init__(vllm_config, device,
  is_pin_memory)``, ``update_state(batch_update)``, ``apply(logits)``; a row's output position
  is the length of vLLM's live list of the request's output tokens;
- Model Runner V2: ``__init__(vllm_config, req_states)``, ``add_request(slot, params)``,
  ``apply(logits, ctx)``; rows map to slots through ``ctx.expanded_idx_mapping`` and a row's
  output position is ``ctx.pos[row] + 1 - prompt_len[slot]``. Under speculative decoding a
  request owns one row per draft token, each keyed by its own position, so the accepted tokens
  are the ones the request would get without drafts; rows of a chunked prefill (whose samples
  vLLM discards) are left alone.

Requests without qsample keys are not touched: ``apply`` returns the logits unchanged
(bit-identical output). Each step, all opted-in rows with the same configuration go to one
`QuantumSampler.sample` call, row keys hash(request seed, output position), so a request's
tokens do not depend on its batch neighbours; their logits become -inf except the chosen token.

Failures. Configuration mistakes are refused at admission (`admission.admit`, HTTP 400). A
failure during a step follows the operator's policy: ``"exact"`` samples the rows classically
from the same target with the same keys (`qsample.sample_target`, so the request stays
reproducible), ``"error"`` leaves them to vLLM's sampler; logits that cannot be sampled (NaN)
are always left to vLLM. Every such row is counted in the Prometheus series (`metrics`) and
logged, one line per reason at most every `LOG_INTERVAL_SECONDS`. A configuration whose
sampler cannot be built is not rebuilt every step.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from vllm.logger import init_logger
from vllm.v1.sample.logits_processor import BatchUpdate, process_dict_updates
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsProcessor as V2LogitsProcessor,
)

from qsample import LogitsError, SamplerConfig, sample_target
from qsample import rng as qrng

from . import metrics
from .admission import SamplerCache, admit, operator_config, request_config

logger = init_logger("vllm.qsample")  # under vLLM's configured "vllm" logger
LOG_INTERVAL_SECONDS = 30.0


@dataclass
class _Request:
    config: SamplerConfig
    seed: int
    output_tokens: list[int] | None = None  # V1: vLLM's live list of output tokens


@dataclass
class PluginStats:
    """Counters of one processor since start-up (tests read them; `metrics` exports the
    process's totals)."""

    steps: int = 0
    rows: int = 0
    sampler_calls: int = 0
    fallbacks: int = 0
    errors: int = 0
    sampler_seconds: float = 0.0
    last_error: str | None = None


class RateLimitedLog:
    """One warning per reason kind at most every ``interval`` seconds, with the count of the
    ones held back since."""

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(kind, -np.inf) < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        logger.warning("qsample: %s%s", message,
                       f" ({held} more like it in the last {self.interval:.0f} s)" if held else "")
        return True


class QSampleVLLMProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """qsample as a vLLM logits processor (both runner interfaces; see the module docstring)."""

    instances: ClassVar[weakref.WeakSet] = weakref.WeakSet()  # live ones, for diagnostics

    def __init__(self, vllm_config: Any, *args: Any) -> None:
        if len(args) == 2:  # V1: (device, is_pin_memory)
            self.runner = "v1"
            self.req_states = None
        elif len(args) == 1:  # Model Runner V2: (req_states)
            self.runner = "v2"
            self.req_states = args[0]
        else:
            raise TypeError("QSampleVLLMProcessor(vllm_config, device, is_pin_memory) or "
                            "(vllm_config, req_states)")
        self.requests: dict[int, _Request] = {}
        self.samplers = SamplerCache()
        self.stats = PluginStats()
        self.log = RateLimitedLog()
        QSampleVLLMProcessor.instances.add(self)
        logger.info("qsample logits processor loaded (%s runner); %s", self.runner,
                    operator_config().describe())

    # -- both interfaces ------------------------------------------------------------------

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        admit(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False  # it forces one token per opted-in row

    # -- V1 ---------------------------------------------------------------------------------

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.requests, batch_update, self._new_v1_request)

    @staticmethod
    def _new_v1_request(params, prompt_tokens, output_tokens) -> _Request | None:
        plan = request_config(params)
        return None if plan is None else _Request(plan.config, plan.seed, output_tokens)

    # -- Model Runner V2 --------------------------------------------------------------------

    def add_request(self, req_idx: int, sampling_params) -> bool:
        plan = request_config(sampling_params)
        if plan is None:
            self.requests.pop(req_idx, None)
            return False
        self.requests[req_idx] = _Request(plan.config, plan.seed)
        return True

    def apply_staged_writes(self) -> None:
        return None

    # -- the step ---------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor, ctx: Any = None) -> torch.Tensor:
        if not self.requests:
            return logits
        if ctx is None:  # V1: rows are batch indices, positions the live output lengths
            rows = sorted(self.requests)
            requests = [self.requests[r] for r in rows]
            positions = [len(r.output_tokens) for r in requests]
        else:
            if not any(int(s) in self.requests for s in ctx.idx_mapping_np):
                return logits  # no opted-in request in this batch: no device sync
            rows, requests, positions = self._v2_rows(ctx)
            if not rows:
                return logits
        self._sample_rows(logits, rows, requests, positions)
        metrics.publish()
        return logits

    def _v2_rows(self, ctx: Any) -> tuple[list[int], list[_Request], list[int]]:
        """Opted-in rows, their requests and output positions (see the module docstring)."""
        layout = torch.stack([ctx.expanded_idx_mapping.long(), ctx.pos.long()]).cpu().numpy()
        slots, pos = layout
        prompt = self.req_states.prompt_len.np[slots]
        prefill = self.req_states.prefill_len.np[slots]
        rows, requests, positions = [], [], []
        for row, slot in enumerate(slots.tolist()):
            request = self.requests.get(slot)
            if request is None or pos[row] + 1 < prefill[row]:  # not opted in, or mid-prefill
                continue
            rows.append(row)
            requests.append(request)
            positions.append(int(pos[row] + 1 - prompt[row]))
        return rows, requests, positions

    def _sample_rows(self, logits: torch.Tensor, rows: list[int], requests: list[_Request],
                     positions: list[int]) -> None:
        groups: dict[SamplerConfig, list[int]] = {}
        for n, request in enumerate(requests):
            groups.setdefault(request.config, []).append(n)
        self.stats.steps += 1
        for config, members in groups.items():
            index = torch.tensor([rows[n] for n in members], device=logits.device)
            row_seeds = qrng.combine(np.array([requests[n].seed for n in members], np.uint64),
                                     np.array([positions[n] for n in members], np.uint64))
            block = logits.index_select(0, index)
            tokens = self._sample_group(config, block, row_seeds)
            if tokens is None:
                continue
            forced = torch.full((len(members), logits.shape[1]), float("-inf"),
                                dtype=logits.dtype, device=logits.device)
            forced.scatter_(1, tokens[:, None], 0.0)
            logits.index_copy_(0, index, forced)
            self.stats.rows += len(members)

    def _sample_group(self, config: SamplerConfig, block: torch.Tensor,
                      row_seeds: np.ndarray) -> torch.Tensor | None:
        """Tokens for one configuration's rows, or None to leave them to vLLM."""
        start = time.perf_counter()
        rows = block.shape[0]
        self.stats.sampler_calls += 1
        try:
            sampler = self.samplers.get(config)
            tokens = sampler.sample(block, row_seeds=row_seeds)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.stats.last_error = reason
            fallback = operator_config().fallback == "exact" and not isinstance(exc, LogitsError)
            tokens = sample_target(block, config, row_seeds) if fallback else None
            seconds = time.perf_counter() - start
            self.stats.sampler_seconds += seconds
            metrics.record_failure(rows, reason, seconds, fallback=fallback)
            if fallback:
                self.stats.fallbacks += rows
            else:
                self.stats.errors += rows
            action = ("sampled classically (fallback 'exact')" if fallback
                      else "left to vLLM's sampler")
            self.log.warn(metrics.reason_kind(reason),
                          f"{rows} row(s) of {config.mode}/{config.backend_name} {action}: "
                          f"{reason}")
            return tokens
        seconds = time.perf_counter() - start
        self.stats.sampler_seconds += seconds
        step = sampler.last_step
        metrics.record_step(step, rows, seconds)
        if step is not None and step.fallback_count:
            self.stats.fallbacks += step.fallback_count
            reason = next(r for r in step.fallback_reason if r is not None)
            self.log.warn(metrics.reason_kind(reason),
                          f"{step.fallback_count} row(s) of {config.mode}/{config.backend_name} "
                          f"took the fallback: {reason}")
        return tokens
