"""The batch-first backend interface.

A backend receives all B problems of a decoding step at once and returns, for each row, R reads
as binary states [B, R, K]. It may solve the rows one by one, as one disjoint union, or natively
in a batch. Modes say *what* they need, never *how*:

- ``task="ground"``: low-energy states (``gumbel`` keeps the lowest-energy valid read);
- ``task="thermal"``: independent samples of exp(-E(x)), i.e. at inverse temperature
  `THERMAL_BETA` = 1 (``boltzmann``).

A row that gets no usable read is marked in `SolveResult.failures` with a `FailureKind` and the
text of what happened; the sampler then applies its fallback policy to it.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..annealer import beta_schedule
from ..errors import ConfigError
from ..problems import OneHotProblems
from .measured import fidelity_note

TASKS = ("ground", "thermal")
THERMAL_BETA = 1.0  # the thermal task samples exp(-THERMAL_BETA E(x)) = exp(-E(x))


class FailureKind(enum.IntEnum):
    """Why a row of a step got no usable read (code 0: it did)."""

    NONE = 0
    RAISED = 1  # the backend call raised; the text is "ExceptionType: message"
    REJECTED = 2  # the backend's reads do not fit the problem (shape, values, variables)
    NO_VALID_READ = 3  # the reads fit, but none is a one-hot state of the row
    BAD_LOGITS = 4  # NaN or no finite logit: nothing to sample (`qsample.pipeline`)

    @property
    def label(self) -> str:
        """A short, stable name (``"no_valid_read"``), e.g. for metric labels."""
        return self.name.lower()


class RejectedResult(ValueError):
    """A backend returned reads that do not fit the problem (`FailureKind.REJECTED`)."""


def describe(error: Exception) -> str:
    """The text of a failure by ``error``: "ExceptionType: message"."""
    return f"{type(error).__name__}: {error}"


def number_param(name: str, value: Any, low: float, high: float = math.inf, *,
                 above: bool = False) -> float:
    """``backend_params[name]`` as a finite float in [low, high] ((low, high] with ``above``);
    anything else raises `ConfigError` naming ``backend_params.<name>``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if (isinstance(value, bool) or not math.isfinite(number) or number > high
            or (number <= low if above else number < low)):
        bounds = f"{'>' if above else '>='} {low:g}" + (f" and <= {high:g}"
                                                      if math.isfinite(high) else "")
        raise ConfigError(f"backend_params.{name}", value, f"a finite number {bounds}")
    return number


@dataclass
class Failures:
    """Per-row failures of one step.

    Attributes:
        kind: uint8 [B] `FailureKind` codes, 0 where the row has usable reads.
        detail: object [B], the text of each failure (None where ``kind`` is 0).
    """

    kind: np.ndarray
    detail: np.ndarray

    @classmethod
    def none(cls, batch: int) -> Failures:
        """No row failed."""
        return cls(np.zeros(batch, np.uint8), np.full(batch, None, dtype=object))

    @property
    def failed(self) -> np.ndarray:
        """bool [B], True where a row failed."""
        return self.kind != FailureKind.NONE

    def mark(self, rows: Any, kind: FailureKind, detail: str) -> None:
        """Mark ``rows`` (an index, slice or mask) failed with ``kind`` and ``detail``."""
        self.kind[rows] = kind
        self.detail[rows] = detail

    def mark_exception(self, rows: Any, error: Exception) -> None:
        """Mark ``rows`` failed by ``error``: `FailureKind.REJECTED` for a `RejectedResult`,
        else `FailureKind.RAISED`, with `describe`'s text."""
        kind = FailureKind.REJECTED if isinstance(error, RejectedResult) else FailureKind.RAISED
        self.mark(rows, kind, describe(error))

    def copy(self) -> Failures:
        """An independent copy."""
        return Failures(self.kind.copy(), self.detail.copy())


@dataclass(frozen=True)
class SolveRequest:
    """What a mode asks of a backend for one step.

    Attributes:
        task: ``"ground"`` or ``"thermal"``.
        num_reads: reads per row.
        num_sweeps: sweeps per read (annealers).
        beta_range: (hot, cold) annealing schedule for ``ground``; ignored for ``thermal``,
            which samples at `THERMAL_BETA`.
        beta_schedule: ``"geometric"`` or ``"linear"``.
        keys: uint64 [B] counter-RNG keys of the rows (see `qsample.rng`).
        batching: ``"auto"``, ``"per-row"`` or ``"union"``.
        params: the config's ``backend_params``, extra keyword arguments for the sampler.
        coupling: the config's ``coupling`` between sibling rows; above 0, steps may bring
            `OneHotProblems.siblings`.
        settings: what the backend's calls take from all of the above, resolved once per
            sampler by `Backend.settings` (sampler keyword arguments, schedules); steps only
            change ``keys``.
    """

    task: str
    num_reads: int
    num_sweeps: int | None
    beta_range: tuple[float, float] | None
    beta_schedule: str
    keys: np.ndarray
    batching: str = "auto"
    params: Mapping[str, Any] = field(default_factory=dict)
    coupling: float = 0.0
    settings: Mapping[str, Any] = field(default_factory=dict)

    def betas(self) -> np.ndarray:
        """Inverse temperature per sweep [num_sweeps]: the ``beta_schedule`` ramp over
        ``beta_range`` for ``ground``, `THERMAL_BETA` throughout for ``thermal``."""
        if self.task == "thermal":
            return beta_schedule(self.num_sweeps, "fixed", beta=THERMAL_BETA)
        return beta_schedule(self.num_sweeps, self.beta_schedule, self.beta_range)


