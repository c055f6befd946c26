"""qsample inside vLLM's engine: per-request annealer sampling as a logits processor.

vLLM has two logits-processor interfaces, one per model runner, and qsample has one adapter
for each over one row-sampling core (`RowSamplingCore`: per-request state, the samplers, the
sampling of rows with their keys, the operator's fallback, counting and logging):

- `QSampleV1Processor`, the V1 runner's interface (`vllm.v1.sample.logits_processor`; the GPU
  and CPU model runners, ``VLLM_USE_V2_MODEL_RUNNER=0``): ``__init__(vllm_config, device,
  is_pin_memory)``, ``update_state(batch_update)``, ``apply(logits)``; rows are batch indices
  and a row's output position is the length of vLLM's live list of the request's output tokens;
- `QSampleV2Processor`, Model Runner V2's (`vllm.v1.worker.gpu.sample.logits_processor`):
  ``__init__(vllm_config, req_states)``, ``add_request(slot, params)``, ``apply(logits, ctx)``;
  rows map to slots through ``ctx.expanded_idx_mapping`` and a row's output position is
  ``ctx.pos[row] + 1 - prompt_len[slot]``. Under speculative decoding a request owns one row
  per draft token, each keyed by its own position, so the accepted tokens are the ones the
  request would get without drafts; rows of a chunked prefill (whose samples vLLM discards) are
  left alone.

Loading. Both runners read the same ``vllm.logits_processors`` entry point (and the
``--logits-processors`` / ``LLM(logits_processors=...)`` names), accept only a class, call
``cls.validate_params(params)`` in the API server for every request, and construct the class
in the engine: the V1 runner (``build_logitsprocs``) as ``cls(vllm_config, device,
is_pin_memory)``; Model Runner V2 (``build_custom_logits_processors``; chosen by
``VllmConfig.use_v2_model_runner``: ``VLLM_USE_V2_MODEL_RUNNER`` when set, else on where Triton
is present and every feature in use is supported) as ``cls(vllm_config, req_states)``, after
checking ``issubclass(cls, <its LogitsProcessor>)``. The entry point, `QSampleVLLMProcessor`, is
therefore registered as a virtual subclass of both interfaces (``ABCMeta.register``) and is
never instantiated itself: constructing it returns the adapter whose constructor accepts the
arguments vLLM passed. Each adapter is a real subclass of its own interface only.

Requests without qsample keys are not touched: ``apply`` returns the logits unchanged
(bit-identical output). Each step, all opted-in rows with the same configuration go to one
`QuantumSampler.sample` call, row keys hash(request seed, output position), so a request's
tokens do not depend on its batch neighbours; their logits become -inf except the chosen token.
Under tensor parallelism only TP rank 0 calls the sampler, and every rank forces the tokens it
broadcasts (`parallel`: which rank samples, the broadcast, batch-sharded sampling).

Joint sampling. The children of one ``n > 1`` request with ``qsample_coupling`` carry the
group `admission.admit` stamped on the parent (vLLM has no parent link in the engine), so a
request's tokens never depend on another request's rows. Siblings are coupled at one output
position (scope ``"always"``) or, with scope ``"prefix"``, at one generated prefix (hashed
incrementally per request: only the tokens added since the last step are read, V1 from vLLM's
live output list, MRV2 from ``req_states.all_token_ids`` on the device); under speculative
decoding only a request's first row, whose prefix is committed, is coupled. Children need not
arrive in one step (vLLM's API server adds them one by one): each (group, prefix or position)
is one joint sample, seeded by the group's seed, and `JointLedger` remembers the tokens its
earlier siblings took, so the siblings of a later step are drawn conditioned on them
(`qsample.coupling.Continuation`): for gumbel + ``"distinct"`` they take the next draws of the
same ordered sample without replacement, exactly, whatever the arrival order; for boltzmann
the coupled target of the rows present conditioned on the earlier siblings' tokens. The
ledger keeps the rows of the last `JOINT_WINDOW_STEPS` steps only, so a group's state goes
that many steps after its requests finish or are aborted. Requests that are not coupled take
the path above unchanged.

Sampling parameters. A request's temperature, top-k, top-p and min-p are qsample's own
settings (`admission.request_config`). Everything else vLLM applies to the logits is applied
before qsample samples, so the distribution qsample samples is the one the request asked for:
allowed token ids, bad words, min tokens, logit bias and the grammar of structured outputs
run before the logits processors in both runners; the repetition, frequency and presence
penalties run before them under Model Runner V2, but after them under the V1 runner, whose
adapter therefore applies them itself to the rows it samples, with vLLM's own function
(`vllm.v1.sample.ops.penalties.apply_all_penalties`, prompt and output tokens as vLLM keeps
them).

Failures. Configuration mistakes are refused at admission (`admission.admit`, HTTP 400). A
failure during a step follows the operator's policy: ``"exact"`` samples the rows classically
from the same target with the same keys (`qsample.sample_target`, so the request stays
reproducible), ``"error"`` leaves them to vLLM's sampler; logits that cannot be sampled (NaN)
are always left to vLLM, and so are the rows of a step that fails by a defect of qsample's own
(logged with its traceback: the step never raises into vLLM, and under tensor parallelism the
sampling rank always reaches the broadcast). Every such row is counted in the Prometheus series
(`metrics`) and logged, one line per reason at most every `LOG_INTERVAL_SECONDS`. A
configuration whose sampler cannot be built is not rebuilt every step.
"""

