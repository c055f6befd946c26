"""Prometheus series of the qsample vLLM plugin, served under vLLM's own ``/metrics``.

The processor runs in the engine process while ``/metrics`` is served by the API server, so
the engine's series reach it in one of two ways:

- vLLM's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before the server starts): the
  series are ordinary prometheus_client metrics, written to that folder and summed by vLLM's
  own ``MultiProcessCollector``;
- otherwise (the default): the engine writes its series in the exposition format to a
  snapshot file in ``QSAMPLE_METRICS_DIR``, which `install` creates in the API server before
  the engine starts (engine processes inherit it), and a collector registered there sums the
  snapshots of every engine process at each scrape. The snapshot is written off the decoding
  step, by a background thread, at most `PUBLISH_INTERVAL_SECONDS` after a step changed the
  series (and once more at exit): a scrape may lag the engine by that interval plus the write
  (about a millisecond), never by more.

Series (counters end in ``_total``): ``qsample_requests_admitted_total``,
``qsample_requests_refused_total{key}`` (API server); ``qsample_rows_total``,
``qsample_coupled_rows_total`` (rows sampled jointly with a sibling),
``qsample_sampler_calls_total``, ``qsample_fallback_rows_total{reason}``,
``qsample_error_rows_total{reason}``, ``qsample_sampler_seconds`` (histogram per call),
``qsample_backend_calls_total{backend}``, ``qsample_backend_seconds_total{backend}``,
``qsample_qpu_access_seconds_total{backend}`` (engine). Reasons are exception class names,
``no_valid_read``, ``rejected`` or ``bad_logits`` (`qsample.backends.FailureKind`), so label
sets stay small.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from qsample import StepTelemetry
from qsample.backends import FailureKind
from qsample.cache import write_text

METRICS_DIR_ENV = "QSAMPLE_METRICS_DIR"
SAMPLER_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                           2.5, 5.0, 10.0)
MICROSECONDS = 1e-6
#: How long after a step changed the engine's series its snapshot is written (`publish`).
PUBLISH_INTERVAL_SECONDS = 1.0


def _multiprocess() -> bool:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") is not None


# The engine's series live in a registry of their own: its snapshot holds nothing else.
ENGINE_REGISTRY = CollectorRegistry(auto_describe=True)
ROWS = Counter("qsample_rows", "Rows (tokens) sampled by qsample", registry=ENGINE_REGISTRY)
COUPLED = Counter("qsample_coupled_rows", "Rows sampled jointly with sibling rows of their request",
                  registry=ENGINE_REGISTRY)
CALLS = Counter("qsample_sampler_calls", "QuantumSampler calls (one per configuration per step)",
                registry=ENGINE_REGISTRY)
FALLBACKS = Counter("qsample_fallback_rows", "Rows sampled by the fallback policy, by reason",
                    ["reason"], registry=ENGINE_REGISTRY)
ERRORS = Counter("qsample_error_rows",
                 "Rows left to vLLM's own sampler (fallback 'error' or unusable logits)",
                 ["reason"], registry=ENGINE_REGISTRY)
SECONDS = Histogram("qsample_sampler_seconds", "Wall time of one sampler call",
                    buckets=SAMPLER_SECONDS_BUCKETS, registry=ENGINE_REGISTRY)
BACKEND_CALLS = Counter("qsample_backend_calls", "Backend calls", ["backend"],
                        registry=ENGINE_REGISTRY)
BACKEND_SECONDS = Counter("qsample_backend_seconds", "Wall time inside backend calls",
                          ["backend"], registry=ENGINE_REGISTRY)
QPU_SECONDS = Counter("qsample_qpu_access_seconds", "QPU access time reported by the solver",
                      ["backend"], registry=ENGINE_REGISTRY)
# Admission happens in the API server, whose default registry vLLM serves.
ADMITTED = Counter("qsample_requests_admitted", "Requests that opted in to qsample and passed "
                   "admission")
REFUSED = Counter("qsample_requests_refused", "Requests refused at admission (HTTP 400), by "
                  "request argument", ["key"])


def count_admitted() -> None:
    ADMITTED.inc()


def count_refusal(error: Exception) -> None:
    REFUSED.labels(key=getattr(error, "key", "unknown")).inc()


def reason_kind(reason: str | None, kind: FailureKind = FailureKind.RAISED) -> str:
    """A bounded label for a failure: the exception class of a raised one (``reason`` is
    ``"Type: message"``), else the kind's own label (``no_valid_read``, ``rejected``)."""
    if kind != FailureKind.RAISED:
        return kind.label
    if not reason:
        return "unknown"
    return reason.split(":", 1)[0].strip() or "unknown"