@dataclass
class SolveResult:
    """Reads of one step.

    Attributes:
        states: int8 [B, R, K]; rows with fewer reads are padded by ``read_mask``.
        read_mask: bool [B, R], True where a read exists.
        failures: the rows that got no usable reads, and why.
        seconds: wall time spent in backend calls.
        calls: number of backend calls made.
        timing: backend-reported timing (e.g. QPU access time, microseconds), summed over calls.
    """

    states: np.ndarray
    read_mask: np.ndarray
    failures: Failures
    seconds: float = 0.0
    calls: int = 0
    timing: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_error(cls, batch: int, width: int, error: Exception, seconds: float = 0.0,
                   calls: int = 0, timing: dict[str, float] | None = None) -> SolveResult:
        """Every row failed by ``error``: no reads (`Failures.mark_exception`)."""
        failures = Failures.none(batch)
        failures.mark_exception(slice(None), error)
        return cls(np.zeros((batch, 1, width), np.int8), np.zeros((batch, 1), bool), failures,
                   seconds, calls, timing or {})


#: The candidates of a `SamplerConfig` that gives no ``top_k``, on a backend without a K limit.
DEFAULT_TOP_K = 64

class Backend(ABC):
    """A solver for batches of one-hot problems.

    Attributes:
        name: registry name, shown in telemetry.
        tasks: the tasks it can perform faithfully (``"ground"``, ``"thermal"``).
        max_size: largest K it accepts (None: no limit).
        params: the ``backend_params`` keys it accepts (None: any, passed to its sampler).
        couplings: it solves problems with sibling couplings (`OneHotProblems.siblings`).
        machine_params: the ``backend_params`` keys that choose the machine the backend is built
            for (a QPU's solver, an emulator's topology), passed to its constructor by
            `make_backend` (and ignored by its `settings`).
        default_top_k: the candidates a `SamplerConfig` with this backend uses when it gives no
            ``top_k`` (None: `DEFAULT_TOP_K`): set by every backend with a K limit to a K it
            runs in reasonable time.
        probe: a local backend that costs nothing to call: a sampler is built only after one
            solve of a two-candidate problem with its settings has worked, so a bad
            ``backend_params`` value raises `ConfigError` then, not a fallback at every step.
            False for QPUs and remote samplers (a probe would spend QPU time).
    """

    name: str = "backend"
    tasks: tuple[str, ...] = TASKS
    max_size: int | None = None
    params: tuple[str, ...] | None = None
    couplings: bool = False
    machine_params: tuple[str, ...] = ()
    default_top_k: int | None = None
    probe: bool = False

    def fidelity_warning(self, request: SolveRequest, top_k: int) -> str | None:
        """Why ``request`` (its task, resolved settings) at up to ``top_k`` candidates is not
        measured faithful, or None: from the backend's entry in
        `qsample.backends.measured.MEASUREMENTS`."""
        return fidelity_note(self.name, request.task, top_k)

    def check(self, request: SolveRequest, top_k: int | None) -> None:
        """Refuse, with a `ConfigError` naming the field, what this backend cannot run: a task it
        cannot do, couplings it cannot take, more than ``max_size`` candidates (``top_k`` None:
        greedy, no problem is built) or ``backend_params`` keys outside ``params``
        (`allowed_params`). Called once per sampler, by ``qsample.sampler.resolve_request``;
        `probe` then tries the values on a tiny problem."""
        if request.task not in self.tasks:
            raise ConfigError("backend", self.name,
                              f"a backend that can do '{request.task}' sampling "
                              f"('{self.name}' does only {', '.join(self.tasks)})")
        if request.coupling > 0 and not self.couplings:
            raise ConfigError("coupling", request.coupling, f"0 with backend '{self.name}' "
                              "(it takes no couplings between rows)")
        if self.max_size is not None and top_k is not None and top_k > self.max_size:
            raise ConfigError("top_k", top_k, f"at most {self.max_size} with backend "
                              f"'{self.name}'")
        allowed = self.allowed_params()
        unknown = sorted(set(request.params) - set(allowed)) if allowed is not None else []
        if unknown:
            raise ConfigError("backend_params", dict(request.params),
                              f"keys among {', '.join(allowed) or '(none)'} for backend "
                              f"'{self.name}' (unknown: {', '.join(unknown)})")

    def allowed_params(self) -> tuple[str, ...] | None:
        """The ``backend_params`` keys this backend accepts (None: any)."""
        return self.params

    def default_num_reads(self, task: str) -> int | None:
        """Reads per row this backend needs for ``task`` when the config leaves num_reads None
        (None: the mode's default)."""
        return None

    def settings(self, request: SolveRequest) -> dict[str, Any]:
        """The `SolveRequest.settings` of ``request``: what `solve` needs besides the keys,
        with this backend's defaults and ``request.params`` merged in. Called once per sampler
        (``qsample.sampler.resolve_request``); a value it cannot use raises there. Default:
        nothing."""
        return {}

    @abstractmethod
    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        """Return reads for every row of ``problems``."""

    def fused_devices(self, request: SolveRequest, top_k: int) -> tuple[str, ...]:
        """The device types ("cpu", "cuda") on which the sampler may run a whole uncoupled step
        of ``request`` at up to ``top_k`` candidates as one call of the annealer's fused step
        kernel (`qsample.annealer.step.sample_step`, `qsample.pipeline.FusedStep`), with this
        backend's resolved ``request.settings``: only for a backend whose `solve` is that
        kernel's one-hot anneal. Default: none."""
        return ()
