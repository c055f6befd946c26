"""The sampling step: one shape for every path (`QuantumSampler.sample` picks the strategy).

A step is: select candidates -> encode (the mode) -> solve (the backend, inside
`FallbackComposite`) -> decode and fall back -> one `StepResult` -> telemetry
(`StepResult.telemetry`, the one place a `StepTelemetry` is built). The strategies:

- `GreedyStep` (temperature 0): argmax, no backend call;
- `StagedStep`: the numpy stages one after the other, for every backend and every step with
  coupled groups; the specification the fused kernels are tested against;
- `FusedStep`: an uncoupled step of a backend that declares it (`Backend.fused_devices`) in one
  call of the annealer's step kernel on the host (`qsample.annealer.step`);
- `ResidentStep`: the same on the logits' device (Triton), with no host synchronisation; its
  result is a `PendingResult`, built when its copy has arrived.

Bad logits, one policy for every strategy and device: a row with a NaN logit, or with no finite
logit, has no distribution to sample. With fallback ``"error"`` the step raises `LogitsError`
naming the rows (the resident step, which could not raise without waiting for the device, is
only used with ``"exact"``); with fallback ``"exact"`` the row takes its substitute token (its
largest non-NaN logit among the top-k, `candidates.BadRows`; among all V for greedy),
the other rows are sampled as usual, and the row is counted: telemetry ``fallback``
`BAD_LOGITS_FALLBACK`, ``fallback_kind`` `FailureKind.BAD_LOGITS`, ``k`` 0.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import coupling, rng
from .annealer import status
from .annealer.step import StepOutput, sample_step
from .backends import (
    Backend,
    FailureKind,
    Failures,
    RejectedResult,
    SolveRequest,
    SolveResult,
)
from .candidates import BadRows, CandidateBlock, list_rows, screen_candidates
from .config import SamplerConfig
from .coupling import Continuation
from .errors import BackendError, ConfigError
from .modes import Mode
from .problems import OneHotProblems
from .telemetry import StepTelemetry

#: The telemetry ``fallback`` of rows whose classical joint draw was only approximate
#: (`coupling.sample_joint`'s sequential draw), and the note added to their reason.
SEQUENTIAL_FALLBACK = "sequential"
SEQUENTIAL_NOTE = (f"drawn row by row (approximate): no exact joint draw in "
                   f"{coupling.REJECTION_ROUNDS} rejection rounds")
#: The telemetry ``fallback`` of rows with bad logits (module docstring).
BAD_LOGITS_FALLBACK = "top-token"
MS_PER_S = 1e3  # CUDA events measure milliseconds


@dataclass(slots=True)
class StepResult:
    """What a step did, row by row (host arrays [B]) and in its backend calls.

    Attributes:
        token: the vocabulary id returned.
        rank: its index among the row's candidates (0 = most likely).
        k: candidates kept (0 for a bad row).
        target_prob, entropy: p of the token and the candidate entropy (nats).
        energy: the kept read's energy (NaN where a fallback chose).
        valid_reads, num_reads: valid (one-hot) reads and reads made.
        fallback: None, or the fallback that chose the token.
        failures: why rows got no valid read (kind 0: they did).
        group: the sibling group the row was drawn jointly with (-1: none; None: no groups).
        backend_seconds, backend_calls, backend_timing: the backend calls' wall time, count and
            backend-reported timing.
    """

    token: np.ndarray
    rank: np.ndarray
    k: np.ndarray
    target_prob: np.ndarray
    entropy: np.ndarray
    energy: np.ndarray
    valid_reads: np.ndarray
    num_reads: np.ndarray
    fallback: np.ndarray
    failures: Failures
    group: np.ndarray | None = None
    backend_seconds: float = 0.0
    backend_calls: int = 0
    backend_timing: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_kernel(cls, out: StepOutput, num_reads: int, policy: str, seconds: float,
                  bad: BadRows | None) -> StepResult:
        """A fused step's result from its kernel's host arrays ``out``: rows without a valid
        read took ``policy``'s draw; ``bad`` rows (None: none) are marked."""
        batch = out.status.shape[0]
        failures = Failures.none(batch)
        fallback = np.full(batch, None, dtype=object)
        failed = out.status == status.NO_VALID_READ
        if failed.any():
            failures.mark(failed, FailureKind.NO_VALID_READ, no_valid_read(num_reads))
            fallback[failed] = policy
        result = cls(token=out.token, rank=out.rank, k=out.size, target_prob=out.target_prob,
                     entropy=out.entropy, energy=out.energy, valid_reads=out.valid,
                     num_reads=np.full(batch, num_reads), fallback=fallback, failures=failures,
                     backend_seconds=seconds, backend_calls=1)
        return result if bad is None else result.with_bad_rows(bad)

    @classmethod
    def greedy(cls, token: np.ndarray) -> StepResult:
        """Argmax rows: one candidate each, no reads."""
        batch = token.shape[0]
        return cls(token=token, rank=np.zeros(batch, np.int64), k=np.ones(batch, np.int64),
                   target_prob=np.ones(batch), entropy=np.zeros(batch),
                   energy=np.full(batch, np.nan), valid_reads=np.zeros(batch, np.int64),
                   num_reads=np.zeros(batch, np.int64),
                   fallback=np.full(batch, None, dtype=object), failures=Failures.none(batch))

    def with_bad_rows(self, bad: BadRows) -> StepResult:
        """The result with ``bad``'s rows counted as the policy says (module docstring): their
        token is kept, everything sampled about them is cleared."""
        rows = bad.mask
        if not rows.any():
            return self
        self.failures.mark(bad.nan, FailureKind.BAD_LOGITS, "NaN logits")
        self.failures.mark(bad.empty, FailureKind.BAD_LOGITS, "no finite logit")
        self.fallback[rows] = BAD_LOGITS_FALLBACK
        for name in ("rank", "k", "valid_reads", "num_reads"):
            setattr(self, name, np.where(rows, 0, getattr(self, name)))
        for name in ("target_prob", "entropy", "energy"):
            setattr(self, name, np.where(rows, np.nan, getattr(self, name)))
        return self

    def telemetry(self, step: int, mode: str, backend: str,
                  sampler_seconds: float) -> StepTelemetry:
        """The step's `StepTelemetry`: every path's, built here."""
        return StepTelemetry(
            step=step, mode=mode, backend=backend, k=self.k, token_id=self.token,
            rank=self.rank, target_prob=self.target_prob, entropy=self.entropy,
            energy=self.energy, valid_reads=self.valid_reads, num_reads=self.num_reads,
            fallback=self.fallback, fallback_kind=self.failures.kind,
            fallback_reason=self.failures.detail, backend_seconds=self.backend_seconds,
            backend_calls=self.backend_calls, backend_timing=self.backend_timing,
            sampler_seconds=sampler_seconds, group=self.group)


