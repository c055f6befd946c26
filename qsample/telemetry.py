"""Telemetry: what happened in each row of each step, kept columnar (numpy arrays per step) so
recording costs no per-row Python work; expanded to JSON records only when read."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends import FailureKind

ROW_FIELDS = (
    "k", "token_id", "rank", "target_prob", "entropy", "energy",
    "valid_reads", "num_reads", "fallback", "fallback_kind", "fallback_reason", "group",
)


@dataclass
class StepTelemetry:
    """One sampler call. Per-row arrays have length B.

    Row fields: ``k`` candidates, chosen ``token_id``, its ``rank`` among candidates (0 = most
    likely), its ``target_prob``, the candidate ``entropy`` (nats), the chosen read's ``energy``
    (NaN when a fallback chose), ``valid_reads`` / ``num_reads``, ``fallback`` (None or the policy
    used), ``fallback_kind`` (uint8 `FailureKind` codes, 0 where the row had no failure; its
    label in `records`), ``fallback_reason`` (the failure's text, None where none) and
    ``group`` (the sibling group the row was drawn jointly with, -1 for none). Step
    fields: backend wall time and calls, backend-reported ``backend_timing`` (e.g. QPU
    microseconds) and the whole call's ``sampler_seconds``.
    """

    step: int
    mode: str
    backend: str
    k: np.ndarray
    token_id: np.ndarray
    rank: np.ndarray
    target_prob: np.ndarray
    entropy: np.ndarray
    energy: np.ndarray
    valid_reads: np.ndarray
    num_reads: np.ndarray
    fallback: np.ndarray
    fallback_kind: np.ndarray
    fallback_reason: np.ndarray
    backend_seconds: float = 0.0
    backend_calls: int = 0
    backend_timing: dict[str, float] = field(default_factory=dict)
    sampler_seconds: float = 0.0
    group: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.group is None:
            self.group = np.full(self.token_id.shape[0], -1, np.int64)

    @property
    def batch_size(self) -> int:
        return int(self.token_id.shape[0])

    @property
    def fallback_count(self) -> int:
        return int(np.count_nonzero(self.fallback_kind))

    def records(self) -> Iterator[dict[str, Any]]:
        """One JSON-serialisable dict per row (``fallback_kind`` as its label, or None)."""
        columns = {name: getattr(self, name).tolist() for name in ROW_FIELDS}
        columns["fallback_kind"] = [FailureKind(code).label if code else None
                                    for code in columns["fallback_kind"]]
        for row in range(self.batch_size):
            record: dict[str, Any] = {"step": self.step, "row": row, "mode": self.mode,
                                      "backend": self.backend}
            record.update({name: columns[name][row] for name in ROW_FIELDS})
            if record["energy"] != record["energy"]:  # NaN is not valid JSON
                record["energy"] = None
            record["backend_seconds"] = self.backend_seconds
            record["batch_size"] = self.batch_size
            if self.backend_timing:
                record["backend_timing"] = self.backend_timing
            yield record


class DeferredStep:
    """A step whose row arrays are still on their way from a GPU: ``build`` waits for the copy
    and makes the `StepTelemetry`, once, when it is first read (`resolve`); ``ready`` says,
    without waiting, whether the copy is done (None: always)."""

    def __init__(self, build: Callable[[], StepTelemetry],
                 ready: Callable[[], bool] | None = None) -> None:
        self._build: Callable[[], StepTelemetry] | None = build
        self._ready = ready
        self._step: StepTelemetry | None = None

    def ready(self) -> bool:
        """Whether `resolve` would return without waiting."""
        return self._step is not None or self._ready is None or self._ready()

    def resolve(self) -> StepTelemetry:
        if self._step is None:
            self._step = self._build()
            self._build = None
        return self._step


def resolved(entry: StepTelemetry | DeferredStep | None) -> StepTelemetry | None:
    """``entry`` as a `StepTelemetry` (a `DeferredStep` resolved)."""
    return entry.resolve() if isinstance(entry, DeferredStep) else entry


class TelemetryLog:
    """The steps recorded by a sampler (keep at most ``max_steps``; None keeps all). Steps of
    the GPU path arrive as `DeferredStep`s, resolved (waited for) by `steps`."""

    def __init__(self, max_steps: int | None = None) -> None:
        self.max_steps = max_steps
        self._entries: list[StepTelemetry | DeferredStep] = []

    def steps(self) -> list[StepTelemetry]:
        """The recorded steps, oldest first; waits for the copies of deferred ones."""
        return [resolved(entry) for entry in self._entries]

    def append(self, step: StepTelemetry | DeferredStep) -> None:
        self._entries.append(step)
        if self.max_steps is not None and len(self._entries) > self.max_steps:
            del self._entries[: len(self._entries) - self.max_steps]

    def clear(self) -> None:
        self._entries.clear()

    def records(self) -> Iterator[dict[str, Any]]:
        for step in self.steps():
            yield from step.records()

    def write_jsonl(self, path: str | Path) -> int:
        """Write one JSON line per row per step; returns the number of lines."""
        lines = 0
        with open(path, "w", encoding="utf-8") as out:
            for record in self.records():
                out.write(json.dumps(record) + "\n")
                lines += 1
        return lines

    def summary(self) -> dict[str, Any]:
        """Totals: tokens, steps, fallbacks, valid-read rate, time and the backend's share."""
        steps = self.steps()
        tokens = sum(s.batch_size for s in steps)
        sampler_s = sum(s.sampler_seconds for s in steps)
        backend_s = sum(s.backend_seconds for s in steps)
        reads = sum(int(s.num_reads.sum()) for s in steps)
        valid = sum(int(s.valid_reads.sum()) for s in steps)
        timing: dict[str, float] = {}
        for s in steps:
            for key, value in s.backend_timing.items():
                timing[key] = timing.get(key, 0.0) + value
        if timing.get("chains"):  # a ratio: recomputed from the summed counts, not summed
            timing["chain_break_fraction"] = timing["chains_broken"] / timing["chains"]
        fallbacks = sum(s.fallback_count for s in steps)
        return {
            "steps": len(steps),
            "tokens": tokens,
            "fallbacks": fallbacks,
            "fallback_rate": fallbacks / tokens if tokens else 0.0,
            "valid_read_rate": valid / reads if reads else None,
            "backend_calls": sum(s.backend_calls for s in steps),
            "sampler_seconds": sampler_s,
            "backend_seconds": backend_s,
            "backend_share": backend_s / sampler_s if sampler_s else None,
            "backend_timing": timing,
        }
