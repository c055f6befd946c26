"""Sampler step-time benchmark: qsample against the classical floor, in one run.

For each batch size B, candidate count K and (mode, backend), time ``QuantumSampler.sample`` on
logits [B, V] and, in the same run on the same logits, two classical floors: torch top-k over V,
softmax at the same temperature and ``torch.multinomial`` over the same K candidates; and the
exponential race vLLM samples with (`race_floor`). Reports medians over repeats and the ratios
qsample / floor; writes everything as JSON. On a GPU (``device="cuda"``) every timed call ends
with a synchronisation, so it counts until its work is done.
"""

from __future__ import annotations

import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import cache
from ..config import SamplerConfig
from ..errors import ConfigError
from ..sampler import QuantumSampler

MS_PER_S = 1e3  # milliseconds per second: `timed_median` reports milliseconds
DEFAULT_COMBOS = (("gumbel", "batched-sa"), ("boltzmann", "batched-sa"), ("gumbel", "neal"),
                  ("boltzmann", "neal"), ("gumbel", "tabu"),
                  ("gumbel", "tree"), ("boltzmann", "tree"))


@dataclass
class BenchRow:
    mode: str
    backend: str
    batch: int
    k: int
    median_ms: float
    floor_ms: float
    ratio: float
    race_ms: float
    race_ratio: float
    per_row_ms: float
    backend_share: float | None
    fallback_rate: float
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def classical_floor(logits: torch.Tensor, k: int, temperature: float,
                    generator: torch.Generator) -> torch.Tensor:
    """torch top-k + multinomial over the same candidates: the cost of ordinary sampling (top-k
    on the raw logits, temperature applied to the K survivors only)."""
    values, ids = torch.topk(logits, k, dim=1)
    probs = torch.softmax(values.float() / temperature, dim=1)
    choice = torch.multinomial(probs, 1, generator=generator)
    return ids.gather(1, choice).squeeze(1)


