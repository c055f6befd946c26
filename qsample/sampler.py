"""`QuantumSampler`: logits -> candidates -> one-hot QUBO -> backend -> token + telemetry.

Target distribution (every mode): p = softmax(l / T) over the candidate set left by top-k, then
top-p, then min-p, renormalised. ``temperature=0`` is greedy argmax with no backend call.

Example:
    >>> import torch
    >>> from qsample import QuantumSampler, SamplerConfig
    >>> config = SamplerConfig(mode="gumbel", backend="batched-sa", top_k=8, seed=0)
    >>> sampler = QuantumSampler(config)
    >>> tokens = sampler.sample(torch.randn(4, 100))   # LongTensor [4] on the logits' device
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import coupling, rng
from .backends import (
    STATUS_EMPTY,
    STATUS_NAN,
    STATUS_NO_VALID_READ,
    Backend,
    FailureKind,
    Failures,
    RejectedResult,
    SolveRequest,
    SolveResult,
    StepOutput,
    StepSpec,
    describe,
    make_backend,
)
from .candidates import (
    CandidateBlock,
    check_logits,
    empty_rows_error,
    list_rows,
    nan_rows_error,
    select_candidates,
)
from .config import SamplerConfig
from .coupling import Continuation
from .errors import BackendError, ConfigError
from .modes import MODES, Mode
from .problems import OneHotProblems
from .telemetry import DeferredStep, StepTelemetry, TelemetryLog, resolved

#: The telemetry ``fallback`` of rows whose classical joint draw was only approximate
#: (`coupling.sample_joint`'s sequential draw), and the note added to their reason.
SEQUENTIAL_FALLBACK = "sequential"
SEQUENTIAL_NOTE = (f"drawn row by row (approximate): no exact joint draw in "
                   f"{coupling.REJECTION_ROUNDS} rejection rounds")
#: The telemetry ``fallback`` of GPU rows with NaN or no finite logit (`_fused_step`).
BAD_LOGITS_FALLBACK = "top-token"
MS_PER_S = 1e3  # CUDA events measure milliseconds


def resolve_request(config: SamplerConfig, backend: Backend) -> SolveRequest:
    """The step request a config implies on ``backend``, with the mode's and the backend's
    defaults filled in, checked (`Backend.check`: task, K, ``backend_params`` keys; K is not
    checked at ``temperature=0``, which builds no problem) and the backend's `Backend.settings`
    resolved (keys empty: each step sets its own). Resolved once per sampler: steps change
    nothing else.

    Raises:
        ConfigError: what the backend cannot run, or a ``backend_params`` value its settings
            cannot use.
    """
    mode = MODES[config.mode]
    defaults = mode.defaults
    request = SolveRequest(
        task=mode.task,
        num_reads=(config.num_reads or backend.default_num_reads(mode.task)
                   or defaults.num_reads),
        num_sweeps=config.num_sweeps or defaults.num_sweeps,
        beta_range=config.beta_range or defaults.beta_range,
        beta_schedule=config.beta_schedule,
        keys=np.empty(0, dtype=np.uint64),
        batching=config.batching,
        params=config.backend_params,
        coupling=config.coupling,
    )
    backend.check(request, None if config.temperature == 0 else config.top_k)
    try:
        settings = backend.settings(request)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise _unusable_params(config, backend, describe(exc)) from None
    return dataclasses.replace(request, settings=settings)


def _unusable_params(config: SamplerConfig, backend: Backend, failure: str) -> ConfigError:
    """The error for ``backend_params`` that ``backend`` cannot run, ``failure`` saying why."""
    return ConfigError("backend_params", dict(config.backend_params),
                       f"settings backend '{backend.name}' can run ({failure})")


def sample_target(logits: torch.Tensor, config: SamplerConfig,
                  row_seeds: Sequence[int] | np.ndarray, groups: Any = None,
                  continuation: Continuation | None = None) -> torch.Tensor:
    """The fallback ``"exact"`` without a backend: a classical draw from ``config``'s target
    p = softmax(l / T) over the candidates (the coupled target for ``groups``, conditioned on
    ``continuation``), keyed by hash(``config.seed``, row seed): for a config with a
    ``seed``, exactly as ``QuantumSampler(config).sample(logits, row_seeds=row_seeds,
    groups=groups, continuation=continuation)`` keys its own fallback rows, so an adapter whose
    sampler failed still returns reproducible tokens. A config without one is keyed as seed 0
    here, where a sampler draws its base seed from fresh entropy."""
    check_logits(logits)
    groups = coupled_groups(config, groups, logits.shape[0], continuation)
    if config.temperature == 0:
        return logits.argmax(dim=1)
    seed = config.seed or 0
    keys = rng.combine(seed, np.asarray(row_seeds, dtype=np.uint64))
    block, groups, keys = coupled_candidates(logits, config, groups, keys, continuation, seed)
    choice, _ = MODES[config.mode].draw(block, keys, groups, config.coupling)
    tokens = block.token_ids[np.arange(block.batch_size), choice]
    return torch.from_numpy(tokens).to(logits.device)


def coupled_groups(config: SamplerConfig, groups: Any, batch: int,
                   continuation: Continuation | None = None) -> np.ndarray | None:
    """``groups`` checked (`coupling.check_groups`) and numbered, or None where nothing is
    coupled (no groups, coupling 0, or no group of two rows; with a ``continuation`` a row
    alone in its group is still a member of its joint sample).

    Raises:
        ConfigError: on field ``groups``: not one integer >= -1 per row, or, with coupling
            ``distinct``, a group of more rows than ``top_k`` candidates (counting the tokens
            its earlier siblings took); on field ``continuation``: not one seed and one token
            list per row.
    """
    if groups is None:
        return None
    checked = coupling.check_groups(groups, batch)
    if continuation is not None and (np.shape(continuation.seeds) != (batch,)
                                     or len(continuation.taken) != batch):
        raise ConfigError("continuation", continuation,
                          f"{batch} seeds and {batch} token lists, one per row")
    if config.coupling == 0:
        return None
    numbered = coupling.number_groups(checked, singles=continuation is not None)
    if not (numbered >= 0).any():
        return None
    earlier = continuation.counts if continuation is not None else 0
    if np.isinf(config.coupling) and (coupling.sizes(numbered) + earlier).max() > config.top_k:
        raise ConfigError("groups", groups, f"groups of at most top_k = {config.top_k} rows "
                          "with coupling 'distinct', counting the siblings of earlier calls "
                          "(each row needs its own candidate)")
    return numbered


def coupled_candidates(logits: torch.Tensor, config: SamplerConfig, groups: np.ndarray | None,
                       keys: np.ndarray, continuation: Continuation | None = None,
                       seed: int = 0) -> tuple[CandidateBlock, np.ndarray | None, np.ndarray]:
    """The step's candidates, the groups that stay coupled, and the noise keys: each row's
    candidates and noise key as its mode encodes it (`Mode.shared`; a continued joint sample's
    key is hash(``seed``, its seed)), conditioned on what earlier siblings took
    (`coupling.condition`). With coupling ``distinct`` top-p and min-p keep at least n + m
    candidates in each row of a group of n whose earlier siblings took m; a group whose rows
    are left with fewer than n (fewer finite logits than rows) is sampled independently at this
    step."""
    distinct = groups is not None and np.isinf(config.coupling)
    continued = continuation is not None and groups is not None
    earlier = np.where(groups >= 0, continuation.counts, 0) if continued else 0
    block = select_candidates(
        logits, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
        min_p=config.min_p, min_keep=coupling.sizes(groups) + earlier if distinct else None)
    group_keys = None
    if continued:
        taken = tuple(t if g >= 0 else () for t, g in zip(continuation.taken, groups,
                                                           strict=True))
        block = coupling.condition(block, taken, config.coupling)
        group_keys = rng.combine(seed, np.asarray(continuation.seeds, dtype=np.uint64))
    if distinct:
        short = (block.sizes < coupling.sizes(groups)) & (groups >= 0)
        if short.any():
            groups = coupling.number_groups(np.where(np.isin(groups, groups[short]), -1, groups),
                                            singles=continued)
            groups = groups if (groups >= 0).any() else None
    block, noise_keys = MODES[config.mode].shared(block, keys, groups, group_keys)
    return block, groups, noise_keys


def _no_valid_read(reads: int, joint: bool) -> str:
    """The failure text of a row none of whose ``reads`` was valid."""
    return f"no valid {'joint' if joint else 'one-hot'} read among {reads} reads"


class QuantumSampler:
    """Samples one token per row of a logits batch with an annealer backend.

    Args:
        config: the `SamplerConfig` (defaults: gumbel mode, batched-sa, top_k 64).
        telemetry: record a `StepTelemetry` per call in ``self.telemetry``.
        max_telemetry_steps: keep at most this many steps (None: all).

    Attributes:
        warmup_seconds: the one-time cost of building it (backend set-up and, for local
            backends, the probe, which loads the annealer's compiled kernels): reported apart
            from the per-step ``sampler_seconds`` of the telemetry.
    """

    def __init__(
        self,
        config: SamplerConfig | None = None,
        *,
        telemetry: bool = True,
        max_telemetry_steps: int | None = None,
    ) -> None:
        start = time.perf_counter()
        self.config = config if config is not None else SamplerConfig()
        self.mode: Mode = MODES[self.config.mode]
        self.backend: Backend = make_backend(self.config.backend, self.config.backend_params)
        self.request = resolve_request(self.config, self.backend)
        self.penalty = self.config.penalty or self.mode.defaults.penalty
        cfg = self.config
        # uncoupled steps run fused in one backend call where the backend can (`_fused_step`);
        # on a GPU only with the fallback "exact" (a raise would need the host)
        self._spec = StepSpec(cfg.temperature, cfg.top_p, cfg.min_p, cfg.mode, self.penalty)
        devices = self.backend.fused_devices(self.request, cfg.top_k) if cfg.temperature else ()
        self.fused_devices = tuple(d for d in devices if d == "cpu" or cfg.fallback == "exact")
        # devices whose fused step runs on the tensors themselves (Triton): CUDA; the tests add
        # "cpu" to run that path in Triton's interpreter
        self._resident_devices = ("cuda",)
        if self.backend.probe and self.config.temperature != 0:
            self._probe()
        note = self.backend.fidelity_warning(self.request, self.config.top_k)
        if note:
            warnings.warn(note + " (docs/fidelity.md)", stacklevel=2)
        self.telemetry = TelemetryLog(max_telemetry_steps)
        self.record_telemetry = telemetry
        self._last_step: StepTelemetry | DeferredStep | None = None
        self._calls = 0
        seed = self.config.seed
        self._base_seed = seed if seed is not None else rng.fresh_seed()
        self.warmup_seconds = time.perf_counter() - start

    @property
    def cost(self) -> int:
        """Annealing work per row and step, reads x sweeps x top_k (spin-flip attempts for the
        annealers; sweeps count 1 for backends without them). Adapters cap requests by it."""
        return self.request.num_reads * (self.request.num_sweeps or 1) * self.config.top_k

    def _probe(self) -> None:
        """Solve one two-candidate problem with the resolved settings (see `Backend.probe`)."""
        problems = OneHotProblems(np.array([[0.0, -1.0]]), np.array([self.penalty]),
                                  np.array([2]))
        request = dataclasses.replace(self.request, keys=rng.row_keys(0, 0, 1))
        try:
            result = self.backend.solve(problems, request)
            self._check_result(result, 1, 2)
            failure = result.failures.detail[0]
        except Exception as exc:
            failure = describe(exc)
        if failure is not None:
            raise _unusable_params(self.config, self.backend, failure)

    # ------------------------------------------------------------------ public API

    def sample(self, logits: torch.Tensor, *, row_seeds: Sequence[int] | np.ndarray | None = None,
               groups: Sequence[int] | np.ndarray | torch.Tensor | None = None,
               continuation: Continuation | None = None) -> torch.Tensor:
        """Sample one token per row.

        Args:
            logits: [B, V] floating tensor (any float dtype, CPU or CUDA, contiguous or not).
            row_seeds: optional non-negative integer key per row. When given, row b's randomness
                depends only on row_seeds[b] (not on the call count or on the other rows), which
                adapters use for per-request seeds. Otherwise keys are hash(seed, call, row).
            groups: optional group per row: rows with the same value >= 0 are siblings, drawn
                jointly with the config's ``coupling`` (`qsample.coupling`); -1 couples a row to
                none. Ignored (but checked) when ``coupling`` is 0; greedy rows
                (``temperature=0``) are never coupled.
            continuation: optional `coupling.Continuation`: the joint samples the groups'
                rows continue (their seeds and the tokens earlier siblings took); each row
                with a group >= 0 is drawn conditioned on them, even when alone in its group.

        Returns:
            LongTensor [B] of token ids on ``logits.device``.
        """
        start = time.perf_counter()
        check_logits(logits)
        batch = logits.shape[0]
        step = self._calls
        self._calls += 1
        keys = self._keys(batch, step, row_seeds)
        cfg = self.config
        groups = coupled_groups(cfg, groups, batch, continuation)
        if batch == 0:
            return torch.empty(0, dtype=torch.long, device=logits.device)
        if cfg.temperature == 0:
            return self._greedy(logits, step, start)
        if groups is None and logits.device.type in self.fused_devices:
            return self._fused_step(logits, keys, step, start)

        block, groups, noise_keys = coupled_candidates(logits, cfg, groups, keys, continuation,
                                                       self._base_seed)
        problems = self.mode.encode(block, noise_keys, self.penalty, groups, cfg.coupling)
        request = dataclasses.replace(self.request, keys=keys)
        result = self._solve(problems, request)
        choice, energy, valid_count, failures = self._decode(problems, result)

        fallback = np.full(batch, None, dtype=object)
        rows = np.flatnonzero(failures.failed)
        if rows.size:
            if cfg.fallback == "error":
                raise self._refused(rows, failures.detail[rows[0]])
            drawn, approximate = self.mode.draw(block, noise_keys, groups, cfg.coupling)
            choice[rows] = drawn[rows]
            fallback[rows] = cfg.fallback
            rough = rows[approximate[rows]]
            fallback[rough] = SEQUENTIAL_FALLBACK
            failures.detail[rough] = [f"{text}; {SEQUENTIAL_NOTE}" for text in
                                      failures.detail[rough]]

        tokens = block.token_ids[np.arange(batch), choice]
        out = torch.from_numpy(tokens).to(logits.device, non_blocking=True)
        self._record(step, block, choice, tokens, energy, valid_count, result, fallback, failures,
                     time.perf_counter() - start, groups)
        return out

    # ------------------------------------------------------------------ steps

    def _fused_step(self, logits: torch.Tensor, keys: np.ndarray, step: int, start: float
                    ) -> torch.Tensor:
        """An uncoupled step in one backend call (`Backend.step`): the same target, candidates,
        encoding, decoding and fallback as the staged path of `sample`, from the top-k. On a
        GPU nothing in it waits for the device: the keys go up through pinned memory, the
        tokens stay on the device, telemetry comes down asynchronously (`DeferredStep`), and a
        NaN or all -inf row, which the CPU refuses, takes its first top-k token and is counted
        as a failure there."""
        cfg = self.config
        values, ids = torch.topk(logits, min(cfg.top_k, logits.shape[1]), dim=1, sorted=True)
        values = values.detach().float()
        if logits.device.type in self._resident_devices:
            return self._resident_step(values, ids, keys, step, start)
        solve_start = time.perf_counter()
        out = self.backend.step(values.numpy(), ids.numpy(), keys, self._spec, self.request)
        seconds = time.perf_counter() - solve_start
        status = out.status
        if (status >= STATUS_NAN).any():
            if (status == STATUS_NAN).any():
                raise nan_rows_error(np.flatnonzero(status == STATUS_NAN))
            raise empty_rows_error(np.flatnonzero(status == STATUS_EMPTY))
        failed = status == STATUS_NO_VALID_READ
        if failed.any() and cfg.fallback == "error":
            raise self._refused(np.flatnonzero(failed),
                                _no_valid_read(self.request.num_reads, joint=False))
        if self.record_telemetry:
            self._store(self._fused_telemetry(step, out, seconds, time.perf_counter() - start))
        return torch.from_numpy(out.token)

    def _resident_step(self, values: torch.Tensor, ids: torch.Tensor, keys: np.ndarray,
                       step: int, start: float) -> torch.Tensor:
        """`_fused_step` on the logits' device (Triton), without waiting for it. Telemetry is a
        `DeferredStep`: ``backend_seconds`` is the device time between two CUDA events around
        the launch, ``sampler_seconds`` the host time of the call."""
        device = values.device
        cuda = device.type == "cuda"
        host_keys = torch.from_numpy(keys.view(np.int64))
        device_keys = host_keys.pin_memory().to(device, non_blocking=True) if cuda else host_keys
        events = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if cuda else []
        if events:
            events[0].record()
        out = self.backend.step(values.contiguous(), ids.contiguous(), device_keys, self._spec,
                                self.request)
        tokens = torch.where(out.status <= STATUS_NO_VALID_READ, out.token, ids[:, 0])
        if self.record_telemetry:
            host = [column.to("cpu", non_blocking=True) for column in out.raw]
            if events:
                events[1].record()
            seconds = time.perf_counter() - start

            def build() -> StepTelemetry:
                if events:
                    events[1].synchronize()
                device_seconds = events[0].elapsed_time(events[1]) / MS_PER_S if events else 0.0
                return self._fused_telemetry(
                    step, StepOutput.of(*(column.numpy() for column in host)), device_seconds,
                    seconds)

            self._store(DeferredStep(build, events[1].query if events else None))
        return tokens

    def _fused_telemetry(self, step: int, out: StepOutput, backend_seconds: float,
                         sampler_seconds: float) -> StepTelemetry:
        """The `StepTelemetry` of a fused step's host arrays: rows without a valid read took the
        fallback's draw; rows with bad logits (GPU only) took their first top-k token."""
        status, batch = out.status, out.status.shape[0]
        failures = Failures.none(batch)
        fallback = np.full(batch, None, dtype=object)
        failed = status == STATUS_NO_VALID_READ
        if failed.any():
            failures.mark(failed, FailureKind.NO_VALID_READ,
                          _no_valid_read(self.request.num_reads, joint=False))
            fallback[failed] = self.config.fallback
        bad = status >= STATUS_NAN
        if bad.any():
            failures.mark(bad, FailureKind.RAISED, "LogitsError: NaN or no finite logit (on "
                          "the GPU the row took its first top-k token)")
            fallback[bad] = BAD_LOGITS_FALLBACK
        return StepTelemetry(
            step=step, mode=self.mode.name, backend=self.backend.name, k=out.size,
            token_id=out.token, rank=out.rank, target_prob=out.target_prob, entropy=out.entropy,
            energy=out.energy, valid_reads=out.valid,
            num_reads=np.full(batch, self.request.num_reads), fallback=fallback,
            fallback_kind=failures.kind, fallback_reason=failures.detail,
            backend_seconds=backend_seconds, backend_calls=1, sampler_seconds=sampler_seconds)

    def _refused(self, rows: np.ndarray, detail: str) -> BackendError:
        """The error of fallback policy "error" for ``rows`` without a sample, ``detail`` the
        first one's failure."""
        return BackendError(f"backend '{self.backend.name}' gave no valid one-hot sample for "
                            f"rows {list_rows(rows)}: {detail}")

    def _keys(self, batch: int, step: int, row_seeds: Any) -> np.ndarray:
        if row_seeds is None:
            return rng.row_keys(self._base_seed, step, batch)
        if isinstance(row_seeds, torch.Tensor):
            row_seeds = row_seeds.detach().cpu().numpy()
        seeds = np.asarray(row_seeds)
        integral = seeds.dtype.kind in "iu"
        if seeds.shape != (batch,) or (seeds.size and (not integral or seeds.min() < 0)):
            raise ConfigError("row_seeds", row_seeds, f"{batch} non-negative integers, one per row")
        return rng.combine(self._base_seed, seeds.astype(np.uint64))

    def _greedy(self, logits: torch.Tensor, step: int, start: float) -> torch.Tensor:
        nan = torch.isnan(logits).any(dim=1)
        if bool(nan.any()):
            raise nan_rows_error(np.flatnonzero(nan.cpu().numpy()))
        tokens = logits.argmax(dim=1)
        if self.record_telemetry:
            host = tokens.cpu().numpy()
            batch = host.shape[0]
            none = Failures.none(batch)
            self._store(StepTelemetry(
                step=step, mode="greedy", backend="none", k=np.ones(batch, np.int64),
                token_id=host, rank=np.zeros(batch, np.int64), target_prob=np.ones(batch),
                entropy=np.zeros(batch), energy=np.full(batch, np.nan),
                valid_reads=np.zeros(batch, np.int64), num_reads=np.zeros(batch, np.int64),
                fallback=np.full(batch, None, object), fallback_kind=none.kind,
                fallback_reason=none.detail, sampler_seconds=time.perf_counter() - start,
            ))
        return tokens

    def _solve(self, problems, request: SolveRequest) -> SolveResult:
        batch, width = problems.batch_size, problems.width
        try:
            result = self.backend.solve(problems, request)
            self._check_result(result, batch, width)
            return result
        except ConfigError:  # a configuration mistake is never a fallback
            raise
        except Exception as exc:  # a run-time failure: the fallback policy, per row, counted
            return SolveResult.from_error(batch, width, exc)

    @staticmethod
    def _check_result(result: SolveResult, batch: int, width: int) -> None:
        """Raise `RejectedResult` unless ``result`` fits a step of ``batch`` rows of ``width``
        candidates."""
        states = result.states
        if states.ndim != 3 or states.shape[0] != batch or states.shape[2] != width:
            raise RejectedResult(f"backend returned states of shape {states.shape}, "
                                 f"expected ({batch}, reads, {width})")
        failures = result.failures
        if (result.read_mask.shape != states.shape[:2] or failures.kind.shape != (batch,)
                or failures.detail.shape != (batch,)):
            raise RejectedResult("backend returned a read mask or failures of the wrong shape")
        if states.dtype == np.int8:  # the common case, checked without a temporary per value
            binary = not (states.view(np.uint8) > 1).any()
        else:
            binary = np.isin(states, (0, 1)).all()
        if not binary:
            raise RejectedResult("backend returned non-binary states")

    def _decode(self, problems: OneHotProblems, result: SolveResult):
        """Chosen candidate index, its energy, valid-read count and failures per row (the
        backend's, and `FailureKind.NO_VALID_READ` where no read is a valid one-hot state).

        Coupled rows are decided per group: a read of a group is valid when every row's read is
        one-hot (and, for coupling ``distinct``, no two rows share a token); its energy is the
        rows' plus lambda_g per sibling pair on one token; the mode picks one read for the
        whole group, and a row's failure fails its group."""
        states = result.states
        inside = problems.variable_mask[:, None, :]
        ones = states.sum(axis=2, dtype=np.int64)
        valid = result.read_mask & (ones == 1) & ~(states.astype(bool) & ~inside).any(axis=2)
        energies = problems.energies(states)
        failures = result.failures.copy()
        siblings = problems.siblings
        if siblings is None:
            pick = self.mode.choose(energies, valid)
        else:
            pick, valid = self._joint_pick(problems, states, energies, valid, failures)
        rows = np.arange(problems.batch_size)
        choice = np.argmax(states[rows, pick], axis=1)
        if siblings is not None:
            choice = self.mode.arrange(choice, problems, siblings.groups)
        energy = energies[rows, pick]
        valid_count = valid.sum(axis=1)
        failures.mark((valid_count == 0) & ~failures.failed, FailureKind.NO_VALID_READ,
                      _no_valid_read(states.shape[1], joint=siblings is not None))
        return choice, energy, valid_count, failures

    def _joint_pick(self, problems: OneHotProblems, states, energies, valid,
                    failures: Failures) -> tuple[np.ndarray, np.ndarray]:
        """The read each row keeps when groups are decided jointly, and each row's valid
        reads (its group's); spreads a row's backend failure to its group."""
        siblings = problems.siblings
        groups, batch = siblings.groups, problems.batch_size
        num_groups = siblings.num_groups
        part = np.where(groups >= 0, groups, num_groups + np.arange(batch))  # one per component
        total = np.zeros((num_groups + batch, states.shape[1]))
        np.add.at(total, part, energies)
        pairs = siblings.pairs(states)
        total[:num_groups] += siblings.strength[:, None] * pairs
        invalid = np.zeros(total.shape, dtype=np.int64)
        np.add.at(invalid, part, ~valid)
        joint = invalid == 0
        if np.isinf(self.config.coupling):
            joint[:num_groups] &= pairs == 0
        member = groups >= 0
        failed = failures.failed & member
        if failed.any():  # one failing row leaves its siblings no joint read
            source = np.full(num_groups, -1)
            source[groups[failed]] = np.flatnonzero(failed)
            spread = member & ~failures.failed & (source[np.where(member, groups, 0)] >= 0)
            origin = source[groups[spread]]
            failures.kind[spread] = failures.kind[origin]
            failures.detail[spread] = failures.detail[origin]
        return self.mode.choose(total, joint)[part], joint[part]

    def _record(self, step, block: CandidateBlock, choice, tokens, energy, valid_count,
                result: SolveResult, fallback, failures: Failures, seconds,
                groups: np.ndarray | None) -> None:
        if not self.record_telemetry:
            return
        probs = block.target_probs()
        rows = np.arange(block.batch_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
        energy = np.where(failures.failed, np.nan, energy)  # a fallback chose: no read's energy
        self._store(StepTelemetry(
            step=step, mode=self.mode.name, backend=self.backend.name, k=block.sizes.copy(),
            token_id=tokens, rank=choice, target_prob=probs[rows, choice], entropy=entropy,
            energy=energy, valid_reads=valid_count, num_reads=result.read_mask.sum(axis=1),
            fallback=fallback, fallback_kind=failures.kind, fallback_reason=failures.detail,
            backend_seconds=result.seconds, backend_calls=result.calls,
            backend_timing=result.timing, sampler_seconds=seconds,
            group=groups,
        ))

    @property
    def last_step_nowait(self) -> StepTelemetry | DeferredStep | None:
        """`last_step` without waiting: a GPU step's `DeferredStep` while its copy is on the
        way (`DeferredStep.ready`)."""
        return self._last_step

    @property
    def last_step(self) -> StepTelemetry | None:
        """The last call's telemetry (None before the first; a GPU step's is waited for)."""
        self._last_step = resolved(self._last_step)
        return self._last_step

    def _store(self, step: StepTelemetry | DeferredStep) -> None:
        self._last_step = step
        self.telemetry.append(step)