@dataclass(frozen=True)
class PendingResult:
    """A `StepResult` still on its way from a device: ``build`` waits for the copy and makes
    it; ``ready`` says, without waiting, whether the copy is done (None: always)."""

    build: Callable[[], StepResult]
    ready: Callable[[], bool] | None = None


def refuse_bad_rows(bad: BadRows | None, policy: str) -> None:
    """The bad-logits policy's one refusal: with fallback ``"error"``, a `LogitsError` naming
    the rows of ``bad`` (None: no bad row)."""
    if bad is not None and policy == "error" and bad.any():
        raise bad.error()


def kernel_bad_rows(codes: np.ndarray) -> BadRows | None:
    """The bad rows of a fused step's ``status`` codes (`qsample.annealer.status`), None where
    there is none (the common case, checked with one comparison)."""
    if not (codes >= status.NAN).any():
        return None
    return BadRows(nan=codes == status.NAN, empty=codes == status.EMPTY)


def no_valid_read(reads: int, joint: bool = False) -> str:
    """The failure text of a row none of whose ``reads`` was valid."""
    return f"no valid {'joint' if joint else 'one-hot'} read among {reads} reads"


def coupled_groups(config: SamplerConfig, groups: object, batch: int,
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


def coupled_candidates(logits: torch.Tensor, config: SamplerConfig, mode: Mode,
                       groups: np.ndarray | None, keys: np.ndarray,
                       continuation: Continuation | None = None, seed: int = 0
                       ) -> tuple[CandidateBlock, BadRows, np.ndarray | None, np.ndarray]:
    """The step's candidates, its bad rows, the groups that stay coupled, and the noise keys:
    each row's candidates and noise key as ``mode`` encodes it (`Mode.shared`; a continued
    joint sample's key is hash(``seed``, its seed)), conditioned on what earlier siblings took
    (`coupling.condition`). With coupling ``distinct`` top-p and min-p keep at least n + m
    candidates in each row of a group of n whose earlier siblings took m; a group whose rows
    are left with fewer than n (fewer finite logits than rows) is sampled independently at this
    step. A bad row (`BadRows`) leaves its group and keeps its one substitute candidate."""
    distinct = groups is not None and np.isinf(config.coupling)
    continued = continuation is not None and groups is not None
    earlier = np.where(groups >= 0, continuation.counts, 0) if continued else 0
    block, bad = screen_candidates(
        logits, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
        min_p=config.min_p, min_keep=coupling.sizes(groups) + earlier if distinct else None)
    if groups is not None and bad.any():
        groups = _renumbered(np.where(bad.mask, -1, groups), continued)
        distinct = groups is not None and distinct
        continued = groups is not None and continued
    group_keys = None
    if continued:
        taken = tuple(t if g >= 0 else () for t, g in zip(continuation.taken, groups,
                                                           strict=True))
        block = coupling.condition(block, taken, config.coupling)
        group_keys = rng.combine(seed, np.asarray(continuation.seeds, dtype=np.uint64))
    if distinct:
        short = (block.sizes < coupling.sizes(groups)) & (groups >= 0)
        if short.any():
            groups = _renumbered(np.where(np.isin(groups, groups[short]), -1, groups), continued)
    block, noise_keys = mode.shared(block, keys, groups, group_keys)
    return block, bad, groups, noise_keys


def _renumbered(groups: np.ndarray, singles: bool) -> np.ndarray | None:
    """``groups`` numbered again after rows left them (None where none is left)."""
    numbered = coupling.number_groups(groups, singles=singles)
    return numbered if (numbered >= 0).any() else None


class FallbackComposite:
    """The fallback policy around a backend, as a dimod Composite wraps a Sampler: solves a
    step's problems, checks and decodes the reads, and settles the rows left without a valid
    read (or whose backend call failed): policy ``"exact"`` gives them the mode's classical
    draw of the target (`Mode.draw`), counted in the result; ``"error"`` raises
    `BackendError` naming them. A configuration mistake (`ConfigError`) is never a fallback."""

    def __init__(self, backend: Backend, mode: Mode, policy: str, strength: float) -> None:
        self.backend, self.mode, self.policy, self.strength = backend, mode, policy, strength

    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        """The backend's reads, checked (`check`); a run-time failure fails every row."""
        batch, width = problems.batch_size, problems.width
        try:
            result = self.backend.solve(problems, request)
            self.check(result, batch, width)
            return result
        except ConfigError:
            raise
        except Exception as exc:
            return SolveResult.from_error(batch, width, exc)

    @staticmethod
    def check(result: SolveResult, batch: int, width: int) -> None:
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

    def sample(self, block: CandidateBlock, noise_keys: np.ndarray, groups: np.ndarray | None,
               problems: OneHotProblems, request: SolveRequest) -> StepResult:
        """Solve ``problems`` (encoded from ``block`` with ``noise_keys``) and decode one
        candidate per row; failed rows settled by the policy."""
        result = self.solve(problems, request)
        choice, energy, valid_count, failures = self._decode(problems, result)
        batch = block.batch_size
        fallback = np.full(batch, None, dtype=object)
        rows = np.flatnonzero(failures.failed)
        if rows.size:
            if self.policy == "error":
                raise self.refused(rows, failures.detail[rows[0]])
            drawn, approximate = self.mode.draw(block, noise_keys, groups, self.strength)
            choice[rows] = drawn[rows]
            fallback[rows] = self.policy
            rough = rows[approximate[rows]]
            fallback[rough] = SEQUENTIAL_FALLBACK
            failures.detail[rough] = [f"{text}; {SEQUENTIAL_NOTE}" for text in
                                      failures.detail[rough]]
        probs = block.target_probs()
        index = np.arange(batch)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
        return StepResult(
            token=block.token_ids[index, choice], rank=choice, k=block.sizes.copy(),
            target_prob=probs[index, choice], entropy=entropy,
            energy=np.where(failures.failed, np.nan, energy),  # a fallback chose: no read's
            valid_reads=valid_count, num_reads=result.read_mask.sum(axis=1),
            fallback=fallback, failures=failures, group=groups,
            backend_seconds=result.seconds, backend_calls=result.calls,
            backend_timing=result.timing)

    def refused(self, rows: np.ndarray, detail: str) -> BackendError:
        """The error of policy "error" for ``rows`` without a sample, ``detail`` the first
        one's failure."""
        return BackendError(f"backend '{self.backend.name}' gave no valid one-hot sample for "
                            f"rows {list_rows(rows)}: {detail}")

    def _decode(self, problems: OneHotProblems, result: SolveResult
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Failures]:
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
                      no_valid_read(states.shape[1], joint=siblings is not None))
        return choice, energy, valid_count, failures

    def _joint_pick(self, problems: OneHotProblems, states: np.ndarray, energies: np.ndarray,
                    valid: np.ndarray, failures: Failures) -> tuple[np.ndarray, np.ndarray]:
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
        if np.isinf(self.strength):
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