def race_floor(logits: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """The exponential race vLLM's sampler uses on the same candidates: argmax p_i / q_i with
    q_i ~ Exp(1), no multinomial (no host synchronisation on a GPU)."""
    values, ids = torch.topk(logits, k, dim=1)
    probs = torch.softmax(values.float() / temperature, dim=1)
    race = probs / torch.empty_like(probs).exponential_()
    return ids.gather(1, race.argmax(dim=1, keepdim=True)).squeeze(1)


def timed_median(fn: Callable[[], Any], repeats: int,
                 sync: Callable[[], Any] | None = None) -> tuple[float, Any]:
    """(median milliseconds of ``repeats`` calls after one warm-up call, the last result);
    ``sync`` (e.g. torch.cuda.synchronize) ends each timed call, so a GPU call counts until
    its work is done."""
    result = fn()  # warm-up: imports, caches, compilation, first-call costs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if sync is not None:
            sync()
        times.append((time.perf_counter() - start) * MS_PER_S)
    return statistics.median(times), result


def run_bench(
    batches: Sequence[int] = (1, 8, 64),
    ks: Sequence[int] = (16, 64),
    combos: Sequence[tuple[str, str]] = DEFAULT_COMBOS,
    vocab: int = 49152,
    repeats: int = 5,
    temperature: float = 0.8,
    log=print,
    device: str = "cpu",
) -> list[BenchRow]:
    rows: list[BenchRow] = []
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    for k in ks:
        for batch in batches:
            logits = (torch.randn(batch, vocab, generator=torch.Generator().manual_seed(batch))
                      * 3).to(device)
            gen = torch.Generator(device=device).manual_seed(0)
            floor, _ = timed_median(
                lambda x=logits, k=k, g=gen: classical_floor(x, k, temperature, g), repeats, sync)
            race, _ = timed_median(lambda x=logits, k=k: race_floor(x, k, temperature), repeats,
                                   sync)
            for mode, backend in combos:
                config = SamplerConfig(mode=mode, backend=backend, top_k=k,
                                       temperature=temperature, seed=0)  # bad names raise
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        sampler = QuantumSampler(config)
                except ConfigError as exc:  # a backend that cannot do this K or mode
                    log(f"skip {mode}/{backend} K={k}: {exc}")
                    continue
                sampler.sample(logits)  # compile/caches, kept out of the telemetry summary
                sampler.telemetry.clear()
                median, _ = timed_median(lambda s=sampler, x=logits: s.sample(x), repeats, sync)
                summary = sampler.telemetry.summary()
                row = BenchRow(mode, backend, batch, k, median, floor, median / floor, race,
                               median / race, median / batch, summary["backend_share"],
                               summary["fallback_rate"], repeats)
                rows.append(row)
                log(format_row(row))
    return rows


def interleaved_summary(rounds: dict[str, list[dict[str, Any]]], baseline: str
                        ) -> list[dict[str, Any]]:
    """One row per arm of an interleaved benchmark, whose round i of every arm ran in group i
    (each round with ``seconds`` and ``tokens``): median seconds, median tokens/s, and the ratios
    of tokens/s to the ``baseline`` arm's round of the same group: each group's
    (``pair_ratios``), their median (``ratio_vs_plain``), min and max."""
    base_tps = [r["tokens"] / r["seconds"] for r in rounds[baseline]]
    rows = []
    for arm, arm_rounds in rounds.items():
        if len(arm_rounds) != len(base_tps):
            raise ValueError(f"arm {arm!r} has {len(arm_rounds)} rounds, {baseline!r} has "
                             f"{len(base_tps)}")
        tps = [r["tokens"] / r["seconds"] for r in arm_rounds]
        ratios = [t / b for t, b in zip(tps, base_tps, strict=True)]
        rows.append({"arm": arm, "median_s": statistics.median(r["seconds"] for r in arm_rounds),
                     "tokens_per_s": statistics.median(tps),
                     "ratio_vs_plain": statistics.median(ratios), "ratio_min": min(ratios),
                     "ratio_max": max(ratios), "pair_ratios": ratios,
                     "tokens_per_round": statistics.median(r["tokens"] for r in arm_rounds)})
    return rows


HEADER = (f"{'mode':10s} {'backend':10s} {'B':>4s} {'K':>4s} {'median ms':>10s} "
          f"{'floor ms':>9s} {'ratio':>8s} {'race ms':>8s} {'ratio':>8s} {'ms/row':>8s} "
          f"{'backend%':>8s} {'fallback':>8s}")


def format_row(row: BenchRow) -> str:
    share = f"{100 * row.backend_share:7.1f}%" if row.backend_share is not None else "       -"
    return (f"{row.mode:10s} {row.backend:10s} {row.batch:4d} {row.k:4d} {row.median_ms:10.2f} "
            f"{row.floor_ms:9.3f} {row.ratio:7.2f}x {row.race_ms:8.3f} {row.race_ratio:7.2f}x "
            f"{row.per_row_ms:8.3f} {share} "
            f"{row.fallback_rate:8.4f}")


def format_table(rows: Sequence[BenchRow]) -> str:
    return "\n".join([HEADER, *(format_row(r) for r in rows)])


def write_report(path: str | Path, benchmark: str, rows: Sequence[dict[str, Any]],
                 **meta: Any) -> None:
    """Write a benchmark's rows as JSON with the machine it ran on (every qsample benchmark)."""
    payload = {
        "benchmark": benchmark,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "processor": platform.processor()},
        **meta,
        "rows": list(rows),
    }
    cache.write_json(path, payload)


def write_json(rows: Sequence[BenchRow], path: str | Path, **meta: Any) -> None:
    write_report(path, "qsample sampler step time vs classical floor (torch top-k + multinomial)",
                 [r.to_dict() for r in rows], **meta)
