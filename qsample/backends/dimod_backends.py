"""Backends built on the dimod `Sampler` API: dwave-neal, tabu, tree decomposition, exact
enumeration, and any user-supplied ``dimod.Sampler``.

No dimod sampler accepts a list of BQMs, so a step is solved either row by row or as the
disjoint union of its rows in one call (independent components stay independent under
single-spin-flip dynamics, so each component's slice of a union read is a read of that row).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from .. import rng
from ..errors import ConfigError
from ..problems import OneHotProblems
from .base import Backend, SolveRequest, SolveResult


class MalformedSamples(ValueError):
    """A backend returned samples that do not fit the problem."""


def _records(sampleset, labels: np.ndarray) -> np.ndarray:
    """Reads [R, len(labels)] of a SampleSet, columns in the order of ``labels``, one row per
    occurrence. Raises `MalformedSamples` on missing variables or non-binary values."""
    record = sampleset.record
    variables = list(sampleset.variables)
    if len(variables) != len(labels):
        raise MalformedSamples(
            f"backend returned {len(variables)} variables, expected {len(labels)}"
        )
    try:
        index = {v: n for n, v in enumerate(variables)}
        columns = np.fromiter((index[int(v)] for v in labels), dtype=np.int64, count=len(labels))
    except (KeyError, TypeError, ValueError):
        raise MalformedSamples("backend returned samples over unexpected variables") from None
    samples = np.asarray(record.sample)
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise MalformedSamples(f"backend returned samples of shape {samples.shape}")
    samples = samples[:, columns]
    if not np.isin(samples, (0, 1)).all():
        raise MalformedSamples("backend returned non-binary values")
    occurrences = np.asarray(record.num_occurrences, dtype=np.int64)
    if (occurrences != 1).any():
        samples = np.repeat(samples, np.maximum(occurrences, 0), axis=0)
    return samples.astype(np.int8)


def _add_timing(total: dict[str, float], info: dict) -> None:
    for key, value in (info.get("timing") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0.0) + float(value)


class DimodBackend(Backend):
    """Wraps a ``dimod.Sampler``: maps a `SolveRequest` to sampler keyword arguments.

    Subclasses override `sampler_for` and `arguments`; this class passes the generic ones the
    sampler declares in ``sampler.parameters`` (``num_reads``, ``seed``, ``num_sweeps``,
    ``beta_range``; for ``thermal`` also ``beta``, and ``beta_range=[beta, beta]``) and treats it
    as able to do both tasks (faithfulness is the user's claim).
    """

    default_batching = "per-row"

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

    def arguments(self, request: SolveRequest, seed: int) -> dict[str, Any]:
        declared = getattr(self.sampler, "parameters", {}) or {}
        if request.task == "thermal":  # a fixed inverse temperature, however it is spelled
            beta_range = [request.beta, request.beta]
        else:
            beta_range = list(request.beta_range) if request.beta_range else None
        candidates = {
            "num_reads": request.num_reads,
            "seed": seed,
            "num_sweeps": request.num_sweeps,
            "beta_range": beta_range,
            "beta": request.beta if request.task == "thermal" else None,
        }
        args = {k: v for k, v in candidates.items() if k in declared and v is not None}
        args.update(request.params)
        return args

    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        batching = request.batching if request.batching != "auto" else self.default_batching
        if batching == "union" and problems.batch_size > 1:
            return self._solve_union(problems, request)
        return self._solve_rows(problems, request)

    def run(self, bqm, request: SolveRequest, seed: int, keys: np.ndarray):
        """One sampler call; returns the SampleSet (subclasses may post-process)."""
        return self.sampler_for(request.task).sample(bqm, **self.arguments(request, seed))

    def _solve_rows(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        batch, width = problems.batch_size, problems.width
        seeds = rng.seeds31(request.keys)
        reads: list[np.ndarray | None] = [None] * batch
        failures = np.full(batch, None, dtype=object)
        timing: dict[str, float] = {}
        seconds = 0.0
        for row in range(batch):  # the sampler API takes one BQM per call
            bqm = problems.to_bqm(row)
            start = time.perf_counter()
            try:
                sampleset = self.run(bqm, request, int(seeds[row]), request.keys[row : row + 1])
                reads[row] = _records(sampleset, np.arange(int(problems.sizes[row])))
                _add_timing(timing, sampleset.info)
            except ConfigError:
                raise
            except Exception as exc:
                failures[row] = f"{type(exc).__name__}: {exc}"
            seconds += time.perf_counter() - start
        most = max((r.shape[0] for r in reads if r is not None), default=1)
        states = np.zeros((batch, most, width), dtype=np.int8)
        read_mask = np.zeros((batch, most), dtype=bool)
        for row, r in enumerate(reads):
            if r is not None:
                states[row, : r.shape[0], : r.shape[1]] = r
                read_mask[row, : r.shape[0]] = True
        return SolveResult(states, read_mask, failures, seconds, batch, timing)

    def _solve_union(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        batch, width = problems.batch_size, problems.width
        failures = np.full(batch, None, dtype=object)
        start = time.perf_counter()
        bqm = problems.union_bqm()
        labels = np.flatnonzero(problems.variable_mask.ravel())
        seed = int(rng.seeds31(rng.combine(request.keys.sum(dtype=np.uint64), batch)[None])[0])
        timing: dict[str, float] = {}
        try:
            sampleset = self.run(bqm, request, seed, request.keys)
            samples = _records(sampleset, labels)
            _add_timing(timing, sampleset.info)
        except ConfigError:
            raise
        except Exception as exc:
            failures[:] = f"{type(exc).__name__}: {exc}"
            states = np.zeros((batch, 1, width), dtype=np.int8)
            return SolveResult(states, np.zeros((batch, 1), bool), failures,
                               time.perf_counter() - start, 1, timing)
        reads = samples.shape[0]
        states = np.zeros((batch * width, reads), dtype=np.int8)
        states[labels] = samples.T
        states = states.reshape(batch, width, reads).transpose(0, 2, 1)
        seconds = time.perf_counter() - start
        return SolveResult(np.ascontiguousarray(states), np.ones((batch, reads), bool), failures,
                           seconds, 1, timing)


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
    thermal_measured_k = 256  # boltzmann defaults measured faithful up to here
    probe = True

    def __init__(self) -> None:
        from dwave.samplers import SimulatedAnnealingSampler

        super().__init__(SimulatedAnnealingSampler(), "neal")

    def arguments(self, request: SolveRequest, seed: int) -> dict[str, Any]:
        args: dict[str, Any] = {
            "num_reads": request.num_reads,
            "num_sweeps": request.num_sweeps,
            "seed": seed,
            "beta_schedule_type": request.beta_schedule,
        }
        if request.task == "thermal":
            args["beta_range"] = [request.beta, request.beta]
            args["proposal_acceptance_criteria"] = "Gibbs"
        else:
            args["beta_range"] = list(request.beta_range)
        args.update(request.params)
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

    def fidelity_warning(self, task: str, top_k: int) -> str | None:
        return ("backend 'tabu' is a heuristic optimiser: with its default 1 ms per row it misses "
                "near-tied ground states (about 8% of draws at K = 16, total variation 0.07 to "
                "0.11 from the target), so gumbel/tabu is not faithful")

    def arguments(self, request: SolveRequest, seed: int) -> dict[str, Any]:
        args: dict[str, Any] = {"num_reads": request.num_reads, "seed": seed, "timeout": 1}
        args.update(request.params)
        return args


class TreeBackend(DimodBackend):
    """Exact tree-decomposition algorithms from dwave-samplers, the reference backend.

    ``thermal``: ``TreeDecompositionSampler`` draws exact Boltzmann samples at ``beta``.
    ``ground``: ``TreeDecompositionSolver`` returns the exact ground state. A one-hot clique of K
    variables has treewidth K - 1, so K <= 25.
    """

    name = "tree"
    tasks = ("ground", "thermal")
    max_size = 25
    probe = True

    def __init__(self) -> None:
        from dwave.samplers import TreeDecompositionSampler, TreeDecompositionSolver

        super().__init__(TreeDecompositionSampler(), "tree")
        self.solver = TreeDecompositionSolver()

    def default_num_reads(self, task: str) -> int | None:
        return 1 if task == "ground" else None  # the solver's one read is the exact optimum

    def sampler_for(self, task: str):
        return self.sampler if task == "thermal" else self.solver

    def arguments(self, request: SolveRequest, seed: int) -> dict[str, Any]:
        if request.task == "ground":
            args: dict[str, Any] = {"num_reads": request.num_reads}
        else:
            args = {"num_reads": request.num_reads, "beta": request.beta,
                    "marginals": False, "seed": seed}
        args.update(request.params)
        return args


class ExactBackend(DimodBackend):
    """Exhaustive enumeration with ``dimod.ExactSolver`` (2^K states, so K <= 20).

    ``ground``: the lowest-energy state. ``thermal``: ``num_reads`` independent draws from the
    enumerated Boltzmann distribution exp(-beta E) / Z, with qsample's counter-based generator.
    """

    name = "exact"
    tasks = ("ground", "thermal")
    max_size = 20
    probe = True

    def __init__(self) -> None:
        import dimod

        super().__init__(dimod.ExactSolver(), "exact")

    def default_num_reads(self, task: str) -> int | None:
        return 1 if task == "ground" else None

    def arguments(self, request: SolveRequest, seed: int) -> dict[str, Any]:
        return dict(request.params)

    def run(self, bqm, request: SolveRequest, seed: int, keys: np.ndarray):
        import dimod

        sampleset = self.sampler.sample(bqm, **self.arguments(request, seed))
        energies = np.asarray(sampleset.record.energy, dtype=np.float64)
        if request.task == "ground":
            picks = np.argmin(energies)[None]
        else:
            weights = np.exp(-request.beta * (energies - energies.min()))
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
    ``thermal``: a fixed ``beta`` with a constant transverse field ``gamma`` (default 0.5): the
    stationary distribution is that of the quantum model, not exp(-beta E), so ``boltzmann`` with
    ``sqa`` is *not* faithful; the warning gives the measured distance, and `qsample calibrate`
    measures it for your settings. ``backend_params={"gamma": ...}`` sets the field.
    """

    name = "sqa"
    tasks = ("ground", "thermal")
    default_batching = "union"
    gamma: ClassVar[dict[str, float]] = {"ground": 2.0, "thermal": 0.5}
    measured: ClassVar[dict[str, str]] = {
        "ground": "TV 0.019 (flat) and 0.006 (peaked) at K = 16, 5,000 draws: at the noise floor",
        "thermal": "TV 0.049 at K = 16 on peaked logits (chi-square p = 1e-60), 0.022 on flat"}
    probe = True

    def __init__(self) -> None:
        from dwave.samplers import PathIntegralAnnealingSampler

        super().__init__(PathIntegralAnnealingSampler(), "sqa")

    def allowed_params(self) -> tuple[str, ...] | None:
        return (*super().allowed_params(), "gamma")

    def fidelity_warning(self, task: str, top_k: int) -> str | None:
        return (f"backend 'sqa' (path-integral Monte Carlo with a transverse field) is a stand-in "
                f"for quantum dynamics, not a calibrated sampler: measured {self.measured[task]} "
                f"at default settings; check yours with 'qsample fidelity' or 'qsample calibrate'")

    def arguments(self, request: SolveRequest, seed: int) -> dict[str, Any]:
        params = dict(request.params)
        gamma = float(params.pop("gamma", self.gamma[request.task]))
        sweeps = request.num_sweeps
        if request.task == "thermal":
            betas = np.full(sweeps, request.beta)
            fields = np.full(sweeps, gamma)
        else:
            hot, cold = request.beta_range
            betas = (np.geomspace if request.beta_schedule == "geometric" else np.linspace)(
                hot, cold, sweeps)
            fields = gamma * np.linspace(1.0, 0.0, sweeps)
        args: dict[str, Any] = {"num_reads": request.num_reads, "seed": seed,
                                "Hp_field": betas, "Hd_field": betas * fields,
                                "beta_schedule_type": "custom"}
        args.update(params)
        return args