StepOutcome = tuple[torch.Tensor, StepResult | PendingResult | None]
"""What a strategy returns: the tokens on the logits' device, and the step's result (None
when telemetry is off and building it would cost work)."""


class GreedyStep:
    """Temperature 0: each row's argmax, no candidates and no backend call. One host copy per
    step (tokens and bad-row flags: the bad-logits policy needs them, on a GPU too)."""

    def __init__(self, policy: str) -> None:
        self.policy = policy

    def run(self, logits: torch.Tensor, keys: np.ndarray, groups: np.ndarray | None,
            continuation: Continuation | None, record: bool) -> StepOutcome:
        values, tokens = logits.max(dim=1)
        flags = torch.stack([tokens, torch.isnan(values).long(),
                             (values == float("-inf")).long()])
        host = flags.cpu().numpy()  # the step's one device-to-host copy
        bad = BadRows(nan=host[1] > 0, empty=host[2] > 0)
        refuse_bad_rows(bad, self.policy)
        if bad.nan.any():  # the largest non-NaN logit (torch's argmax takes the NaN)
            rows = torch.from_numpy(np.flatnonzero(bad.nan)).to(logits.device)
            part = logits[rows]
            tokens = tokens.clone()
            tokens[rows] = torch.where(torch.isnan(part), float("-inf"), part).argmax(dim=1)
            host[0][bad.nan] = tokens[rows].cpu().numpy()
        if not record:
            return tokens, None
        return tokens, StepResult.greedy(host[0].astype(np.int64)).with_bad_rows(bad)


