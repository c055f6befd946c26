"""Annealer benchmark: `batched-sa` against dwave-neal on the same BQMs, in one run.

For each K and B, B one-hot problems of a ``gumbel`` step (w = Gumbel noise shifted to max 0,
A = 1) are solved with the same reads, sweeps and geometric schedule by:

- ``neal per-row``: one ``SimulatedAnnealingSampler.sample`` call per problem (BQMs prebuilt);
- ``neal union``: one call on the disjoint union of the B problems (prebuilt; skipped above
  ``MAX_UNION_INTERACTIONS`` couplings);
- ``batched-sa one-hot``: `qsample.annealer.anneal_onehot`, the structured O(1)-per-flip path;
- ``batched-sa dense``: `qsample.annealer.anneal_dense` on the same BQMs as dense arrays (the
  generic path any BQM takes);
- ``batched-sa sample_batch``: `BatchedSimulatedAnnealingSampler.sample_batch` on the same
  prebuilt dimod BQMs, one call (what a dimod user pays on top of the dense kernel: turning
  BQM objects into arrays and reads into SampleSets).

Reported: median milliseconds per step, spin-flip attempts per second (B R S K / time), the
speed-up over neal per-row, and the fraction of problems whose best read is the ground state
(the argmax of w), so that speed is compared at equal quality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import rng
from ..annealer import (
    BatchedSimulatedAnnealingSampler,
    anneal_dense,
    anneal_onehot,
    beta_schedule,
)
from ..problems import OneHotProblems
from .bench import timed_median

MAX_UNION_INTERACTIONS = 4_000_000
ARMS = ("neal per-row", "neal union", "batched-sa one-hot", "batched-sa dense",
        "batched-sa sample_batch")


@dataclass
class AnnealRow:
    arm: str
    batch: int
    k: int
    num_reads: int
    num_sweeps: int
    median_ms: float
    flips_per_second: float
    speedup_vs_neal_per_row: float | None
    ground_state_rate: float
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def gumbel_problems(batch: int, k: int, seed: int = 0) -> OneHotProblems:
    """B one-hot problems as a ``gumbel`` step builds them: w = g - max(g), A = 1."""
    g = rng.gumbel(rng.row_keys(seed, k, batch), k)
    return OneHotProblems(g - g.max(axis=1, keepdims=True), np.ones(batch),
                          np.full(batch, k, dtype=np.int64))


def _best_choice(problems: OneHotProblems, states: np.ndarray) -> np.ndarray:
    """[B] index of the best valid read's one-hot position (-1 if no valid read)."""
    energies = problems.energies(states)
    valid = states.sum(axis=2) == 1
    pick = np.argmin(np.where(valid, energies, np.inf), axis=1)
    rows = np.arange(states.shape[0])
    return np.where(valid.any(axis=1), states[rows, pick].argmax(axis=1), -1)


def run_anneal_bench(batches: Sequence[int] = (1, 8, 64, 256),
                     ks: Sequence[int] = (16, 64, 256), num_reads: int = 5,
                     num_sweeps: int = 30, beta_range: tuple[float, float] = (0.1, 10.0),
                     repeats: int = 3, arms: Sequence[str] | None = None,
                     log: Callable[[str], None] = print) -> list[AnnealRow]:
    """Time every arm on the same problems; see the module docstring."""
    from dwave.samplers import SimulatedAnnealingSampler

    neal = SimulatedAnnealingSampler()
    arms = tuple(arms or ARMS)
    batched = BatchedSimulatedAnnealingSampler()
    betas = beta_schedule(num_sweeps, "geometric", beta_range)
    neal_args = dict(num_reads=num_reads, num_sweeps=num_sweeps, beta_range=list(beta_range),
                     beta_schedule_type="geometric")
    rows: list[AnnealRow] = []
    log(HEADER)
    for k in ks:
        for batch in batches:
            problems = gumbel_problems(batch, k)
            keys = rng.row_keys(1, 0, batch)
            seeds = rng.seeds31(keys)
            runs: dict[str, Callable[[], np.ndarray]] = {}
            bqms = [problems.to_bqm(b) for b in range(batch)]
            if "neal per-row" in arms:

                def per_row(bqms=bqms, seeds=seeds) -> np.ndarray:
                    return np.stack([np.asarray(neal.sample(bqm, seed=int(s), **neal_args)
                                                .record.sample, dtype=np.int8)
                                     for bqm, s in zip(bqms, seeds, strict=True)])

                runs["neal per-row"] = per_row
            if "neal union" in arms and batch * k * (k - 1) // 2 <= MAX_UNION_INTERACTIONS:
                union = problems.union_bqm()

                def union_call(union=union, batch=batch, k=k, seed=int(seeds[0])) -> np.ndarray:
                    sampleset = neal.sample(union, seed=seed, **neal_args)
                    order = np.argsort(np.asarray(sampleset.variables, dtype=np.int64))
                    samples = np.asarray(sampleset.record.sample, dtype=np.int8)[:, order]
                    return samples.reshape(num_reads, batch, k).transpose(1, 0, 2)

                runs["neal union"] = union_call
            if "batched-sa one-hot" in arms:
                runs["batched-sa one-hot"] = lambda p=problems, keys=keys: anneal_onehot(
                    p.weights, p.penalty, p.sizes, betas=betas, num_reads=num_reads,
                    keys=keys).states
            if "batched-sa dense" in arms:
                linear, quadratic = problems.linear, problems.dense_quadratic()
                runs["batched-sa dense"] = lambda p=problems, h=linear, j=quadratic, keys=keys: (
                    anneal_dense(h, j, p.offset, p.sizes, betas=betas, num_reads=num_reads,
                                 keys=keys).states)
            if "batched-sa sample_batch" in arms:
                def batch_call(bqms=bqms, seed=int(seeds[0])) -> np.ndarray:
                    sets = batched.sample_batch(bqms, seed=seed, **neal_args)
                    return np.stack([np.asarray(s.record.sample, dtype=np.int8) for s in sets])

                runs["batched-sa sample_batch"] = batch_call
            reference = None
            argmax = problems.weights.argmax(axis=1)
            for arm in arms:
                if arm not in runs:
                    log(f"skip {arm} B={batch} K={k}: union of "
                        f"{batch * k * (k - 1) // 2:,} couplings")
                    continue
                median, states = timed_median(runs[arm], repeats)
                if arm == "neal per-row":
                    reference = median
                attempts = batch * num_reads * num_sweeps * k
                row = AnnealRow(
                    arm, batch, k, num_reads, num_sweeps, median, attempts / (median / 1e3),
                    reference / median if reference is not None else None,
                    float((_best_choice(problems, states) == argmax).mean()), repeats)
                rows.append(row)
                log(format_row(row))
    return rows


