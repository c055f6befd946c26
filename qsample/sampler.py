"""`QuantumSampler`: logits -> candidates -> one-hot QUBO -> backend -> token + telemetry.

Settings are resolved once, at construction; each call runs one strategy of `qsample.pipeline`
(greedy, staged, fused on the host, or resident on the GPU), all with one result and telemetry
shape and one bad-logits policy.

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

from . import rng
from .annealer.gpu import runs_resident
from .backends import Backend, SolveRequest, describe, make_backend
from .candidates import check_logits
from .config import SamplerConfig
from .coupling import Continuation
from .errors import ConfigError
from .modes import MODES, Mode
from .pipeline import (
    FallbackComposite,
    FusedStep,
    GreedyStep,
    PendingResult,
    ResidentStep,
    StagedStep,
    StepResult,
    coupled_candidates,
    coupled_groups,
    refuse_bad_rows,
)
from .problems import OneHotProblems
from .telemetry import DeferredStep, StepTelemetry, TelemetryLog, resolved


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
    here, where a sampler draws its base seed from fresh entropy. Rows with bad logits take
    their substitute token (`qsample.pipeline`; with fallback "error" they raise)."""
    check_logits(logits)
    groups = coupled_groups(config, groups, logits.shape[0], continuation)
    if config.temperature == 0:
        return GreedyStep(config.fallback).run(logits, None, None, None, record=False)[0]
    seed = config.seed or 0
    keys = rng.combine(seed, np.asarray(row_seeds, dtype=np.uint64))
    mode = MODES[config.mode]
    block, bad, groups, keys = coupled_candidates(logits, config, mode, groups, keys,
                                                  continuation, seed)
    refuse_bad_rows(bad, config.fallback)
    choice, _ = mode.draw(block, keys, groups, config.coupling)
    tokens = block.token_ids[np.arange(block.batch_size), choice]
    return torch.from_numpy(tokens).to(logits.device)


class QuantumSampler:
    """Samples one token per row of a logits batch with an annealer backend.

    Each call runs one strategy of `qsample.pipeline` (greedy, staged, fused on the host, or
    resident on the GPU), all with the same result and telemetry shape.

    Args:
        config: the `SamplerConfig` (defaults: gumbel mode, batched-sa, top_k 64).
        telemetry: record a `StepTelemetry` per call in ``self.telemetry``.
        max_telemetry_steps: keep at most this many steps (None: all).
        fused: run uncoupled steps in one kernel call where the backend can
            (`Backend.fused_devices`); False runs every step on the staged path, the
            specification the fused kernels are tested against.

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
        fused: bool = True,
    ) -> None:
        start = time.perf_counter()
        self.config = cfg = config if config is not None else SamplerConfig()
        self.mode: Mode = MODES[cfg.mode]
        self.backend: Backend = make_backend(cfg.backend, cfg.backend_params)
        self.request = resolve_request(cfg, self.backend)
        self.penalty = cfg.penalty or self.mode.defaults.penalty
        if self.backend.probe and cfg.temperature != 0:
            self._probe()
        note = self.backend.fidelity_warning(self.request, cfg.top_k)
        if note:
            warnings.warn(note + " (docs/fidelity.md)", stacklevel=2)
        self.telemetry = TelemetryLog(max_telemetry_steps)
        self.record_telemetry = telemetry
        self._last_step: StepTelemetry | DeferredStep | None = None
        self._calls = 0
        self._base_seed = cfg.seed if cfg.seed is not None else rng.fresh_seed()
        composite = FallbackComposite(self.backend, self.mode, cfg.fallback, cfg.coupling)
        self._greedy = GreedyStep(cfg.fallback)
        self._staged = StagedStep(cfg, self.mode, composite, self.request, self.penalty,
                                  self._base_seed)
        # uncoupled steps run fused where the backend can; on the GPU only with the fallback
        # "exact" (a raise would need the host)
        devices = (self.backend.fused_devices(self.request, cfg.top_k)
                   if fused and cfg.temperature else ())
        self.fused_devices = tuple(d for d in devices if d == "cpu" or cfg.fallback == "exact")
        self._resident_devices = tuple(d for d in self.fused_devices
                                       if runs_resident(torch.device(d)))
        self._fused = FusedStep(cfg, self.mode, self.request, self.penalty, composite)
        self._resident = ResidentStep(cfg, self.mode, self.request, self.penalty, composite)
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
            FallbackComposite.check(result, 1, 2)
            failure = result.failures.detail[0]
        except Exception as exc:
            failure = describe(exc)
        if failure is not None:
            raise _unusable_params(self.config, self.backend, failure)

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
            LongTensor [B] of token ids on ``logits.device``. Rows with NaN or no finite logit
            follow the bad-logits policy of `qsample.pipeline`.
        """
        start = time.perf_counter()
        check_logits(logits)
        batch = logits.shape[0]
        step = self._calls
        self._calls += 1
        keys = self._keys(batch, step, row_seeds)
        groups = coupled_groups(self.config, groups, batch, continuation)
        if batch == 0:
            return torch.empty(0, dtype=torch.long, device=logits.device)
        if self.config.temperature == 0:
            strategy = self._greedy
        elif groups is None and logits.device.type in self.fused_devices:
            resident = logits.device.type in self._resident_devices
            strategy = self._resident if resident else self._fused
        else:
            strategy = self._staged
        tokens, result = strategy.run(logits, keys, groups, continuation, self.record_telemetry)
        if self.record_telemetry:
            self._record(step, result, time.perf_counter() - start, strategy is self._greedy)
        return tokens

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

    def _record(self, step: int, result: StepResult | PendingResult, seconds: float,
                greedy: bool) -> None:
        """Store the step's telemetry (`StepResult.telemetry`); a pending result's is built
        when it is first read."""
        mode, backend = ("greedy", "none") if greedy else (self.mode.name, self.backend.name)
        if isinstance(result, PendingResult):
            entry: StepTelemetry | DeferredStep = DeferredStep(
                lambda: result.build().telemetry(step, mode, backend, seconds), result.ready)
        else:
            entry = result.telemetry(step, mode, backend, seconds)
        self._last_step = entry
        self.telemetry.append(entry)

    def last_step(self) -> StepTelemetry | None:
        """The last call's telemetry (None before the first); waits for a GPU step's copy."""
        return resolved(self._last_step)

    @property
    def last_step_nowait(self) -> StepTelemetry | DeferredStep | None:
        """The last call's telemetry without waiting: a GPU step's `DeferredStep` while its copy
        is on the way (`DeferredStep.ready`)."""
        return self._last_step