class StagedStep:
    """Candidates, the mode's problems, the backend inside `FallbackComposite`, decoding: the
    numpy stages one after the other (every backend, every coupled step)."""

    def __init__(self, config: SamplerConfig, mode: Mode, composite: FallbackComposite,
                 request: SolveRequest, penalty: float, seed: int) -> None:
        self.config, self.mode, self.composite = config, mode, composite
        self.request, self.penalty, self.seed = request, penalty, seed

    def run(self, logits: torch.Tensor, keys: np.ndarray, groups: np.ndarray | None,
            continuation: Continuation | None, record: bool) -> StepOutcome:
        cfg = self.config
        block, bad, groups, noise_keys = coupled_candidates(logits, cfg, self.mode, groups, keys,
                                                            continuation, self.seed)
        refuse_bad_rows(bad, cfg.fallback)
        problems = self.mode.encode(block, noise_keys, self.penalty, groups, cfg.coupling)
        result = self.composite.sample(block, noise_keys, groups, problems,
                                       dataclasses.replace(self.request, keys=keys))
        tokens = torch.from_numpy(result.token).to(logits.device, non_blocking=True)
        return tokens, result.with_bad_rows(bad)


class FusedStep:
    """An uncoupled step in one call of the annealer's step kernel on the host
    (`qsample.annealer.step.sample_step`), from the top-k: the staged path's target,
    candidates, encoding, decoding and fallback."""

    def __init__(self, config: SamplerConfig, mode: Mode, request: SolveRequest,
                 penalty: float, composite: FallbackComposite) -> None:
        self.config, self.mode, self.request = config, mode, request
        self.penalty, self.composite = penalty, composite

    def _kernel(self, values: torch.Tensor | np.ndarray, ids: torch.Tensor | np.ndarray,
                keys: torch.Tensor | np.ndarray) -> StepOutput:
        cfg = self.config
        return sample_step(values, ids, keys, temperature=cfg.temperature, top_p=cfg.top_p,
                           min_p=cfg.min_p, mode=self.mode.kernel, penalty=self.penalty,
                           num_reads=self.request.num_reads, **self.request.settings)

    def _top_k(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, ids = torch.topk(logits, min(self.config.top_k, logits.shape[1]), dim=1,
                                 sorted=True)
        return values.detach().float(), ids

    def run(self, logits: torch.Tensor, keys: np.ndarray, groups: np.ndarray | None,
            continuation: Continuation | None, record: bool) -> StepOutcome:
        values, ids = self._top_k(logits)
        start = time.perf_counter()
        out = self._kernel(values.numpy(), ids.numpy(), keys)
        seconds = time.perf_counter() - start
        bad = kernel_bad_rows(out.status)
        refuse_bad_rows(bad, self.config.fallback)
        failed = out.status == status.NO_VALID_READ
        if failed.any() and self.config.fallback == "error":
            raise self.composite.refused(np.flatnonzero(failed),
                                         no_valid_read(self.request.num_reads))
        result = (StepResult.of_kernel(out, self.request.num_reads, self.config.fallback,
                                       seconds, bad) if record else None)
        return torch.from_numpy(out.token), result


class ResidentStep(FusedStep):
    """`FusedStep` on the logits' device (Triton), without waiting for it: the keys go up
    through pinned memory, the tokens stay on the device, the result comes down asynchronously
    (`PendingResult`; ``backend_seconds`` is the device time between two CUDA events around the
    launch). Used with fallback ``"exact"`` only: bad rows take their substitute token."""

    def run(self, logits: torch.Tensor, keys: np.ndarray, groups: np.ndarray | None,
            continuation: Continuation | None, record: bool) -> StepOutcome:
        values, ids = self._top_k(logits)
        device = values.device
        cuda = device.type == "cuda"
        host_keys = torch.from_numpy(keys.view(np.int64))
        device_keys = host_keys.pin_memory().to(device, non_blocking=True) if cuda else host_keys
        events = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if cuda else []
        if events:
            events[0].record()
        values, ids = values.contiguous(), ids.contiguous()
        out = self._kernel(values, ids, device_keys)
        if not record:
            return out.token, None
        host = [column.to("cpu", non_blocking=True) for column in out.raw]
        if events:
            events[1].record()
        reads, policy = self.request.num_reads, self.config.fallback

        def build() -> StepResult:
            if events:
                events[1].synchronize()
            seconds = events[0].elapsed_time(events[1]) / MS_PER_S if events else 0.0
            out = StepOutput.of(*(column.numpy() for column in host))
            return StepResult.of_kernel(out, reads, policy, seconds, kernel_bad_rows(out.status))

        return out.token, PendingResult(build, events[1].query if events else None)
