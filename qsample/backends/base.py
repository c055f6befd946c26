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
    """

    name: str = "backend"
    tasks: tuple[str, ...] = TASKS
    max_size: int | None = None
    thermal_measured_k: int | None = None
    params: tuple[str, ...] | None = None

    def fidelity_warning(self, task: str, top_k: int) -> str | None:
        """Why ``task`` at up to ``top_k`` candidates is not measured faithful, or None."""
        limit = self.thermal_measured_k
        if task == "thermal" and limit is not None and top_k > limit:
            return (f"boltzmann mode with backend '{self.name}' is measured faithful only up to "
                    f"K = {limit} candidates with its default sweeps; at top_k={top_k} check it "
                    f"with 'qsample fidelity' or use mode='gumbel'")
        return None

    def check_params(self, request: SolveRequest) -> None:
        """`ConfigError` naming ``backend_params`` when it holds keys not in ``params``."""
        if self.params is not None and set(request.params) - set(self.params):
            raise ConfigError("backend_params", dict(request.params),
                              f"keys among {', '.join(self.params)} for backend '{self.name}'")

    def default_num_reads(self, task: str) -> int | None:
        """Reads per row this backend needs for ``task`` when the config leaves num_reads None
        (None: the mode's default)."""
        return None

    @abstractmethod
    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        """Return reads for every row of ``problems``."""
