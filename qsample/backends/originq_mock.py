"""An offline stand-in for Origin Quantum's cloud (``pyqpanda3.qcloud``), behind `originq-mock`.

`StandInCloudService` answers the calls `OriginQBackend` makes of a ``QCloudService``:
``backend(name)`` and ``backends()``; its backend answers ``chip_info().available_qubits()`` and
``run(programs, shots, options)`` with a job whose ``status()`` goes QUEUING -> COMPUTING ->
FINISHED over a set number of polls (pyqpanda3's own ``JobStatus``), ``result()``,
``cancel()`` and ``job_id()``. Programs are simulated by pyqpanda3's ``CPUQVM``: a program is
split into its connected parts (qubits joined by two-qubit gates), each part run for the shots
under an optional pyqpanda3 noise model (`gate_model.GateNoise`) and the parts' shots paired in a
random order, which is exactly the distribution of the whole program (its parts are
independent). A program's part may hold at most `MAX_PART_QUBITS` qubits.

Failures for tests: ``fail_jobs`` jobs end FAILED, ``raise_runs`` submissions raise
``RuntimeError`` and ``stall`` keeps every job queued. Every submission is recorded in
``submitted`` (programs, shots, options).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .gate_model import GateNoise, counts_bits, sdk
from .originq import OriginQBackend
from .qpanda import MAX_SIM_QUBITS


@dataclass(frozen=True)
class StandInChip:
    """A chip the stand-in cloud lists: its qubits, those unavailable, whether the service
    lists it as available (docs/sources.md gives each figure's source)."""

    qubits: int
    offline: tuple[int, ...] = ()
    available: bool = True


#: The stand-in cloud's chips. "WK_C180": 180 qubits, the count users report for Origin's
#: current chip (no published snapshot of its unavailable qubits: all available here, an
#: estimate); "72": the 72-qubit Wukong with the unavailable qubits of a published snapshot
#: (pyqpanda3 v0.1.1's changelog: 66 of 72), kept for comparison (users report it retired).
STANDIN_CHIPS = {
    "WK_C180": StandInChip(180),
    "72": StandInChip(72, (18, 23, 42, 43, 49, 68)),
}
MAX_PART_QUBITS = MAX_SIM_QUBITS
QUEUE_POLLS = 1  # polls answered QUEUING, then COMPUTING, before FINISHED
COMPUTE_POLLS = 1


@dataclass
class StandInChipInfo:
    name: str
    chip: StandInChip

    def available_qubits(self) -> list[int]:
        return [q for q in range(self.chip.qubits) if q not in self.chip.offline]

    def qubits_num(self) -> int:
        return self.chip.qubits

    def chip_id(self) -> str:
        return f"standin-{self.name}"


@dataclass
class StandInResult:
    counts: list[dict[str, int]]
    status: Any
    error: str = ""
    job: str = ""

    def get_counts_list(self) -> list[dict[str, int]]:
        return self.counts

    def get_counts(self) -> dict[str, int]:
        return self.counts[0]

    def job_status(self):
        return self.status

    def error_message(self) -> str:
        return self.error

    def job_id(self) -> str:
        return self.job

    def timing_info(self) -> dict[str, str]:
        return {}


@dataclass
class StandInJob:
    """A job that advances one state per ``status()`` poll."""

    job: str
    counts: list[dict[str, int]]
    fail: bool = False
    stall: bool = False
    polls: int = 0
    cancelled: bool = False

    def status(self):
        from pyqpanda3.qcloud import JobStatus

        self.polls += 1
        if self.stall or self.polls <= QUEUE_POLLS:
            return JobStatus.QUEUING
        if self.polls <= QUEUE_POLLS + COMPUTE_POLLS:
            return JobStatus.COMPUTING
        return JobStatus.FAILED if self.fail else JobStatus.FINISHED

    def result(self) -> StandInResult:
        from pyqpanda3.qcloud import JobStatus

        if self.fail:
            return StandInResult([], JobStatus.FAILED, "stand-in: calibration in progress",
                                 self.job)
        return StandInResult(self.counts, JobStatus.FINISHED, "", self.job)

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def job_id(self) -> str:
        return self.job


@dataclass
class StandInBackend:
    """A chip of the stand-in cloud."""

    chip: str
    service: StandInCloudService

    def name(self) -> str:
        return self.chip

    def chip_info(self) -> StandInChipInfo:
        return StandInChipInfo(self.chip, STANDIN_CHIPS[self.chip])

    def run(self, programs: list, shots: int, options: Any = None) -> StandInJob:
        service = self.service
        service.submitted.append({"programs": len(programs), "shots": shots,
                                  "options": options})
        if service.raise_runs > 0:
            service.raise_runs -= 1
            raise RuntimeError("stand-in: the cloud refused the submission")
        fail = service.fail_jobs > 0
        service.fail_jobs -= int(fail)
        counts = [] if fail or service.stall else [service.simulate(p, shots) for p in programs]
        job = StandInJob(f"standin-{next(service.ids)}", counts, fail=fail, stall=service.stall)
        service.jobs.append(job)
        return job


@dataclass
class StandInCloudService:
    """The stand-in ``QCloudService`` (module docstring).

    Args:
        noise: gate and read-out noise of the simulated chip (default: ideal).
        seed: seed of the pairing of parts' shots.
    """

    noise: GateNoise = field(default_factory=GateNoise)
    seed: int = 0
    fail_jobs: int = 0
    raise_runs: int = 0
    stall: bool = False
    submitted: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[StandInJob] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ids = itertools.count()
        self.rng = np.random.default_rng(self.seed)
        self.model = None if self.noise.ideal else self.noise.model()

    def backends(self) -> dict[str, bool]:
        return {name: chip.available for name, chip in STANDIN_CHIPS.items()}

    def backend(self, name: str) -> StandInBackend:
        if name not in self.backends():
            raise RuntimeError(f"backend {name!r} not found")
        return StandInBackend(name, self)

    def simulate(self, program, shots: int) -> dict[str, int]:
        """Counts of ``program`` (measuring qubit q into bit q) over ``shots``, keys written
        with bit 0 rightmost, from its connected parts simulated apart."""
        core = sdk()
        gates = program.gate_operations()
        measured = sorted(int(q) for q, _ in program.get_measure_qubits_cbits())
        parent = {q: q for q in measured}

        def root(q: int) -> int:
            while parent[q] != q:
                q = parent[q]
            return q

        for gate in gates:
            first, *rest = gate.qubits()
            for other in rest:
                parent[root(other)] = root(first)
        parts: dict[int, list[int]] = {}
        for q in measured:
            parts.setdefault(root(q), []).append(q)
        bits = np.zeros((shots, max(measured, default=-1) + 1), dtype=np.uint8)
        qvm = core.CPUQVM()
        for qubits in parts.values():
            if len(qubits) > MAX_PART_QUBITS:
                raise RuntimeError(f"stand-in: a part of {len(qubits)} entangled qubits is "
                                   f"over its simulator's {MAX_PART_QUBITS}")
            local = {q: i for i, q in enumerate(qubits)}
            prog = core.QProg()
            for gate in gates:
                if gate.qubits()[0] in local:
                    prog << gate.remap(local)
            prog << core.measure(list(range(len(qubits))), list(range(len(qubits))))
            if self.model is None:
                qvm.run(prog, shots)
            else:
                qvm.run(prog, shots, self.model)
            outcomes, counts = counts_bits(qvm.result().get_counts())
            shot_bits = np.repeat(outcomes, counts, axis=0)
            bits[:, qubits] = shot_bits[self.rng.permutation(shots)]
        keys, number = np.unique(bits[:, ::-1], axis=0, return_counts=True)
        return {"".join(map(str, key)): int(n) for key, n in zip(keys, number, strict=True)}


class OriginQMockBackend(OriginQBackend):
    """`OriginQBackend` on a fresh ideal `StandInCloudService`, polled without delay
    (registered as ``originq-mock``); ``kwargs`` go to `OriginQBackend`."""

    name = "originq-mock"

    def __init__(self, service: StandInCloudService | None = None, **kwargs: Any) -> None:
        super().__init__(service if service is not None else StandInCloudService(),
                         **{"poll_interval": 0.0, "backoff": 0.0, **kwargs})
