"""The batch-first backend interface.

A backend receives all B problems of a decoding step at once and returns, for each row, R reads
as binary states [B, R, K]. It may solve the rows one by one, as one disjoint union, or natively
in a batch. Modes say *what* they need, never *how*:

- ``task="ground"``: low-energy states (``gumbel`` keeps the lowest-energy valid read);
- ``task="thermal"``: independent samples of exp(-beta E(x)) (``boltzmann``, beta = 1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..problems import OneHotProblems

TASKS = ("ground", "thermal")


@dataclass(frozen=True)
class SolveRequest:
    """What a mode asks of a backend for one step.

    Attributes:
        task: ``"ground"`` or ``"thermal"``.
        num_reads: reads per row.
        num_sweeps: sweeps per read (annealers).
        beta_range: (hot, cold) annealing schedule for ``ground``; ignored for ``thermal``.
        beta_schedule: ``"geometric"`` or ``"linear"``.
        beta: inverse temperature of ``thermal`` sampling.
        keys: uint64 [B] counter-RNG keys of the rows (see `qsample.rng`).
        batching: ``"auto"``, ``"per-row"`` or ``"union"``.
        params: extra keyword arguments for the underlying sampler.
    """

    task: str
    num_reads: int
    num_sweeps: int | None
    beta_range: tuple[float, float] | None
    beta_schedule: str
    beta: float
    keys: np.ndarray
    batching: str = "auto"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class SolveResult:
    """Reads of one step.

    Attributes:
        states: int8 [B, R, K]; rows with fewer reads are padded by ``read_mask``.
        read_mask: bool [B, R], True where a read exists.
        failures: object [B], None or the reason a row got no usable reads.
        seconds: wall time spent in backend calls.
        calls: number of backend calls made.
        timing: backend-reported timing (e.g. QPU access time, microseconds), summed over calls.
    """

    states: np.ndarray
    read_mask: np.ndarray
    failures: np.ndarray
    seconds: float = 0.0
    calls: int = 0
    timing: dict[str, float] = field(default_factory=dict)


class Backend(ABC):
    """A solver for batches of one-hot problems.

    Attributes:
        name: registry name, shown in telemetry.
        tasks: the tasks it can perform faithfully (``"ground"``, ``"thermal"``).
        max_size: largest K it accepts (None: no limit).
        thermal_measured_k: largest K at which ``thermal`` was measured faithful with the
            default settings (None: no such limit); above it `fidelity_warning` says so.
        params: the ``backend_params`` keys it accepts (None: any, passed to its sampler).
        probe: a local backend that costs nothing to call: a sampler is built only after one
            solve of a two-candidate problem with its settings has worked, so a bad
            ``backend_params`` value raises `ConfigError` then, not a fallback at every step.
            False for QPUs and remote samplers (a probe would spend QPU time).
    """

    name: str = "backend"
    tasks: tuple[str, ...] = TASKS
    max_size: int | None = None
    thermal_measured_k: int | None = None
    params: tuple[str, ...] | None = None
    probe: bool = False

    def fidelity_warning(self, task: str, top_k: int) -> str | None:
        """Why ``task`` at up to ``top_k`` candidates is not measured faithful, or None."""
        limit = self.thermal_measured_k
        if task == "thermal" and limit is not None and top_k > limit:
            return (f"boltzmann mode with backend '{self.name}' is measured faithful only up to "
                    f"K = {limit} candidates with its default sweeps; at top_k={top_k} check it "
                    f"with 'qsample fidelity' or use mode='gumbel'")
        return None

    def check(self, request: SolveRequest, top_k: int | None) -> None:
        """Refuse, with a `ConfigError` naming the field, what this backend cannot run: a task it
        cannot do, more than ``max_size`` candidates (``top_k`` None: greedy, no problem is
        built) or ``backend_params`` keys outside ``params`` (`allowed_params`). Called once,
        when a sampler is built; `probe` then tries the values on a tiny problem."""
        if request.task not in self.tasks:
            raise ConfigError("backend", self.name,
                              f"a backend that can do '{request.task}' sampling "
                              f"('{self.name}' does only {', '.join(self.tasks)})")
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

    @abstractmethod
    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        """Return reads for every row of ``problems``."""