from __future__ import annotations

import inspect
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from vllm.logger import init_logger
from vllm.utils.torch_utils import make_tensor_with_pad
from vllm.v1.sample.logits_processor import BatchUpdate, process_dict_updates
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.sample.ops.penalties import apply_all_penalties
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsContext,
    LogitsProcRequestState,
)
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsProcessor as V2LogitsProcessor,
)

from qsample import LogitsError, SamplerConfig, sample_target
from qsample import rng as qrng
from qsample.backends import FailureKind
from qsample.coupling import Continuation, split_by_prefix
from qsample.telemetry import DeferredStep, StepTelemetry, resolved

from . import metrics
from .admission import (
    NO_GROUP,
    UNCOUPLED,
    JointGroup,
    SamplerCache,
    admit,
    operator_config,
    request_config,
    request_group,
)
from .parallel import (
    LEFT_TO_VLLM,
    ONE_RANK,
    Ranks,
    TokenBroadcast,
    engine_parallelism,
    force_rows,
)

logger = init_logger("vllm.qsample")  # under vLLM's configured "vllm" logger
LOG_INTERVAL_SECONDS = 30.0
#: The running prefix hash of an empty output.
EMPTY_PREFIX = 0
#: Steps a joint sample's tokens are remembered after its last row (`JointLedger`): longer
#: than any lag between the arrivals of one request's children.
JOINT_WINDOW_STEPS = 256


@dataclass(frozen=True)
class Penalties:
    """A request's repetition, frequency and presence penalties and its prompt (V1 runner)."""

    repetition: float
    frequency: float
    presence: float
    prompt: tuple[int, ...]

    @classmethod
    def of(cls, params: Any, prompt: Sequence[int] | None) -> Penalties | None:
        """The request's penalties, or None where it sets none (vLLM's defaults)."""
        values = (float(getattr(params, "repetition_penalty", 1.0)),
                  float(getattr(params, "frequency_penalty", 0.0)),
                  float(getattr(params, "presence_penalty", 0.0)))
        if values == NO_PENALTIES:
            return None
        return cls(*values, tuple(prompt or ()))


#: vLLM's defaults: (repetition, frequency, presence) penalties that change nothing.
NO_PENALTIES = (1.0, 0.0, 0.0)


@dataclass
class _Request:
    config: SamplerConfig
    seed: int
    output_tokens: list[int] | None = None  # V1: vLLM's live list of output tokens
    slot: int | None = None  # MRV2: the request's slot in req_states
    group: JointGroup = NO_GROUP  # the coupling group of its parent request (`request_group`)
    hashed: int = 0  # output tokens folded into prefix_hash so far
    prefix_hash: int = EMPTY_PREFIX
    penalties: Penalties | None = None  # V1: the penalties vLLM would apply after qsample

    def fold(self, tokens: Sequence[int]) -> None:
        """Extend the running hash of the output prefix by the tokens that follow it."""
        prefix = np.uint64(self.prefix_hash)
        for token in tokens:
            prefix = qrng.combine(prefix, token)
        self.prefix_hash = int(prefix)
        self.hashed += len(tokens)


