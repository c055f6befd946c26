"""`originq`: Origin Quantum's cloud (the Origin Wukong superconducting QPUs) through
pyqpanda3's ``qcloud``.

Each row's circuit is `qsample.backends.gate_model`'s (``onehot``: the weighted W state on K
qubits; ``binary``: ceil(log2 K) qubits). A step is sent as:

- programs: as many rows as the chip's available qubits hold, each on its own block of logical
  qubits (rows on disjoint qubits are independent, so one shot of a program is one read of each
  of its rows); the cloud maps logical qubits onto the chip and compiles to its native gates;
- jobs: the step's programs in batched jobs of at most `MAX_PROGRAMS_PER_JOB` (Origin's limit
  for one ``run`` of a list of programs), all submitted before any is polled;
- shots: ``num_reads`` per program, at least `MIN_SHOTS` (the service's minimum; extra shots are
  billed and discarded); options ask for raw counts (``amend_flag`` 0: read-out correction gives
  corrected probabilities, which are not samples; ``is_prob_counts`` True) with qubit mapping
  and circuit optimisation on.

A job is polled every ``poll_interval`` seconds up to ``timeout``: a job that has not finished
is cancelled and its rows go to the sampler's fallback policy; a submission error or a FAILED
job is retried ``max_retries`` times with exponential backoff, then its rows go to the fallback
policy. The reads of each row are its shots in an order drawn from the row's key.
``backend_timing`` counts ``jobs``, ``programs``, ``shots`` (billed), ``retries``,
``queue_seconds`` (submission until the job was first seen running or finished, at the
polling resolution) and ``job_seconds`` (submission until finished), plus the circuits' gate
counts and depth (`qsample.backends.qpanda.TIMING_KEYS`).

Credentials come only from the environment (`API_KEY_VARIABLE`, and `URL_VARIABLE` for another
endpoint; pyqpanda3 keeps no configuration file of its own): never from qsample's config or a
request, and they are never logged. Without them constructing the backend raises `ConfigError`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..problems import OneHotProblems
from .base import FailureKind, Failures, SolveRequest, SolveResult, number_param
from .gate_model import (
    DEFAULT_ENCODING,
    ORIGIN_EXTRA,
    Encoding,
    circuit_stats,
    counts_bits,
    row_program,
    sdk,
    shot_order,
    target_probs,
    tree_angles,
    tree_levels,
)
from .qpanda import TIMING_KEYS, GateModelBackend, job_policy

API_KEY_VARIABLE = "ORIGINQ_API_KEY"
URL_VARIABLE = "ORIGINQ_CLOUD_URL"
#: Origin's chip names, newest first (docs/sources.md): without ``backend_params.chip`` the
#: backend runs on the first one the service lists as available. "WK_C180" / "WK_C180_2" are the
#: 180-qubit chips users report in 2026, "WK_C102_400" a 102-qubit chip of pyqpanda3's
#: changelogs, "origin_wukong" Origin's own tutorial name (a 102-qubit chip in 2026), "72" the
#: 72-qubit Wukong (reported retired, "under maintenance").
PREFERRED_CHIPS = ("WK_C180", "WK_C180_2", "WK_C102_400", "origin_wukong", "72")
MAX_PROGRAMS_PER_JOB = 200  # Origin's limit on the programs of one batched run
MIN_SHOTS = 10  # the service's range is 10 to 20,000 shots
MAX_SHOTS = 20_000
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_POLL_S = 1.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.5
CLOUD_TIMING = ("jobs", "programs", "retries", "queue_seconds", "job_seconds")


def connect():
    """pyqpanda3's ``QCloudService`` from `API_KEY_VARIABLE` (and `URL_VARIABLE`); raises
    `ConfigError` at once when the key is not set."""
    key = os.environ.get(API_KEY_VARIABLE, "").strip()
    if not key:
        raise ConfigError("backend", "originq",
                          f"an Origin Quantum API key in the environment variable "
                          f"{API_KEY_VARIABLE} (qsample never takes it from its config or a "
                          "request)")
    try:
        from pyqpanda3 import qcloud
    except ImportError as exc:
        raise ConfigError("backend", "originq", ORIGIN_EXTRA) from exc
    url = os.environ.get(URL_VARIABLE, "").strip()
    return qcloud.QCloudService(key, url) if url else qcloud.QCloudService(key)


@dataclass
class _Job:
    """One batched job of a step: its programs, the rows each holds, and its progress."""

    rows: list[np.ndarray]  # per program, the rows it holds, on consecutive qubit blocks
    programs: list[Any]
    handle: Any = None
    submitted: float = 0.0
    started: float | None = None
    attempts: int = 0
    counts: list[dict[str, int]] = field(default_factory=list)


class OriginQBackend(GateModelBackend):
    """Origin Quantum's cloud QPUs (module docstring).

    Args:
        service: a ``QCloudService`` (or a stand-in, `qsample.backends.originq_mock`);
            default: `connect`.
        chip: the cloud backend's name (``backend_params`` ``chip`` overrides it); None: the
            first of `PREFERRED_CHIPS` the service lists as available.
        encoding_name: the default encoding.
        timeout, poll_interval, max_retries: polling and retries (``backend_params`` of the
            same names override them).
        backoff: first retry delay, seconds, doubled per retry.
    """

    name = "originq"
    params = ("encoding", "chip", "timeout", "poll_interval", "max_retries", "shots")

    def __init__(self, service: Any = None, *, chip: str | None = None,
                 encoding_name: str = DEFAULT_ENCODING, timeout: float = DEFAULT_TIMEOUT_S,
                 poll_interval: float = DEFAULT_POLL_S, max_retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF_S) -> None:
        super().__init__(encoding_name)
        self.service = service if service is not None else connect()
        self.chip = chip
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.max_retries = max_retries
        self.backoff = backoff
        self._chips: dict[str, tuple[Any, int]] = {}
        self._listed: dict[str, bool] | None = None

    def listed(self) -> dict[str, bool]:
        """The service's backends and whether each is available (asked once)."""
        if self._listed is None:
            listed = dict(self.service.backends())
            self._listed = {str(name): bool(up) for name, up in listed.items()}
        return self._listed

    def chip_name(self, params: dict[str, Any]) -> str:
        """The chip a request runs on: ``backend_params.chip``, the constructor's, or the first
        of `PREFERRED_CHIPS` the service lists as available.

        Raises:
            ConfigError: on ``backend_params.chip``: a chip the service does not list or lists
                as unavailable, or no chip given and none of `PREFERRED_CHIPS` available; the
                message names the chips it lists.
        """
        listed = self.listed()
        names = ", ".join(f"{name}{'' if up else ' (unavailable)'}"
                          for name, up in sorted(listed.items())) or "(none listed)"
        chip = params.get("chip", self.chip)
        if chip is None:
            chip = next((name for name in PREFERRED_CHIPS if listed.get(name)), None)
            if chip is None:
                raise ConfigError("backend_params.chip", None,
                                  "a chip of the Origin cloud (none of "
                                  f"{', '.join(PREFERRED_CHIPS)} is available; the service "
                                  f"lists: {names})")
        if not listed.get(str(chip)):
            raise ConfigError("backend_params.chip", chip,
                              f"a chip the Origin cloud lists as available: {names}")
        return str(chip)

    def cloud_backend(self, chip: str) -> tuple[Any, int]:
        """The cloud backend of ``chip`` and its number of available qubits (asked once)."""
        if chip not in self._chips:
            try:
                backend = self.service.backend(chip)
                available = len(backend.chip_info().available_qubits())
            except RuntimeError as exc:
                names = ", ".join(sorted(self.listed())) or "(none listed)"
                raise ConfigError("backend_params.chip", chip,
                                  f"a backend of the Origin cloud: {names} ({exc})") from None
            self._chips[chip] = (backend, available)
        return self._chips[chip]

    def qubit_budget(self, params: dict[str, Any]) -> int:
        return self.cloud_backend(self.chip_name(params))[1]

    def settings(self, request: SolveRequest) -> dict[str, Any]:
        """``encoding``, the cloud ``backend`` of ``chip`` and its ``available`` qubits,
        ``shots`` per program, polling (``timeout``, ``poll_interval``) and ``max_retries``,
        from ``backend_params`` over the constructor's; ``options`` for the cloud."""
        params = dict(request.params)
        chip = self.chip_name(params)
        backend, available = self.cloud_backend(chip)
        return {
            "encoding": self.row_encoding(params), "chip": chip, "backend": backend,
            "available": available,
            "shots": shots(params, request.num_reads),
            **job_policy(params, self.timeout, self.poll_interval, self.max_retries),
            "options": cloud_options(),
        }

    # ---------------------------------------------------------------- planning

    def plan(self, sizes: np.ndarray, width: int, enc: Encoding, available: int
             ) -> list[list[np.ndarray]]:
        """The jobs of a step: per job, per program, the rows it holds (rows in order, as many
        per program as `available` qubits hold, `MAX_PROGRAMS_PER_JOB` programs per job)."""
        qubits = max(enc.row_qubits(int(k), tree_levels(width)) for k in sizes)
        per_program = available // qubits
        if per_program < 1:
            raise ConfigError("top_k", width, f"at most {enc.largest(available)} candidates "
                              f"per row in the {enc.name} encoding on this chip ({available} "
                              "qubits available)")
        rows = np.arange(sizes.shape[0])
        programs = [rows[i:i + per_program] for i in range(0, rows.shape[0], per_program)]
        return [programs[i:i + MAX_PROGRAMS_PER_JOB]
                for i in range(0, len(programs), MAX_PROGRAMS_PER_JOB)]

    def estimate(self, batch: int, top_k: int, num_reads: int, steps: int,
                 group_size: int = 1, params: dict[str, Any] | None = None) -> dict[str, float]:
        """Jobs, programs and shots for ``steps`` decoding steps of ``batch`` rows of ``top_k``
        candidates with ``backend_params`` ``params``, spending nothing (rows are never
        coupled here, so ``group_size`` does not change the plan)."""
        params = params or {}
        enc = self.row_encoding(params)
        chip = self.chip_name(params)
        _, available = self.cloud_backend(chip)
        jobs = self.plan(np.full(batch, top_k), top_k, enc, available)
        programs = sum(len(job) for job in jobs)
        billed = shots(params, num_reads)
        return {"chip": chip, "available_qubits": float(available),
                "rows_per_call": float(max(sum(map(len, job)) for job in jobs)),
                "rows_per_program": float(max(len(rows) for job in jobs for rows in job)),
                "calls_per_step": float(len(jobs)), "calls": float(len(jobs) * steps),
                "programs": float(programs * steps), "shots": float(programs * billed * steps),
                "qubits_per_row": float(enc.qubits(top_k))}

    # ---------------------------------------------------------------- solving

    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        settings = request.settings
        enc = settings["encoding"]
        batch, width, reads = problems.batch_size, problems.width, request.num_reads
        levels = tree_levels(width)
        angles = tree_angles(target_probs(problems), levels)
        timing = dict.fromkeys(TIMING_KEYS + CLOUD_TIMING, 0.0)
        failures = Failures.none(batch)
        states = np.zeros((batch, reads, width), dtype=np.int8)
        read_mask = np.zeros((batch, reads), dtype=bool)
        begin = time.perf_counter()
        jobs = []
        for job_rows in self.plan(problems.sizes, width, enc, settings["available"]):
            programs = [self._program(enc, angles, problems.sizes, rows, levels, timing)
                        for rows in job_rows]
            jobs.append(_Job(job_rows, programs))
        for job in jobs:
            self._submit(job, settings, timing, failures)
        for job in jobs:
            if job.handle is not None:
                self._wait(job, settings, timing, failures)
            for rows, counts in zip(job.rows, job.counts, strict=False):
                self._decode(rows, counts, enc, problems, request, levels, states, read_mask)
        timing["jobs"] = float(len(jobs))
        timing["programs"] = float(sum(len(job.programs) for job in jobs))
        timing["shots"] = timing["programs"] * settings["shots"]
        return SolveResult(states, read_mask, failures, time.perf_counter() - begin,
                           len(jobs), timing)

    def _program(self, enc: Encoding, angles, sizes: np.ndarray, rows: np.ndarray, levels: int,
                 timing: dict[str, float]):
        """One program: the rows' circuits on consecutive qubit blocks, every qubit measured
        into the classical bit of its index."""
        core = sdk()
        prog = core.QProg()
        offset = 0
        for row in rows:
            k = int(sizes[row])
            prog << row_program(enc, angles, int(row), k, offset)
            offset += enc.row_qubits(k, levels)
        for key, value in circuit_stats(prog).items():
            timing[key] += value
        timing["circuits"] += float(len(rows))
        prog << core.measure(list(range(offset)), list(range(offset)))
        return prog

    def _submit(self, job: _Job, settings, timing: dict[str, float], failures: Failures) -> None:
        """Submit ``job`` (retrying errors); on the last failure its rows are marked."""
        while True:
            try:
                job.handle = settings["backend"].run(job.programs, settings["shots"],
                                                     settings["options"])
                job.submitted = time.perf_counter()
                job.started = None
                return
            except ConfigError:
                raise
            except Exception as exc:
                if not self._retry(job, settings, timing):
                    failures.mark_exception(np.concatenate(job.rows), exc)
                    job.handle = None
                    return

    def _retry(self, job: _Job, settings, timing: dict[str, float]) -> bool:
        """Whether ``job`` may be tried again (then after its backoff delay)."""
        if job.attempts >= settings["max_retries"]:
            return False
        time.sleep(self.backoff * 2**job.attempts)
        job.attempts += 1
        timing["retries"] += 1.0
        return True

    def _wait(self, job: _Job, settings, timing: dict[str, float], failures: Failures) -> None:
        """Poll ``job`` until it finishes (its counts kept), fails (retried) or times out
        (cancelled); rows of a job that gives no counts are marked."""
        from pyqpanda3.qcloud import JobStatus

        rows = np.concatenate(job.rows)
        while job.handle is not None:
            status = job.handle.status()
            now = time.perf_counter()
            if job.started is None and status in (JobStatus.COMPUTING, JobStatus.FINISHED):
                job.started = now
                timing["queue_seconds"] += now - job.submitted
            if status == JobStatus.FINISHED:
                job.counts = list(job.handle.result().get_counts_list())
                timing["job_seconds"] += now - job.submitted
                return
            if status == JobStatus.FAILED:
                message = job.handle.result().error_message()
                if self._retry(job, settings, timing):
                    self._submit(job, settings, timing, failures)
                    continue
                failures.mark(rows, FailureKind.RAISED, f"CloudJobFailed: job "
                              f"{job.handle.job_id()} failed: {message}")
                return
            if now - job.submitted > settings["timeout"]:
                job.handle.cancel()
                failures.mark(rows, FailureKind.RAISED, f"TimeoutError: job "
                              f"{job.handle.job_id()} not finished in "
                              f"{settings['timeout']:g} s (cancelled)")
                return
            time.sleep(settings["poll_interval"])

    @staticmethod
    def _decode(rows: np.ndarray, counts: dict[str, int], enc: Encoding,
                problems: OneHotProblems, request: SolveRequest, levels: int,
                states: np.ndarray, read_mask: np.ndarray) -> None:
        """The rows' reads from their program's counts: each row's bits of the shots, in an
        order drawn from the row's key (the rows of a program keep their shots paired)."""
        outcomes, number = counts_bits(counts)
        reads = request.num_reads
        order = shot_order(number, request.keys[rows[0]], reads)
        offset = 0
        for row in rows:
            k = int(problems.sizes[row])
            qubits = enc.row_qubits(k, levels)
            bits = outcomes[order, offset:offset + qubits]
            states[row, :bits.shape[0]] = enc.states(bits, k, problems.width)
            read_mask[row, :bits.shape[0]] = True
            offset += qubits


def shots(params: dict[str, Any], num_reads: int) -> int:
    """Shots per program: ``backend_params`` ``shots``, else ``num_reads``; at least
    ``num_reads`` and `MIN_SHOTS`, at most `MAX_SHOTS` (`ConfigError` otherwise)."""
    least = max(num_reads, MIN_SHOTS)
    return int(number_param("shots", params.get("shots", least), least, MAX_SHOTS))


def cloud_options():
    """``QCloudOptions`` for sampling: raw counts (no read-out correction), mapping and
    optimisation on."""
    from pyqpanda3 import qcloud

    return qcloud.QCloudOptions(amend_flag=0, mapping=True, optimization=True,
                                is_prob_counts=True)

