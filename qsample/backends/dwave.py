"""`dwave`: a D-Wave QPU (``DWaveSampler``) with qsample's own embedding and batch packing.

A step's B one-hot problems are cliques of K variables. qsample packs as many of them as fit
into disjoint regions of the QPU's working graph, each with a clique embedding from
``minorminer.busclique`` found once per (solver, K) and kept on disk, and sends them in one call
(as few calls as possible when they do not all fit). Chains are unembedded by majority vote;
the chain-break fraction goes to telemetry, and a read that is not one-hot after the vote is
handled like any invalid read (the mode's policy, then the fallback). Telemetry's
``backend_timing`` holds the solver's timing fields (microseconds, summed over calls),
``qpu_calls``, and ``chains_broken`` / ``chains`` (read x chain counts, so that
``chain_break_fraction`` can be recomputed over any number of steps).

Temperature. ``gumbel`` needs only the ground state: the QPU auto-scales the problem. For
``boltzmann`` the QPU samples roughly exp(-beta_qpu E') where E' is the programmed energy and
beta_qpu its effective inverse temperature (about 6 in problem units on Advantage, FACTS.md; a
`qsample calibrate` result overrides it). qsample programs E' = E / beta_qpu with
``auto_scale=False``, so the target beta = 1 on E is kept; when the scaled problem would exceed
the solver's h or J range it is shrunk to fit, and the effective beta this implies is reported.

Credentials come only from dwave-cloud-client's configuration or ``DWAVE_API_TOKEN``; without
them constructing the backend fails at once with a `ConfigError`. Transient network and solver
errors are retried with exponential backoff, then the rows go to the sampler's fallback policy.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import dimod
import numpy as np

from ..cache import EMBEDDING_FOLDER, cache_root, load_calibration, write_json
from ..errors import ConfigError
from ..problems import OneHotProblems
from .base import Backend, Failures, SolveRequest, SolveResult
from .dimod_backends import add_timing, union_reads

DEFAULT_BETA_QPU = 6.0  # Advantage, problem units (FACTS.md); `qsample calibrate` refines it
MAX_K_PROPERTY = "qsample_max_k"  # a solver property: the largest clique its sampler can solve

# QPU access-time model of `DWaveBackend.estimate`, microseconds (D-Wave's published timing
# breakdown for Advantage; a solver's own ``default_*`` properties override the defaults).
DEFAULT_ANNEAL_US = 20.0  # default_annealing_time
READOUT_US = 125.0  # readout per read, added to default_readout_thermalization
DEFAULT_PROGRAMMING_THERMALIZATION_US = 1000.0
PROGRAMMING_US = 14_000.0  # programming per call, added to the programming thermalization
MICROSECONDS = 1e-6
DEFAULT_H_RANGE = (-2.0, 2.0)  # a solver's h and J ranges when its properties do not say
DEFAULT_J_RANGE = (-1.0, 1.0)


def connect(solver: str | dict | None = None):
    """A ``DWaveSampler`` from dwave-cloud-client's own configuration or ``DWAVE_API_TOKEN``.

    Raises `ConfigError` at once, without touching the network twice, when no token is set.
    """
    try:
        from dwave.system import DWaveSampler
    except ImportError as exc:
        raise ConfigError("backend", "dwave",
                          "dwave-system installed (pip install dwave-system)") from exc
    try:
        return DWaveSampler(solver=solver) if solver else DWaveSampler()
    except ValueError as exc:
        if "token" not in str(exc).lower():
            raise
        raise ConfigError(
            "backend", "dwave",
            "a D-Wave API token: set DWAVE_API_TOKEN or run 'dwave config create' "
            "(qsample never takes a token from its own config or a request)") from None


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [TimeoutError, ConnectionError]
    try:
        from dwave.cloud import exceptions as cloud

        errors += [cloud.RequestTimeout, cloud.PollingTimeout, cloud.SolverOfflineError,
                   cloud.SolverFailureError, cloud.ProblemUploadError, cloud.Timeout]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


class CliquePacking:
    """Disjoint clique embeddings of size K in a working graph, found greedily with busclique
    (each on the graph left by the previous ones) and cached on disk per (graph, K)."""

    def __init__(self, graph, solver_id: str, folder=None) -> None:
        self.graph = graph
        digest = hashlib.sha256(json.dumps(
            [solver_id, sorted(map(int, graph.nodes)),
             sorted((int(min(u, v)), int(max(u, v))) for u, v in graph.edges)]).encode())
        self.key = digest.hexdigest()[:16]
        self.folder = folder if folder is not None else cache_root() / EMBEDDING_FOLDER
        self._cliques: dict[int, list[dict[int, list[int]]]] = {}
        self._complete: dict[int, bool] = {}
        self.searches = 0  # busclique calls made by this object (tests count them)

    def _path(self, k: int):
        return self.folder / f"{self.key}-K{k}.json"

    def cliques(self, k: int, wanted: int) -> list[dict[int, list[int]]]:
        """Up to ``wanted`` disjoint K-clique embeddings (fewer when the graph is full)."""
        if k not in self._cliques:
            path = self._path(k)
            if path.exists():
                data = json.loads(path.read_text())
                self._cliques[k] = [{int(v): c for v, c in e.items()} for e in data["cliques"]]
                self._complete[k] = data["complete"]
            else:
                self._cliques[k], self._complete[k] = [], False
        found = self._cliques[k]
        if len(found) < wanted and not self._complete[k]:
            from minorminer import busclique

            remaining = self.graph.copy()
            remaining.remove_nodes_from(q for e in found for chain in e.values() for q in chain)
            while len(found) < wanted:
                self.searches += 1
                embedding = busclique.find_clique_embedding(k, remaining)
                if not embedding:
                    self._complete[k] = True
                    break
                found.append({int(v): [int(q) for q in c] for v, c in embedding.items()})
                remaining.remove_nodes_from(q for c in embedding.values() for q in c)
            self._save(k)
        if not found:
            raise ConfigError("top_k", k, "a clique that fits the QPU's working graph")
        return found[:wanted]

    def _save(self, k: int) -> None:
        write_json(self._path(k), {"cliques": self._cliques[k], "complete": self._complete[k]},
                   indent=None)


class DWaveBackend(Backend):
    """The D-Wave QPU (or any sampler with its structured interface, e.g.
    ``dwave.system.testing.MockDWaveSampler``) with clique packing; see the module docstring.

    Args:
        sampler: a structured dimod sampler; default: `connect` (``DWaveSampler()``).
        beta_qpu: effective inverse temperature of the QPU in programmed-energy units
            (default: a saved `qsample calibrate` result for this solver, else 6).
        chain_strength: logical chain coupling (default: dwave's uniform torque compensation).
        max_retries: retries of a failed call (exponential backoff from ``backoff`` seconds).
        embedding_folder: where clique packings are kept (default: the qsample cache).
        max_size: the largest K to accept (default: the solver property `MAX_K_PROPERTY` if it
            has one, else any clique that fits the working graph).
    """

    name = "dwave"
    tasks = ("ground", "thermal")
    params = ("chain_strength", "annealing_time", "max_retries", "beta_qpu")

    def __init__(self, sampler: Any = None, *, beta_qpu: float | None = None,
                 chain_strength: float | None = None, max_retries: int = 3,
                 backoff: float = 0.5, embedding_folder=None,
                 max_size: int | None = None) -> None:
        self.sampler = sampler if sampler is not None else connect()
        props = self.sampler.properties
        self.max_size = max_size if max_size is not None else props.get(MAX_K_PROPERTY)
        self.solver_id = str(props.get("chip_id", type(self.sampler).__name__))
        self.h_range = tuple(props.get("h_range", DEFAULT_H_RANGE))
        self.j_range = tuple(props.get("j_range", DEFAULT_J_RANGE))
        self.packing = CliquePacking(self.sampler.to_networkx_graph(), self.solver_id,
                                     embedding_folder)
        self.beta_qpu = beta_qpu if beta_qpu is not None else self._calibrated_beta()
        self.chain_strength = chain_strength
        self.max_retries = max_retries
        self.backoff = backoff

    def _calibrated_beta(self) -> float:
        saved = load_calibration(self.name, self.solver_id)
        setting = (saved or {}).get("backend_setting") or {}
        return float(setting.get("beta_qpu_calibrated", DEFAULT_BETA_QPU))

    def fidelity_warning(self, task: str, top_k: int) -> str | None:
        if task == "thermal":
            return (f"boltzmann mode on backend 'dwave' assumes the QPU samples at beta_qpu = "
                    f"{self.beta_qpu:g} in programmed units; measure it with 'qsample calibrate' "
                    f"(its distance to the target is reported there)")
        return None

    # ---------------------------------------------------------------- solving

    def settings(self, request: SolveRequest) -> dict[str, Any]:
        """``beta_qpu``, ``chain_strength`` (None: uniform torque compensation of each call's
        problem) and ``max_retries``, ``backend_params`` over the constructor's; ``sample``:
        the QPU call's keyword arguments (auto-scaled for ``ground`` only)."""
        params = dict(request.params)
        return {
            "beta_qpu": float(params.pop("beta_qpu", self.beta_qpu)),
            "chain_strength": params.pop("chain_strength", self.chain_strength),
            "max_retries": int(params.pop("max_retries", self.max_retries)),
            "sample": {"num_reads": request.num_reads, "answer_mode": "raw",
                       "auto_scale": request.task != "thermal", **params},
        }

    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        batch, width = problems.batch_size, problems.width
        slots = self.packing.cliques(width, batch)
        states = np.zeros((batch, request.num_reads, width), dtype=np.int8)
        read_mask = np.zeros((batch, request.num_reads), dtype=bool)
        failures = Failures.none(batch)
        timing: dict[str, float] = {"chains_broken": 0.0, "chains": 0.0}
        seconds, calls = 0.0, 0
        for start in range(0, batch, len(slots)):
            rows = np.arange(start, min(batch, start + len(slots)))
            begin = time.perf_counter()
            try:
                reads, info, broken, chains = self._call(problems, rows, slots, request)
                got = min(reads.shape[1], request.num_reads)
                states[rows, :got] = reads[:, :got]
                read_mask[rows, :got] = True
                add_timing(timing, info)
                timing["chains_broken"] += broken
                timing["chains"] += chains
            except ConfigError:
                raise
            except Exception as exc:
                failures.mark_exception(rows, exc)
            seconds += time.perf_counter() - begin
            calls += 1
        timing["chain_break_fraction"] = timing["chains_broken"] / max(timing["chains"], 1.0)
        timing["qpu_calls"] = float(calls)
        return SolveResult(states, read_mask, failures, seconds, calls, timing)

    def _call(self, problems: OneHotProblems, rows: np.ndarray, slots, request: SolveRequest):
        """One QPU call for ``rows``: embed their union, sample, unembed by majority vote."""
        from dwave.embedding import embed_bqm, majority_vote, unembed_sampleset
        from dwave.embedding.chain_strength import uniform_torque_compensation

        width = problems.width
        part = OneHotProblems(problems.weights[rows], problems.penalty[rows], problems.sizes[rows])
        bqm = part.union_bqm()  # variable b * width + i
        embedding = {b * width + i: slots[b][i]
                     for b in range(len(rows)) for i in range(int(part.sizes[b]))}
        thermal = request.task == "thermal"
        settings = request.settings
        if thermal:  # program E / beta_qpu so the QPU's beta_qpu acts as beta = 1 on E
            bqm = bqm.copy()
            bqm.scale(self._thermal_scale(bqm, settings["beta_qpu"]))
        chain_strength = settings["chain_strength"]
        if chain_strength is None:
            chain_strength = uniform_torque_compensation(bqm)
        if thermal:
            chain_strength = min(float(chain_strength), -self.j_range[0])
        target = embed_bqm(bqm, embedding, self.sampler.adjacency, chain_strength=chain_strength,
                           smear_vartype=dimod.SPIN)
        response = self._with_retries(lambda: self.sampler.sample(target, **settings["sample"]),
                                      settings["max_retries"])
        unembedded = unembed_sampleset(response, embedding, bqm,
                                       chain_break_method=majority_vote, chain_break_fraction=True)
        reads = union_reads(unembedded, part)
        fraction = np.asarray(unembedded.record.chain_break_fraction, dtype=np.float64)
        chains = len(embedding)
        return reads, response.info, float(fraction.sum() * chains), float(fraction.size * chains)

    def _thermal_scale(self, bqm, beta_qpu: float) -> float:
        """1 / beta_qpu, shrunk if the Ising form would leave the solver's h or J range."""
        linear, quadratic, _ = bqm.to_ising()
        scale = 1.0 / beta_qpu
        h_max = max((abs(v) for v in linear.values()), default=0.0)
        j_max = max((abs(v) for v in quadratic.values()), default=0.0)
        limit = min(self.h_range[1] / h_max if h_max else np.inf,
                    -self.j_range[0] / j_max if j_max else np.inf)
        return min(scale, limit)

    def _with_retries(self, call, max_retries: int):
        transient = _transient_errors()
        for attempt in range(max_retries + 1):
            try:
                response = call()
                response.resolve()  # a cloud future: network errors surface here
                return response
            except transient:
                if attempt == max_retries:
                    raise
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # ---------------------------------------------------------------- cost

    def estimate(self, batch: int, top_k: int, num_reads: int, steps: int) -> dict[str, float]:
        """Calls and QPU seconds for ``steps`` decoding steps of ``batch`` rows, before spending
        any: calls per step from the clique packing, QPU access time per call from the solver's
        timing properties (programming + num_reads x (anneal + readout + delay))."""
        per_call = len(self.packing.cliques(top_k, batch))
        calls_per_step = -(-batch // per_call)
        props = self.sampler.properties
        anneal = float(props.get("default_annealing_time", DEFAULT_ANNEAL_US))
        readout = (float(props.get("default_readout_thermalization", 0.0))
                   + READOUT_US)
        programming = (float(props.get("default_programming_thermalization",
                                       DEFAULT_PROGRAMMING_THERMALIZATION_US))
                       + PROGRAMMING_US)
        per_call_us = programming + num_reads * (anneal + readout)
        calls = calls_per_step * steps
        return {"rows_per_call": float(per_call), "calls_per_step": float(calls_per_step),
                "calls": float(calls), "qpu_access_seconds": calls * per_call_us * MICROSECONDS,
                "qpu_access_seconds_per_call": per_call_us * MICROSECONDS}