@dataclass
class PluginStats:
    """Counters of one processor since start-up (tests read them; `metrics` exports the
    process's totals)."""

    steps: int = 0
    rows: int = 0
    coupled_rows: int = 0  # sampled jointly with sibling rows
    sampler_calls: int = 0
    fallbacks: int = 0
    errors: int = 0
    sampler_seconds: float = 0.0
    broadcasts: int = 0  # token vectors received from or sent to the other TP ranks
    broadcast_seconds: float = 0.0
    last_error: str | None = None


JointKey = tuple[int, int]  # (group id, hash of the prefix or position): one joint sample


class JointLedger:
    """The tokens each joint sample's earlier siblings took, in order, kept for the last
    ``window`` steps (a sample's entry goes ``window`` steps after its last row)."""

    def __init__(self, window: int = JOINT_WINDOW_STEPS) -> None:
        self.window = window
        self._entries: OrderedDict[JointKey, tuple[int, list[int]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def taken(self, key: JointKey) -> np.ndarray:
        entry = self._entries.get(key)
        return np.array(entry[1] if entry else (), dtype=np.int64)

    def record(self, keys: Sequence[JointKey], tokens: Sequence[int], step: int) -> None:
        """Add each row's token to its sample, and forget samples untouched for ``window``
        steps."""
        for key, token in zip(keys, tokens, strict=True):
            entry = self._entries.pop(key, None)
            taken = entry[1] if entry else []
            taken.append(int(token))
            self._entries[key] = (step, taken)  # most recently touched last
        while self._entries:
            key, (last, _) = next(iter(self._entries.items()))
            if last > step - self.window:
                break
            del self._entries[key]


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


class RowSamplingCore:
    """What both adapters share (see the module docstring): the opted-in requests
    (``requests``, keyed by the runner's batch index or slot), their samplers (``samplers``,
    built once per configuration) and `sample_rows`, counted in ``stats`` and `metrics`.

    Attributes:
        runner: ``"v1"`` or ``"v2"``, set by the adapter.
        instances: every live processor of the process (diagnostics, tests, benchmarks).
    """

    runner: ClassVar[str]
    instances: ClassVar[weakref.WeakSet[RowSamplingCore]] = weakref.WeakSet()

    def __init__(self, ranks: Ranks = ONE_RANK, broadcast: TokenBroadcast | None = None) -> None:
        self.requests: dict[int, _Request] = {}
        self.samplers = SamplerCache()
        self.stats = PluginStats()
        self.log = RateLimitedLog()
        if ranks.broadcasts and broadcast is None:
            raise ValueError(f"{ranks.describe()}: a TokenBroadcast is needed")
        self.ranks = ranks
        self.broadcast = broadcast
        self.joint = JointLedger()
        # steps whose telemetry is still coming from the GPU, accounted once it has arrived
        self.unaccounted: deque[tuple[SamplerConfig, StepTelemetry | DeferredStep]] = deque()
        RowSamplingCore.instances.add(self)
        log = logger.warning if ranks.sharded else logger.info
        log("qsample logits processor loaded (%s runner, %s); %s", self.runner, ranks.describe(),
            operator_config().describe())

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Admission, run by vLLM in the API server for every request (`admission.admit`).

        Raises:
            QSampleRequestError: naming the key (HTTP 400).
        """
        admit(sampling_params)

    @staticmethod
    def track(params: Any, output_tokens: list[int] | None = None,
              slot: int | None = None) -> _Request | None:
        """A request's state, or None when it does not opt in."""
        plan = request_config(params)
        if plan is None:
            return None
        return _Request(plan.config, plan.seed, output_tokens, slot,
                        request_group(params, plan.config))

    def sample_rows(self, logits: torch.Tensor, rows: list[int], requests: list[_Request],
                    positions: list[int]) -> torch.Tensor:
        """Force each of ``rows`` to the token qsample samples for it, in place: one sampler
        call per configuration, row r keyed by hash(seed of requests[r], positions[r]), coupled
        rows grouped by `_groups`. Under tensor parallelism only the sampling rank calls the
        sampler and the others apply the tokens it broadcasts (`parallel`)."""
        index = torch.tensor(rows, device=logits.device)
        if self.ranks.samples:
            tokens = self._choose(logits, index, requests, positions)
        else:
            tokens = torch.empty(len(rows), dtype=torch.int64, device=logits.device)
        if self.ranks.broadcasts:
            start = time.perf_counter()
            tokens = self.broadcast(tokens)
            self.stats.broadcasts += 1
            self.stats.broadcast_seconds += time.perf_counter() - start
        force_rows(logits, index, tokens)
        return logits

    def _choose(self, logits: torch.Tensor, index: torch.Tensor, requests: list[_Request],
                positions: list[int]) -> torch.Tensor:
        """Each row's token (int64 on the logits' device), `LEFT_TO_VLLM` for a row left to
        vLLM. Never raises: a defect in a configuration's step leaves its rows to vLLM, counted
        and logged, so that the sampling rank always reaches the broadcast."""
        tokens = torch.full((len(requests),), LEFT_TO_VLLM, dtype=torch.int64,
                            device=logits.device)
        batches: dict[SamplerConfig, list[int]] = {}
        for n, request in enumerate(requests):
            batches.setdefault(request.config, []).append(n)
        self.stats.steps += 1
        for config, members in batches.items():
            start = time.perf_counter()
            try:
                where = torch.tensor(members, device=logits.device)
                row_seeds = qrng.combine(
                    np.array([requests[n].seed for n in members], np.uint64),
                    np.array([positions[n] for n in members], np.uint64))
                of_config = [requests[n] for n in members]
                groups, joint, continuation = self._groups(config, of_config,
                                                           [positions[n] for n in members])
                block = self.penalise(logits.index_select(0, index[where]), of_config)
                chosen = self._sample_group(config, block, row_seeds, groups, continuation)
                if chosen is None:
                    continue
                if joint:
                    coupled = np.flatnonzero(groups >= 0)
                    self.joint.record([joint[n] for n in coupled],
                                      chosen[torch.from_numpy(coupled)].tolist(),
                                      self.stats.steps)
                tokens.index_copy_(0, where, chosen.to(tokens.device, torch.int64))
            except Exception as exc:  # a defect, not a backend failure (`_sample_group`)
                self._left_to_vllm(config, len(members), exc, time.perf_counter() - start)
                continue
            self.stats.rows += len(members)
        metrics.publish()
        return tokens

    def _left_to_vllm(self, config: SamplerConfig, rows: int, exc: Exception,
                      seconds: float) -> None:
        """Count and log ``rows`` rows of ``config`` left to vLLM by a defect ``exc``."""
        reason = f"{type(exc).__name__}: {exc}"
        self.stats.last_error = reason
        self.stats.errors += rows
        metrics.record_failure(rows, reason, seconds, fallback=False)
        if self.log.warn(metrics.reason_kind(reason),
                         f"{rows} row(s) of {config.mode}/{config.backend_name} left to vLLM's "
                         f"sampler by an error in qsample: {reason}"):
            logger.exception("qsample: the error's traceback", exc_info=exc)

    def _groups(self, config: SamplerConfig, requests: list[_Request], positions: list[int]
                ) -> tuple[np.ndarray | None, list[JointKey] | None, Continuation | None]:
        """The coupling of one configuration's rows: the groups (`QuantumSampler.sample`'s
        ``groups``: the rows of one parent request at one position, or with scope
        ``"prefix"`` at one generated prefix), each row's joint sample (`JointKey`) and the
        `Continuation` of those samples from the ledger; all None when no row is coupled."""
        if not config.coupling:
            return None, None, None
        ids = np.array([request.group.id for request in requests], np.int64)
        if (ids == UNCOUPLED).all():
            return None, None, None
        where = np.asarray(positions, np.uint64)
        coupled = np.flatnonzero(ids != UNCOUPLED).tolist()
        if config.coupling_scope == "prefix":
            chunks = self.new_output_tokens([requests[n] for n in coupled],
                                            [positions[n] for n in coupled])
            prefixes = np.zeros(len(requests), np.uint64)
            for n, chunk in zip(coupled, chunks, strict=True):
                request = requests[n]
                if chunk is not None:
                    request.fold(chunk)
                if request.hashed != positions[n]:  # prefix unknown this step: sampled alone
                    ids[n] = UNCOUPLED
                prefixes[n] = request.prefix_hash
            where = qrng.combine(prefixes, where)
        keys = where.view(np.int64)
        groups = split_by_prefix(ids, keys, singles=True)
        joint: list[JointKey] = [(int(i), int(w)) for i, w in zip(ids, keys, strict=True)]
        seeds = qrng.combine(np.array([request.group.seed for request in requests], np.uint64),
                             where)
        taken = tuple(self.joint.taken(key) if g >= 0 else np.zeros(0, np.int64)
                      for key, g in zip(joint, groups, strict=True))
        return groups, joint, Continuation(seeds, taken)

    def new_output_tokens(self, requests: list[_Request],
                          positions: list[int]) -> list[Sequence[int] | None]:
        """Each request's output tokens from ``request.hashed`` up to its row's position (what
        its prefix hash lacks), or None where they are not known this step (the runner's)."""
        raise NotImplementedError

    def penalise(self, block: torch.Tensor, requests: list[_Request]) -> torch.Tensor:
        """``block`` (a copy of the rows of ``requests``) with whatever vLLM applies to them
        only after the logits processors (the runner's; see the module docstring)."""
        return block

    def _sample_group(self, config: SamplerConfig, block: torch.Tensor, row_seeds: np.ndarray,
                      groups: np.ndarray | None, continuation: Continuation | None
                      ) -> torch.Tensor | None:
        """Tokens for one configuration's rows, or None to leave them to vLLM."""
        start = time.perf_counter()
        rows = block.shape[0]
        self.stats.sampler_calls += 1
        try:
            sampler = self.samplers.get(config)
            tokens = sampler.sample(block, row_seeds=row_seeds, groups=groups,
                                    continuation=continuation)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.stats.last_error = reason
            fallback = operator_config().fallback == "exact" and not isinstance(exc, LogitsError)
            tokens = (sample_target(block, config, row_seeds, groups, continuation) if fallback
                      else None)
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
        metrics.record_seconds(rows, seconds)
        self.unaccounted.append((config, sampler.last_step_nowait))
        self.account()
        return tokens

    def account(self) -> None:
        """Count the telemetry of past steps in ``stats`` and `metrics` and warn about their
        fallbacks, oldest first, as far as it has arrived (a GPU step's comes asynchronously and
        is counted at a later call)."""
        while self.unaccounted:
            config, entry = self.unaccounted[0]
            if isinstance(entry, DeferredStep) and not entry.ready():
                return
            self.unaccounted.popleft()
            step = resolved(entry)
            if step is None:
                continue
            metrics.record_telemetry(step)
            self.stats.coupled_rows += int((step.group >= 0).sum())
            if step.fallback_count:
                self.stats.fallbacks += step.fallback_count
                row = int(np.flatnonzero(step.fallback_kind)[0])
                reason = step.fallback_reason[row]
                self.log.warn(metrics.reason_kind(reason, FailureKind(step.fallback_kind[row])),
                              f"{step.fallback_count} row(s) of {config.mode}/"
                              f"{config.backend_name} took the fallback: {reason}")


class QSampleV1Processor(RowSamplingCore, V1LogitsProcessor):
    """qsample under vLLM's V1 model runner (see the module docstring)."""

    runner = "v1"

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        super().__init__(*engine_parallelism(vllm_config, device))

    def is_argmax_invariant(self) -> bool:
        return False  # it forces one token per opted-in row

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.requests, batch_update, self._track_v1)

    def _track_v1(self, params: Any, prompt: list[int] | None,
                  output: list[int]) -> _Request | None:
        request = self.track(params, output)
        if request is not None:
            request.penalties = Penalties.of(params, prompt)
        return request

    def penalise(self, block: torch.Tensor, requests: list[_Request]) -> torch.Tensor:
        """The V1 runner applies the penalties after the logits processors: apply them here,
        with vLLM's own function, to the rows that set any."""
        rows = [n for n, request in enumerate(requests) if request.penalties is not None]
        if not rows:
            return block
        chosen = [requests[n] for n in rows]
        # padded with the vocabulary size, which is no token, as vLLM pads its own
        prompt = make_tensor_with_pad([list(r.penalties.prompt) for r in chosen],
                                      pad=block.shape[1], dtype=torch.int64, device=block.device)

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=block.dtype, device=block.device)

        where = torch.tensor(rows, device=block.device)
        part = apply_all_penalties(
            block.index_select(0, where), prompt,
            column([r.penalties.presence for r in chosen]),
            column([r.penalties.frequency for r in chosen]),
            column([r.penalties.repetition for r in chosen]),
            [r.output_tokens for r in chosen])
        return block.index_copy_(0, where, part)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.requests:
            return logits
        rows = sorted(self.requests)
        requests = [self.requests[row] for row in rows]
        positions = [len(request.output_tokens) for request in requests]
        return self.sample_rows(logits, rows, requests, positions)

    def new_output_tokens(self, requests: list[_Request],
                          positions: list[int]) -> list[Sequence[int] | None]:
        chunks = [request.output_tokens[request.hashed:position]
                  for request, position in zip(requests, positions, strict=True)]
        # a -1 is a placeholder of async scheduling, not a token: the prefix stops before it
        return [chunk[:chunk.index(-1)] if -1 in chunk else chunk for chunk in chunks]