def record_seconds(rows: int, seconds: float) -> None:
    """Count one sampler call that took ``seconds`` and sampled ``rows`` rows (0: it left its
    rows to vLLM)."""
    ROWS.inc(rows)
    CALLS.inc()
    SECONDS.observe(seconds)


def record_telemetry(step: StepTelemetry) -> None:
    """Count what one sampler call's telemetry says (`record_seconds` counted the call)."""
    coupled = int((step.group >= 0).sum())
    if coupled:
        COUPLED.inc(coupled)
    if step.backend_calls:
        BACKEND_CALLS.labels(backend=step.backend).inc(step.backend_calls)
        BACKEND_SECONDS.labels(backend=step.backend).inc(step.backend_seconds)
    qpu = step.backend_timing.get("qpu_access_time")
    if qpu:
        QPU_SECONDS.labels(backend=step.backend).inc(qpu * MICROSECONDS)
    for kind, reason in zip(step.fallback_kind.tolist(), step.fallback_reason, strict=True):
        if kind:
            FALLBACKS.labels(reason=reason_kind(reason, FailureKind(kind))).inc()


def record_failure(rows: int, reason: str, seconds: float, *, fallback: bool) -> None:
    """Count a sampler call that raised: its rows took the fallback (sampled by qsample, so
    counted in ``qsample_rows``), or went to vLLM (counted in the errors only)."""
    record_seconds(rows if fallback else 0, seconds)
    (FALLBACKS if fallback else ERRORS).labels(reason=reason_kind(reason)).inc(rows)


class SnapshotWriter:
    """Writes this process's snapshot (`write_snapshot`) from a daemon thread, at most
    ``interval`` seconds after `request` (a set flag: nothing else on the caller's path);
    updates within one interval are written once. The thread starts at the first request in
    each process (a forked child starts its own) and writes a last snapshot at exit."""

    def __init__(self, interval: float = PUBLISH_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._pending = threading.Event()
        self._owner: int | None = None  # the pid whose thread serves the requests

    def request(self) -> None:
        if self._owner != os.getpid():
            self._owner = os.getpid()
            self._pending = threading.Event()
            threading.Thread(target=self._run, args=(self._pending,), daemon=True,
                             name="qsample-metrics").start()
            atexit.register(self.flush)
        self._pending.set()

    def flush(self) -> None:
        """Write the snapshot now if a request is pending."""
        if self._pending.is_set():
            self._pending.clear()
            write_snapshot()

    def _run(self, pending: threading.Event) -> None:
        while True:
            pending.wait()
            time.sleep(self.interval)  # coalesce the steps of one interval
            self.flush()


WRITER = SnapshotWriter()


def publish() -> None:
    """Have this engine process's snapshot written within `PUBLISH_INTERVAL_SECONDS` (by
    `WRITER`'s thread; the caller only sets a flag)."""
    WRITER.request()


def write_snapshot() -> None:
    """Write this engine process's snapshot now (not needed in multiprocess mode)."""
    folder = os.environ.get(METRICS_DIR_ENV)
    if not folder or _multiprocess() or not Path(folder).is_dir():
        return  # no snapshot folder, or it went away (server shutting down): not re-created
    try:  # atomic: a scrape sees the old or the new snapshot
        write_text(Path(folder) / f"engine-{os.getpid()}.prom",
                   generate_latest(ENGINE_REGISTRY).decode())
    except OSError:  # the folder went away meanwhile: metrics are best effort
        pass


class SnapshotCollector:
    """Sums the engine snapshots in a folder at each scrape (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple, float]] = {}
        for path in sorted(self.folder.glob("engine-*.prom")):
            try:
                text = path.read_text()
            except OSError:
                continue
            for family in text_string_to_metric_families(text):
                if family.name not in families:
                    families[family.name] = Metric(family.name, family.documentation,
                                                   family.type)
                    values[family.name] = {}
                sums = values[family.name]
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    sums[key] = sums.get(key, 0.0) + sample.value
        for name, family in families.items():
            for (sample_name, labels), value in values[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family


def install() -> Path | None:
    """In the API server, before the engine starts: the snapshot folder and its collector.

    Idempotent per process tree: a process that inherits ``QSAMPLE_METRICS_DIR`` (an engine or
    a worker) does nothing. Returns the folder this call created, or None.
    """
    if os.environ.get(METRICS_DIR_ENV) or _multiprocess():
        return None
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="qsample-metrics-",
                                   dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    os.environ[METRICS_DIR_ENV] = str(folder)
    REGISTRY.register(SnapshotCollector(folder))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
