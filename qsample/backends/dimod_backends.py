"""Backends built on the dimod `Sampler` API: dwave-neal, tabu, tree decomposition, exact
enumeration, and any user-supplied ``dimod.Sampler``.

No dimod sampler accepts a list of BQMs, so a step is solved either part by part (a row, or a
group of coupled sibling rows: `OneHotProblems.components`) or as the union of its rows in one
call (independent components stay independent under single-spin-flip dynamics, so each
component's slice of a union read is a read of that part).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .. import rng
from ..annealer.core import ramp
from ..errors import ConfigError
from ..problems import OneHotProblems
from .base import THERMAL_BETA, Backend, Failures, RejectedResult, SolveRequest, SolveResult

TABU_TIMEOUT_MS = 1  # tabu's search time per row and read
# default K of the exact backends (`Backend.default_top_k`): tree's cost grows with K (its
# treewidth), exact's with 2^K states per row
TREE_DEFAULT_TOP_K = 16
EXACT_DEFAULT_TOP_K = 12


def records(sampleset, labels: np.ndarray) -> np.ndarray:
    """Reads [R, len(labels)] of a SampleSet, columns in the order of ``labels``, one row per
    occurrence. Raises `RejectedResult` on missing variables or non-binary values."""
    record = sampleset.record
    variables = list(sampleset.variables)
    if len(variables) != len(labels):
        raise RejectedResult(
            f"backend returned {len(variables)} variables, expected {len(labels)}"
        )
    try:
        index = {v: n for n, v in enumerate(variables)}
        columns = np.fromiter((index[int(v)] for v in labels), dtype=np.int64, count=len(labels))
    except (KeyError, TypeError, ValueError):
        raise RejectedResult("backend returned samples over unexpected variables") from None
    samples = np.asarray(record.sample)
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise RejectedResult(f"backend returned samples of shape {samples.shape}")
    samples = samples[:, columns]
    if not np.isin(samples, (0, 1)).all():
        raise RejectedResult("backend returned non-binary values")
    occurrences = np.asarray(record.num_occurrences, dtype=np.int64)
    if (occurrences != 1).any():
        samples = np.repeat(samples, np.maximum(occurrences, 0), axis=0)
    return samples.astype(np.int8)


def union_reads(sampleset, problems: OneHotProblems) -> np.ndarray:
    """Reads [B, R, K] of every row from a SampleSet of ``problems.union_bqm()``."""
    return problems.split_union(records(sampleset, problems.union_labels))


def _declared(sampler: Any) -> Mapping[str, Any]:
    """The keyword arguments ``sampler`` declares (dimod's ``parameters``; none if absent)."""
    return getattr(sampler, "parameters", None) or {}


def add_timing(total: dict[str, float], info: dict) -> None:
    """Add a SampleSet info's numeric ``timing`` fields to ``total``."""
    for key, value in (info.get("timing") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0.0) + float(value)


class DimodBackend(Backend):
    """Wraps a ``dimod.Sampler``: maps a `SolveRequest` to sampler keyword arguments.

    Subclasses override `sampler_for` and `keywords`; this class passes the generic ones the
    sampler declares in ``sampler.parameters`` (``num_reads``, ``num_sweeps``, ``beta_range``;
    for ``thermal`` also ``beta``, and ``beta_range=[beta, beta]``, at beta = `THERMAL_BETA`),
    and each call's ``seed`` to samplers that declare one, and treats it as able to do both tasks
    (faithfulness is the user's claim).
    """

    default_batching = "per-row"
    couplings = True  # a coupled group is one BQM

    def __init__(self, sampler: Any = None, name: str | None = None) -> None:
        self.sampler = sampler
        if name is not None:
            self.name = name
        elif sampler is not None:
            self.name = type(sampler).__name__

    def sampler_for(self, task: str):
        return self.sampler

    def allowed_params(self) -> tuple[str, ...] | None:
        """The keywords the wrapped samplers declare in ``parameters`` (dimod's convention);
        None when a sampler declares none."""
        if self.params is not None:
            return self.params
        declared: list[str] = []
        for task in self.tasks:
            parameters = getattr(self.sampler_for(task), "parameters", None)
            if parameters is None:
                return None
            declared += [name for name in parameters if name not in declared]
        return tuple(declared)

    def keywords(self, request: SolveRequest) -> dict[str, Any]:
        """The sampler's keyword arguments for ``request`` but the seed and ``backend_params``
        (`settings` adds them)."""
        declared = _declared(self.sampler_for(request.task))
        thermal = request.task == "thermal"
        if thermal:  # a fixed inverse temperature, however it is spelled
            beta_range = [THERMAL_BETA, THERMAL_BETA]
        else:
            beta_range = list(request.beta_range) if request.beta_range else None
        candidates = {
            "num_reads": request.num_reads,
            "num_sweeps": request.num_sweeps,
            "beta_range": beta_range,
            "beta": THERMAL_BETA if thermal else None,
        }
        return {k: v for k, v in candidates.items() if k in declared and v is not None}

    def settings(self, request: SolveRequest) -> dict[str, Any]:
        """``union``: solve a step as one disjoint union (``batching``, "auto" taking
        ``default_batching``); ``seeded``: the sampler takes a ``seed``; ``keywords``: `keywords`
        with ``backend_params`` over them."""
        batching = request.batching if request.batching != "auto" else self.default_batching
        return {"union": batching == "union",
                "seeded": "seed" in _declared(self.sampler_for(request.task)),
                "keywords": {**self.keywords(request), **request.params}}

    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        if request.settings["union"] and problems.batch_size > 1:
            return self._solve_union(problems, request)
        return self._solve_rows(problems, request)

    def run(self, bqm, request: SolveRequest, seed: int, keys: np.ndarray):
        """One sampler call with the resolved keywords and, where the sampler takes one,
        ``seed`` (a ``seed`` in ``backend_params`` wins); returns the SampleSet (subclasses may
        post-process)."""
        settings = request.settings
        seeded = {"seed": seed} if settings["seeded"] else {}
        return self.sampler_for(request.task).sample(bqm, **{**seeded, **settings["keywords"]})

    def _solve_rows(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        """One sampler call per independent part (`OneHotProblems.components`: a row, or a
        group of coupled siblings), keyed by the part's first row."""
        batch, width = problems.batch_size, problems.width
        seeds = rng.seeds31(request.keys)
        parts = problems.components()
        reads: list[np.ndarray | None] = [None] * len(parts)
        failures = Failures.none(batch)
        timing: dict[str, float] = {}
        seconds = 0.0
        for n, rows in enumerate(parts):  # the sampler API takes one BQM per call
            part = problems.take(rows)
            start = time.perf_counter()
            try:
                sampleset = self.run(part.union_bqm(), request, int(seeds[rows[0]]),
                                     request.keys[rows[:1]])
                reads[n] = union_reads(sampleset, part)
                add_timing(timing, sampleset.info)
            except ConfigError:
                raise
            except Exception as exc:
                failures.mark_exception(rows, exc)
            seconds += time.perf_counter() - start
        most = max((r.shape[1] for r in reads if r is not None), default=1)
        states = np.zeros((batch, most, width), dtype=np.int8)
        read_mask = np.zeros((batch, most), dtype=bool)
        for rows, r in zip(parts, reads, strict=True):
            if r is not None:
                states[rows, : r.shape[1]] = r
                read_mask[rows, : r.shape[1]] = True
        return SolveResult(states, read_mask, failures, seconds, len(parts), timing)

    def _solve_union(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        batch, width = problems.batch_size, problems.width
        start = time.perf_counter()
        bqm = problems.union_bqm()
        seed = int(rng.seeds31(rng.combine(request.keys.sum(dtype=np.uint64), batch)[None])[0])
        timing: dict[str, float] = {}
        try:
            sampleset = self.run(bqm, request, seed, request.keys)
            states = union_reads(sampleset, problems)
            add_timing(timing, sampleset.info)
        except ConfigError:
            raise
        except Exception as exc:
            return SolveResult.from_error(batch, width, exc, time.perf_counter() - start, 1, timing)
        return SolveResult(states, np.ones(states.shape[:2], bool), Failures.none(batch),
                           time.perf_counter() - start, 1, timing)


class NealBackend(DimodBackend):
    """dwave-neal simulated annealing (``dwave.samplers.SimulatedAnnealingSampler``).

    ``ground``: anneal over ``beta_range`` (always explicit: neal's default range is recomputed
    every call and is too hot for one-hot penalties). ``thermal``: a fixed-temperature chain,
    ``beta_range=[beta, beta]``, Gibbs acceptance. Rows are solved as one disjoint union by
    default (one call per step).
    """

    name = "neal"
    tasks = ("ground", "thermal")
    default_batching = "union"
    probe = True

    def __init__(self) -> None:
        from dwave.samplers import SimulatedAnnealingSampler

        super().__init__(SimulatedAnnealingSampler(), "neal")

    def keywords(self, request: SolveRequest) -> dict[str, Any]:
        args: dict[str, Any] = {
            "num_reads": request.num_reads,
            "num_sweeps": request.num_sweeps,
            "beta_schedule_type": request.beta_schedule,
        }
        if request.task == "thermal":
            args["beta_range"] = [THERMAL_BETA, THERMAL_BETA]
            args["proposal_acceptance_criteria"] = "Gibbs"
        else:
            args["beta_range"] = list(request.beta_range)
        return args


class TabuBackend(DimodBackend):
    """Tabu search (``dwave.samplers.TabuSampler``): a ground-state optimiser, ``gumbel`` only."""

    name = "tabu"
    tasks = ("ground",)
    probe = True

    def __init__(self) -> None:
        from dwave.samplers import TabuSampler

        super().__init__(TabuSampler(), "tabu")

    def default_num_reads(self, task: str) -> int | None:
        return 1  # tabu escapes local minima itself; restarts cost a full timeout each

    def keywords(self, request: SolveRequest) -> dict[str, Any]:
        return {"num_reads": request.num_reads, "timeout": TABU_TIMEOUT_MS}


class TreeBackend(DimodBackend):
    """Exact tree-decomposition algorithms from dwave-samplers, the reference backend.

    ``thermal``: ``TreeDecompositionSampler`` draws exact Boltzmann samples at ``beta``.
    ``ground``: ``TreeDecompositionSolver`` returns the exact ground state. A one-hot clique of K
    variables has treewidth K - 1, so K <= 25.
    """

    name = "tree"
    tasks = ("ground", "thermal")
    max_size = 25
    default_top_k = TREE_DEFAULT_TOP_K
    probe = True

    def __init__(self) -> None:
        from dwave.samplers import TreeDecompositionSampler, TreeDecompositionSolver

        super().__init__(TreeDecompositionSampler(), "tree")
        self.solver = TreeDecompositionSolver()

    def default_num_reads(self, task: str) -> int | None:
        return 1 if task == "ground" else None  # the solver's one read is the exact optimum

    def sampler_for(self, task: str):
        return self.sampler if task == "thermal" else self.solver

    def keywords(self, request: SolveRequest) -> dict[str, Any]:
        if request.task == "ground":
            return {"num_reads": request.num_reads}
        return {"num_reads": request.num_reads, "beta": THERMAL_BETA, "marginals": False}


class ExactBackend(DimodBackend):
    """Exhaustive enumeration with ``dimod.ExactSolver`` (2^K states, so K <= 20).

    ``ground``: the lowest-energy state. ``thermal``: ``num_reads`` independent draws from the
    enumerated Boltzmann distribution exp(-E) / Z (`THERMAL_BETA`), with qsample's counter-based
    generator.
    """

    name = "exact"
    tasks = ("ground", "thermal")
    max_size = 20
    default_top_k = EXACT_DEFAULT_TOP_K
    probe = True

    def __init__(self) -> None:
        import dimod

        super().__init__(dimod.ExactSolver(), "exact")

    def default_num_reads(self, task: str) -> int | None:
        return 1 if task == "ground" else None

    def keywords(self, request: SolveRequest) -> dict[str, Any]:
        return {}

    def run(self, bqm, request: SolveRequest, seed: int, keys: np.ndarray):
        import dimod

        sampleset = super().run(bqm, request, seed, keys)  # every state, once
        energies = np.asarray(sampleset.record.energy, dtype=np.float64)
        if request.task == "ground":
            picks = np.argmin(energies)[None]
        else:
            weights = np.exp(-THERMAL_BETA * (energies - energies.min()))
            probs = np.broadcast_to(weights / weights.sum(), (request.num_reads, len(weights)))
            draw_keys = rng.combine(keys[0], np.arange(request.num_reads))
            picks = rng.categorical(draw_keys, np.ascontiguousarray(probs), rng.STREAM_THERMAL)
        return dimod.SampleSet.from_samples(
            (sampleset.record.sample[picks], list(sampleset.variables)),
            sampleset.vartype,
            energy=energies[picks],
        )


class SQABackend(DimodBackend):
    """Simulated quantum annealing: path-integral Monte Carlo of the transverse-field Ising model
    H = beta (E(x) - Gamma sum_i sigma^x_i) (``dwave.samplers.PathIntegralAnnealingSampler``), a
    classical stand-in for quantum dynamics.

    ``ground``: the longitudinal inverse temperature follows ``beta_range`` while the transverse
    field falls linearly from ``gamma`` (default 2) to 0, i.e. a quantum anneal.
    ``thermal``: beta = `THERMAL_BETA` with a constant transverse field ``gamma`` (default 0.5):
    the stationary distribution is that of the quantum model, not exp(-E), so ``boltzmann`` with
    ``sqa`` is *not* faithful; the warning gives the measured distance
    (`qsample.backends.measured`), and `qsample calibrate` measures it for your settings.
    ``backend_params={"gamma": ...}`` sets the field.
    """

    name = "sqa"
    tasks = ("ground", "thermal")
    default_batching = "union"
    gamma: ClassVar[dict[str, float]] = {"ground": 2.0, "thermal": 0.5}
    probe = True

    def __init__(self) -> None:
        from dwave.samplers import PathIntegralAnnealingSampler

        super().__init__(PathIntegralAnnealingSampler(), "sqa")

    def allowed_params(self) -> tuple[str, ...] | None:
        return (*super().allowed_params(), "gamma")

    def keywords(self, request: SolveRequest) -> dict[str, Any]:
        gamma = float(request.params.get("gamma", self.gamma[request.task]))
        sweeps = request.num_sweeps
        betas = request.betas()
        if request.task == "thermal":
            fields = np.full(sweeps, gamma)
        else:  # the transverse field falls linearly to 0
            fields = ramp(sweeps, "linear", gamma, 0.0)
        return {"num_reads": request.num_reads, "Hp_field": betas, "Hd_field": betas * fields,
                "beta_schedule_type": "custom"}

    def settings(self, request: SolveRequest) -> dict[str, Any]:
        settings = super().settings(request)
        settings["keywords"].pop("gamma", None)  # qsample's own parameter, in Hd_field
        return settings