class QSampleV2Processor(RowSamplingCore, V2LogitsProcessor):
    """qsample under vLLM's Model Runner V2 (see the module docstring)."""

    runner = "v2"

    def __init__(self, vllm_config: Any, req_states: LogitsProcRequestState) -> None:
        super().__init__(*engine_parallelism(vllm_config, req_states.device))
        self.req_states = req_states

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        request = self.track(sampling_params, slot=req_idx)
        if request is None:  # the slot may hold an opted-in request's state: drop it
            self.requests.pop(req_idx, None)
            return False
        self.requests[req_idx] = request
        return True

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        if not any(int(slot) in self.requests for slot in ctx.idx_mapping_np):
            return logits  # no opted-in request in this batch: no device sync
        rows, requests, positions = self._rows(ctx)
        return self.sample_rows(logits, rows, requests, positions) if rows else logits

    def _rows(self, ctx: LogitsContext) -> tuple[list[int], list[_Request], list[int]]:
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

    def new_output_tokens(self, requests: list[_Request],
                          positions: list[int]) -> list[Sequence[int] | None]:
        """One gather from ``all_token_ids`` on the device for every request's missing tokens;
        a request's later rows in a step are draft rows (their prefix is not committed): None."""
        chunks: list[Sequence[int] | None] = [None] * len(requests)
        spans: list[tuple[int, int]] = []  # (request's index, tokens it takes)
        slots: list[int] = []
        columns: list[int] = []
        seen: set[int] = set()
        for n, (request, position) in enumerate(zip(requests, positions, strict=True)):
            if request.slot in seen:
                continue
            seen.add(request.slot)
            prompt = int(self.req_states.prompt_len.np[request.slot])
            wanted = range(prompt + request.hashed, prompt + position)
            slots.extend([request.slot] * len(wanted))
            columns.extend(wanted)
            spans.append((n, len(wanted)))
        history = self.req_states.all_token_ids.gpu
        tokens = history[torch.tensor(slots, device=history.device),
                         torch.tensor(columns, device=history.device)].tolist() if columns else []
        start = 0
        for n, count in spans:
            chunks[n] = tokens[start:start + count]
            start += count
        return chunks


ADAPTERS = (QSampleV1Processor, QSampleV2Processor)


@V1LogitsProcessor.register
@V2LogitsProcessor.register
class QSampleVLLMProcessor:
    """The ``vllm.logits_processors`` entry point for both runners: a virtual subclass of both
    interfaces whose construction returns the adapter (`QSampleV1Processor` or
    `QSampleV2Processor`) that takes the arguments vLLM passes (see the module docstring)."""

    instances: ClassVar[weakref.WeakSet[RowSamplingCore]] = RowSamplingCore.instances
    validate_params = RowSamplingCore.validate_params

    def __new__(cls, *args: Any, **kwargs: Any) -> RowSamplingCore:
        for adapter in ADAPTERS:
            try:
                inspect.signature(adapter).bind(*args, **kwargs)
            except TypeError:
                continue
            return adapter(*args, **kwargs)
        raise TypeError("QSampleVLLMProcessor takes the arguments of one of vLLM's interfaces: "
                        + " or ".join(f"({', '.join(inspect.signature(a).parameters)})"
                                      for a in ADAPTERS))