HEADER = (f"{'arm':23s} {'B':>4s} {'K':>4s} {'median ms':>10s} {'flips/s':>10s} "
          f"{'vs neal/row':>11s} {'ground %':>8s}")


def format_row(row: AnnealRow) -> str:
    speedup = (f"{row.speedup_vs_neal_per_row:10.1f}x" if row.speedup_vs_neal_per_row
               else f"{'-':>11s}")
    return (f"{row.arm:23s} {row.batch:4d} {row.k:4d} {row.median_ms:10.3f} "
            f"{row.flips_per_second:10.3g} {speedup} {100 * row.ground_state_rate:7.1f}%")


# ---------------------------------------------------------------- sparse and mixed BQMs

@dataclass
class SparseRow:
    case: str
    variables: int
    couplings: int
    arm: str
    median_ms: float
    speedup_vs_neal: float | None
    mean_energy: float
    dense_mb: float | None  # the dense path's J arrays (None: the arm does not build them)
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sparse_cases(seed: int = 0) -> dict[str, list]:
    """The benchmark's BQMs: ±1 couplings on D-Wave's Chimera C16 and Pegasus P16 graphs (one
    BQM each), and a mixed batch of 63 BQMs of 4 variables with one of 1,000 (all ``ran_r``)."""
    import dimod
    from dwave.graphs import chimera_graph, pegasus_graph

    return {
        "chimera C16": [dimod.generators.ran_r(1, chimera_graph(16), seed=seed)],
        "pegasus P16": [dimod.generators.ran_r(1, pegasus_graph(16), seed=seed)],
        "mixed 63x4 + 1x1000": [dimod.generators.ran_r(1, 4, seed=seed + s) for s in range(63)]
        + [dimod.generators.ran_r(1, 1000, seed=seed + 63)],
    }


def run_sparse_bench(num_reads: int = 5, num_sweeps: int = 100, repeats: int = 3,
                     dense: bool = True, log: Callable[[str], None] = print) -> list[SparseRow]:
    """neal (one ``sample`` call per BQM) against `BatchedSimulatedAnnealingSampler`
    (``sample_batch``, all BQMs in one call; compressed rows where they pay) and, with
    ``dense``, the same sampler forced onto padded dense arrays, on `sparse_cases`; neal's
    default beta range for every arm."""
    from dwave.samplers import SimulatedAnnealingSampler

    neal = SimulatedAnnealingSampler()
    batched = BatchedSimulatedAnnealingSampler()
    dense_only = BatchedSimulatedAnnealingSampler(sparse_share=0.0)
    args = dict(num_reads=num_reads, num_sweeps=num_sweeps, seed=3)
    rows: list[SparseRow] = []
    log(SPARSE_HEADER)
    for case, bqms in sparse_cases().items():
        variables = sum(b.num_variables for b in bqms)
        couplings = sum(b.num_interactions for b in bqms)
        width = max(b.num_variables for b in bqms)
        runs = {"neal": lambda bqms=bqms: [neal.sample(b, **args) for b in bqms],
                "batched-sa": lambda bqms=bqms: batched.sample_batch(bqms, **args)}
        if dense:  # every batch on padded dense arrays
            runs["batched-sa dense"] = lambda bqms=bqms: dense_only.sample_batch(bqms, **args)
        reference = None
        for arm, run in runs.items():
            median, sets = timed_median(run, repeats)
            reference = median if arm == "neal" else reference
            row = SparseRow(case, variables, couplings, arm, median,
                            reference / median if arm != "neal" else None,
                            float(np.mean([s.record.energy.mean() for s in sets])),
                            len(bqms) * width * width * 8 / 2**20 if arm.endswith("dense")
                            else None, repeats)
            rows.append(row)
            log(format_sparse_row(row))
    return rows


SPARSE_HEADER = (f"{'case':22s} {'vars':>6s} {'couplings':>9s} {'arm':17s} {'median ms':>10s} "
                 f"{'vs neal':>8s} {'mean E':>10s} {'dense J MB':>10s}")


def format_sparse_row(row: SparseRow) -> str:
    speedup = f"{row.speedup_vs_neal:7.1f}x" if row.speedup_vs_neal else f"{'-':>8s}"
    dense = f"{row.dense_mb:10.0f}" if row.dense_mb is not None else f"{'-':>10s}"
    return (f"{row.case:22s} {row.variables:6d} {row.couplings:9d} {row.arm:17s} "
            f"{row.median_ms:10.2f} {speedup} {row.mean_energy:10.1f} {dense}")
