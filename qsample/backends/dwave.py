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

Coupled siblings (`qsample.problems.SiblingCoupling`). A group of n rows is one problem: n
K-cliques plus lambda on every pair of its rows' candidates with one token. A clique embedding of
n x K variables has a coupler between every two chains, so it holds the group whatever tokens
the rows share (row r of the group on chains r K .. r K + K_r - 1). A step is planned in slots
of c x K variables, c the largest group: a slot holds parts (groups and uncoupled rows) of c rows
in all, first fit, largest part first, and a call takes as many slots as there are disjoint
(c x K)-cliques in the packing (without groups c = 1: one row per K-clique, as before). Uncoupled
rows then sit on the longer chains of a (c x K)-clique, a little less qubit-thrifty than
K-cliques, but one packing serves the whole step. A group whose (n x K)-clique does not fit the
working graph is embedded as its own graph (`GroupGraph`) by ``minorminer.find_embedding``,
packed and cached on disk by that graph's structure, and sent in calls of its own; where
minorminer finds none the step raises `ConfigError` (top_k or n too large for the QPU), as an
uncoupled K that fits no clique does. Every group lies in one call, so read j of all its rows is
one QPU sample.

Temperature. ``gumbel`` needs only the ground state: the QPU auto-scales the problem. For
``boltzmann`` the QPU samples roughly exp(-beta_qpu E') where E' is the programmed energy and
beta_qpu its effective inverse temperature (about 6 in problem units on Advantage, about 9 on
Advantage2, docs/sources.md; a `qsample calibrate` result overrides it). qsample programs
E' = E / beta_qpu with ``auto_scale=False``, so the target beta = 1 on E is kept; when the
scaled problem would exceed the solver's h or J range it is shrunk to fit, and the effective
beta this implies is reported.

Credentials come only from dwave-cloud-client's configuration or ``DWAVE_API_TOKEN``; without
them constructing the backend fails at once with a `ConfigError`. Transient network and solver
errors are retried with exponential backoff, then the rows go to the sampler's fallback policy.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dimod
import numpy as np

from ..cache import EMBEDDING_FOLDER, cache_root, load_calibration, read_json, write_json
from ..errors import ConfigError
from ..problems import OneHotProblems, SiblingCoupling
from .base import Backend, Failures, SolveRequest, SolveResult
from .dimod_backends import add_timing, union_reads

# Advantage's, problem units (docs/sources.md: D-Wave's freeze-out estimate 6.09; the published
# qubit temperature gives 5.05, Advantage2's 8.93); `qsample calibrate` measures a solver's
# own, which replaces this one where it is stored (``beta_qpu_calibrated``)
DEFAULT_BETA_QPU = 6.0
MAX_K_PROPERTY = "qsample_max_k"  # a solver property: the largest clique its sampler can solve
# a solver property: the most variables (n x K) of one coupled group its sampler can solve
MAX_GROUP_PROPERTY = "qsample_max_group_variables"
MINOR_TIMEOUT_S = 60.0  # minorminer's search time for one group embedding no clique holds
MINOR_SEED = 0  # minorminer's random seed: one graph structure, one embedding

# QPU access-time model of `DWaveBackend.estimate`, microseconds (D-Wave's published timing
# breakdown for Advantage; a solver's own ``default_*`` properties override the defaults).
DEFAULT_ANNEAL_US = 20.0  # default_annealing_time
READOUT_US = 125.0  # readout per read, added to default_readout_thermalization
DEFAULT_PROGRAMMING_THERMALIZATION_US = 1000.0
PROGRAMMING_US = 14_000.0  # programming per call, added to the programming thermalization
MICROSECONDS = 1e-6
DEFAULT_H_RANGE = (-2.0, 2.0)  # a solver's h and J ranges when its properties do not say
DEFAULT_J_RANGE = (-1.0, 1.0)


#: The topologies of D-Wave's QPUs a ``solver`` may name instead of a solver (the client then
#: picks an online solver of that topology) and the shape of the system of each that is
#: generally available: Advantage2 (Zephyr Z(12, 4), 4,800 qubits) and Advantage (Pegasus P16,
#: 5,760 qubits); docs/sources.md.
TOPOLOGIES = {"zephyr": (12, 4), "pegasus": (16,)}
DEFAULT_TOPOLOGY = "zephyr"
#: The ``backend_params`` of a QPU call (besides the key that chooses the machine).
CALL_PARAMS = ("chain_strength", "annealing_time", "max_retries", "beta_qpu")


def solver_filter(solver: str | None) -> str | dict | None:
    """dwave-cloud-client's ``solver`` argument for a ``backend_params.solver``: a topology
    name becomes the feature filter ``{"topology__type": name}``, anything else is a solver
    name."""
    if solver is None:
        return None
    if not isinstance(solver, str) or not solver:
        raise ConfigError("backend_params.solver", solver,
                          "a solver name (e.g. 'Advantage2_system1.6') or a topology: "
                          + ", ".join(TOPOLOGIES))
    return {"topology__type": solver} if solver in TOPOLOGIES else solver


def connect(solver: str | dict | None = None):
    """A ``DWaveSampler`` from dwave-cloud-client's own configuration or ``DWAVE_API_TOKEN``
    (``solver``: a name or a feature filter; None: the client's default solver).

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


@dataclass(frozen=True)
class GroupGraph:
    """The logical graph of one coupled group, the key of its minorminer embeddings: row r's
    candidates are the nodes o_r .. o_r + K_r - 1 (o_r = K_0 + .. + K_{r-1}), a clique each, plus
    the sibling edges (pairs of nodes on one token)."""

    sizes: tuple[int, ...]
    siblings: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, part: OneHotProblems) -> GroupGraph:
        """The graph of ``part``, one group's rows."""
        position = np.cumsum(part.variable_mask.ravel()) - 1  # b * width + i -> o_b + i
        u, v, _ = part.siblings.edges(part.width)
        u, v = position[u], position[v]
        pairs = sorted(zip(np.minimum(u, v).tolist(), np.maximum(u, v).tolist(), strict=True))
        return cls(tuple(int(k) for k in part.sizes), tuple(pairs))

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.sizes, self.siblings]).encode()).hexdigest()[:16]

    def graph(self):
        """The graph as ``networkx.Graph`` (nodes 0 .. sum K_r - 1)."""
        import networkx as nx

        graph = nx.Graph()
        graph.add_nodes_from(range(sum(self.sizes)))
        offset = 0
        for k in self.sizes:
            graph.add_edges_from((offset + i, offset + j)
                                 for i in range(k) for j in range(i + 1, k))
            offset += k
        graph.add_edges_from(self.siblings)
        return graph


class EmbeddingPacking:
    """Disjoint embeddings in a working graph, found greedily (each on the graph left by the
    previous ones) and cached on disk per (graph, what is embedded): cliques of N variables
    (busclique) and coupled groups' graphs (`GroupGraph`, minorminer)."""

    def __init__(self, graph, solver_id: str, folder=None) -> None:
        self.graph = graph
        digest = hashlib.sha256(json.dumps(
            [solver_id, sorted(map(int, graph.nodes)),
             sorted((int(min(u, v)), int(max(u, v))) for u, v in graph.edges)]).encode())
        self.key = digest.hexdigest()[:16]
        self.folder = Path(folder) if folder is not None else cache_root() / EMBEDDING_FOLDER
        self._found: dict[str, list[dict[int, list[int]]]] = {}
        self._complete: dict[str, bool] = {}
        self.searches = 0  # busclique and minorminer calls made by this object (tests count them)

    def cliques(self, k: int, wanted: int) -> list[dict[int, list[int]]]:
        """Up to ``wanted`` disjoint K-clique embeddings (fewer when the graph is full, none
        when no K-clique fits)."""
        def search(graph):
            from minorminer import busclique

            return busclique.find_clique_embedding(k, graph)

        return self._pack(f"K{k}", wanted, search)

    def minors(self, group: GroupGraph, wanted: int) -> list[dict[int, list[int]]]:
        """Up to ``wanted`` disjoint embeddings of ``group``'s graph (none when minorminer finds
        none in `MINOR_TIMEOUT_S`)."""
        source = group.graph()

        def search(graph):
            import minorminer

            return minorminer.find_embedding(source, graph, random_seed=MINOR_SEED,
                                             timeout=MINOR_TIMEOUT_S)

        return self._pack(f"G{group.digest}", wanted, search)

    def _pack(self, name: str, wanted: int, search) -> list[dict[int, list[int]]]:
        if name not in self._found:
            data = read_json(self.folder / f"{self.key}-{name}.json")
            if not isinstance(data, dict) or "embeddings" not in data:
                data = {"embeddings": [], "complete": False}  # none, or an older format: search
            self._found[name] = [{int(v): c for v, c in e.items()} for e in data["embeddings"]]
            self._complete[name] = bool(data["complete"])
        found = self._found[name]
        if len(found) < wanted and not self._complete[name]:
            remaining = self.graph.copy()
            remaining.remove_nodes_from(q for e in found for chain in e.values() for q in chain)
            while len(found) < wanted:
                self.searches += 1
                embedding = search(remaining)
                if not embedding:
                    self._complete[name] = True
                    break
                found.append({int(v): [int(q) for q in c] for v, c in embedding.items()})
                remaining.remove_nodes_from(q for c in embedding.values() for q in c)
            write_json(self.folder / f"{self.key}-{name}.json",
                       {"embeddings": found, "complete": self._complete[name]}, indent=None)
        return found[:wanted]


def first_fit(parts: list[np.ndarray], capacity: int) -> list[list[int]]:
    """``parts`` (arrays of rows) in slots of at most ``capacity`` rows, first fit, largest part
    first (stable); a part never splits."""
    slots: list[list[int]] = []
    open_slots: list[list[int]] = []
    for part in sorted(parts, key=len, reverse=True):
        slot = next((s for s in open_slots if len(s) + len(part) <= capacity), None)
        if slot is None:
            slot = []
            slots.append(slot)
            open_slots.append(slot)
        slot.extend(int(row) for row in part)
        if len(slot) == capacity:
            open_slots.remove(slot)
    return slots


class DWaveBackend(Backend):
    """The D-Wave QPU (or any sampler with its structured interface, e.g.
    ``dwave.system.testing.MockDWaveSampler``) with clique packing and coupled groups; see the
    module docstring.

    Args:
        sampler: a structured dimod sampler; default: `connect` (``DWaveSampler()``).
        solver: without ``sampler``, the solver to connect to (``backend_params.solver``): a
            name, or a topology of `TOPOLOGIES` (any online solver of that topology).
        beta_qpu: effective inverse temperature of the QPU in programmed-energy units
            (default: a saved `qsample calibrate` result for this solver, else 6).
        chain_strength: logical chain coupling (default: dwave's uniform torque compensation).
        max_retries: retries of a failed call (exponential backoff from ``backoff`` seconds).
        embedding_folder: where packings are kept (default: the qsample cache).
        max_size: the largest K to accept (default: the solver property `MAX_K_PROPERTY` if it
            has one, else any clique that fits the working graph).

    Attributes:
        max_group: the most variables (n x K) of one coupled group (the solver property
            `MAX_GROUP_PROPERTY`; None: any group that embeds).
    """

    name = "dwave"
    tasks = ("ground", "thermal")
    machine_params = ("solver",)
    params = CALL_PARAMS + machine_params
    couplings = True

    def __init__(self, sampler: Any = None, *, solver: str | None = None,
                 beta_qpu: float | None = None,
                 chain_strength: float | None = None, max_retries: int = 3,
                 backoff: float = 0.5, embedding_folder=None,
                 max_size: int | None = None) -> None:
        self.sampler = sampler if sampler is not None else connect(solver_filter(solver))
        props = self.sampler.properties
        topology = props.get("topology", {})
        self.topology_type = str(topology.get("type", "unknown"))
        self.topology = f"{self.topology_type} {tuple(topology.get('shape', ()))}"
        self.max_size = max_size if max_size is not None else props.get(MAX_K_PROPERTY)
        self.max_group = props.get(MAX_GROUP_PROPERTY)
        self.solver_id = str(props.get("chip_id", type(self.sampler).__name__))
        self.h_range = tuple(props.get("h_range", DEFAULT_H_RANGE))
        self.j_range = tuple(props.get("j_range", DEFAULT_J_RANGE))
        self.packing = EmbeddingPacking(self.sampler.to_networkx_graph(), self.solver_id,
                                        embedding_folder)
        self.beta_qpu = beta_qpu if beta_qpu is not None else self._calibrated_beta()
        self.chain_strength = chain_strength
        self.max_retries = max_retries
        self.backoff = backoff

    def _calibrated_beta(self) -> float:
        saved = load_calibration(self.name, self.solver_id)
        setting = (saved or {}).get("backend_setting") or {}
        return float(setting.get("beta_qpu_calibrated", DEFAULT_BETA_QPU))

    def fidelity_warning(self, request: SolveRequest, top_k: int) -> str | None:
        if request.task == "thermal":
            return (f"boltzmann mode on backend '{self.name}' assumes the QPU samples at "
                    f"beta_qpu = {request.settings['beta_qpu']:g} in programmed units; measure it "
                    "with 'qsample calibrate' (its distance to the target is reported there)")
        return None

    # ---------------------------------------------------------------- solving

    def settings(self, request: SolveRequest) -> dict[str, Any]:
        """``beta_qpu``, ``chain_strength`` (None: uniform torque compensation of each call's
        problem) and ``max_retries``, ``backend_params`` over the constructor's; ``sample``:
        the QPU call's keyword arguments (auto-scaled for ``ground`` only)."""
        for key in self.machine_params:
            value = request.params.get(key)
            if value is not None and value not in (self.topology_type, self.solver_id):
                raise ConfigError(f"backend_params.{key}", value,
                                  f"'{self.topology_type}' or '{self.solver_id}': this backend "
                                  "was built for that machine (name the backend, not an "
                                  "instance, to choose another)")
        params = {k: v for k, v in request.params.items() if k not in self.machine_params}
        return {
            "beta_qpu": float(params.pop("beta_qpu", self.beta_qpu)),
            "chain_strength": params.pop("chain_strength", self.chain_strength),
            "max_retries": int(params.pop("max_retries", self.max_retries)),
            "sample": {"num_reads": request.num_reads, "answer_mode": "raw",
                       "auto_scale": request.task != "thermal", **params},
        }

    def plan(self, problems: OneHotProblems) -> list[tuple[np.ndarray, list[list[list[int]]]]]:
        """The QPU calls of a step (module docstring), each (rows, chains): ``chains[n][i]`` the
        qubits of candidate i of ``rows[n]``. Raises `ConfigError` (top_k) when a row or a group
        fits no embedding, or a group has more than `max_group` variables."""
        width, sizes = problems.width, problems.sizes
        in_cliques: list[np.ndarray] = []
        minors: dict[GroupGraph, list[np.ndarray]] = {}
        for rows in problems.components():
            n = len(rows)
            if n > 1 and self.max_group is not None and n * width > self.max_group:
                raise ConfigError("top_k", width, f"at most {self.max_group // n} for coupled "
                                  f"groups of {n} rows on this solver (it takes at most "
                                  f"{self.max_group} variables per group)")
            if n > 1 and not self.packing.cliques(n * width, 1):
                minors.setdefault(GroupGraph.of(problems.take(rows)), []).append(rows)
            else:
                in_cliques.append(rows)
        calls = []
        if in_cliques:
            capacity = max(map(len, in_cliques))
            slots = first_fit(in_cliques, capacity)
            cliques = self.packing.cliques(capacity * width, len(slots))
            if not cliques:
                raise ConfigError("top_k", width, "a clique that fits the QPU's working graph")
            units = [[(row, position * width) for position, row in enumerate(slot)]
                     for slot in slots]
            calls += _calls(units, cliques, sizes)
        for graph, groups in minors.items():
            embeddings = self.packing.minors(graph, len(groups))
            if not embeddings:
                raise ConfigError("top_k", width, f"a coupled group of {len(graph.sizes)} rows "
                                  "that embeds in the QPU's working graph (minorminer found none)")
            offsets = np.cumsum((0, *graph.sizes[:-1])).tolist()
            units = [list(zip(group.tolist(), offsets, strict=True)) for group in groups]
            calls += _calls(units, embeddings, sizes)
        return calls

    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        batch, width = problems.batch_size, problems.width
        states = np.zeros((batch, request.num_reads, width), dtype=np.int8)
        read_mask = np.zeros((batch, request.num_reads), dtype=bool)
        failures = Failures.none(batch)
        timing: dict[str, float] = {"chains_broken": 0.0, "chains": 0.0}
        seconds, calls = 0.0, 0
        for rows, chains in self.plan(problems):
            begin = time.perf_counter()
            try:
                reads, info, broken, count = self._call(problems, rows, chains, request)
                got = min(reads.shape[1], request.num_reads)
                states[rows, :got] = reads[:, :got]
                read_mask[rows, :got] = True
                add_timing(timing, info)
                timing["chains_broken"] += broken
                timing["chains"] += count
            except ConfigError:
                raise
            except Exception as exc:
                failures.mark_exception(rows, exc)
            seconds += time.perf_counter() - begin
            calls += 1
        timing["chain_break_fraction"] = timing["chains_broken"] / max(timing["chains"], 1.0)
        timing["qpu_calls"] = float(calls)
        return SolveResult(states, read_mask, failures, seconds, calls, timing)

    def embed(self, problems: OneHotProblems, rows: np.ndarray, chains: list[list[list[int]]],
              request: SolveRequest):
        """The problem of one call: ``(part, bqm, embedding, target)``, ``part`` the rows'
        problems (their groups' couplings kept), ``bqm`` its union (variable b * width + i;
        scaled by `_thermal_scale` for ``thermal``), ``target`` ``bqm`` on the chains. An intact
        chain contributes 0, so target(x embedded) = bqm(x) on reads with no broken chain."""
        from dwave.embedding import embed_bqm
        from dwave.embedding.chain_strength import uniform_torque_compensation

        width = problems.width
        part = problems.take(rows)
        bqm = part.union_bqm()
        embedding = {b * width + i: chain
                     for b, row_chains in enumerate(chains) for i, chain in enumerate(row_chains)}
        thermal = request.task == "thermal"
        settings = request.settings
        if thermal:  # program E / beta_qpu so the QPU's beta_qpu acts as beta = 1 on E
            bqm.scale(self._thermal_scale(bqm, settings["beta_qpu"]))
        chain_strength = settings["chain_strength"]
        if chain_strength is None:
            chain_strength = uniform_torque_compensation(bqm)
        if thermal:
            chain_strength = min(float(chain_strength), -self.j_range[0])
        target = embed_bqm(bqm, embedding, self.sampler.adjacency, chain_strength=chain_strength,
                           smear_vartype=dimod.SPIN)
        return part, bqm, embedding, target

    def _call(self, problems: OneHotProblems, rows: np.ndarray, chains, request: SolveRequest):
        """One QPU call for ``rows``: embed their union, sample, unembed by majority vote."""
        from dwave.embedding import majority_vote, unembed_sampleset

        part, bqm, embedding, target = self.embed(problems, rows, chains, request)
        settings = request.settings
        response = self._with_retries(lambda: self.sampler.sample(target, **settings["sample"]),
                                      settings["max_retries"])
        unembedded = unembed_sampleset(response, embedding, bqm,
                                       chain_break_method=majority_vote, chain_break_fraction=True)
        reads = union_reads(unembedded, part)
        fraction = np.asarray(unembedded.record.chain_break_fraction, dtype=np.float64)
        count = len(embedding)
        return reads, response.info, float(fraction.sum() * count), float(fraction.size * count)

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

    def estimate(self, batch: int, top_k: int, num_reads: int, steps: int,
                 group_size: int = 1, params: dict[str, Any] | None = None) -> dict[str, float]:
        """Calls and QPU seconds for ``steps`` decoding steps of ``batch`` rows, before spending
        any: calls per step from `plan` (``group_size`` > 1: the rows are coupled groups of that
        many siblings on one candidate list, the last group smaller when it does not divide
        ``batch``), QPU access time per call from the solver's timing properties
        (programming + num_reads x (anneal + readout + delay)), the anneal time being
        ``backend_params`` ``annealing_time`` where ``params`` give one."""
        plan = self.plan(_shaped(batch, top_k, group_size))
        per_call = max((len(rows) for rows, _ in plan), default=0)
        calls_per_step = len(plan)
        props = self.sampler.properties
        anneal = float((params or {}).get("annealing_time",
                                          props.get("default_annealing_time", DEFAULT_ANNEAL_US)))
        readout = (float(props.get("default_readout_thermalization", 0.0))
                   + READOUT_US)
        programming = (float(props.get("default_programming_thermalization",
                                       DEFAULT_PROGRAMMING_THERMALIZATION_US))
                       + PROGRAMMING_US)
        per_call_us = programming + num_reads * (anneal + readout)
        calls = calls_per_step * steps
        return {"solver": self.solver_id, "topology": self.topology,
                "rows_per_call": float(per_call), "calls_per_step": float(calls_per_step),
                "calls": float(calls), "qpu_access_seconds": calls * per_call_us * MICROSECONDS,
                "qpu_access_seconds_per_call": per_call_us * MICROSECONDS}


def _calls(units: list[list[tuple[int, int]]], embeddings: list[dict[int, list[int]]],
           sizes: np.ndarray) -> list[tuple[np.ndarray, list[list[list[int]]]]]:
    """Units of rows (each a list of (row, its first variable in the embedding)) on
    ``embeddings``, as many per call as there are embeddings."""
    calls = []
    for start in range(0, len(units), len(embeddings)):
        rows, chains = [], []
        chunk = units[start:start + len(embeddings)]
        for unit, embedding in zip(chunk, embeddings[:len(chunk)], strict=True):
            for row, first in unit:
                rows.append(row)
                chains.append([embedding[first + i] for i in range(int(sizes[row]))])
        calls.append((np.array(rows, dtype=np.int64), chains))
    return calls


def _shaped(batch: int, top_k: int, group_size: int) -> OneHotProblems:
    """Problems of the shape `DWaveBackend.estimate` plans for (weights do not matter): rows
    b // group_size coupled, every row on the same candidate tokens."""
    sizes = np.full(batch, top_k, dtype=np.int64)
    weights, penalty = np.zeros((batch, top_k)), np.ones(batch)
    if group_size <= 1:
        return OneHotProblems(weights, penalty, sizes)
    groups = np.arange(batch, dtype=np.int64) // group_size
    if batch % group_size == 1:  # a last group of one row is no group
        groups[-1] = -1
    tokens = np.tile(np.arange(top_k), (batch, 1))
    strength = np.ones(int(groups.max(initial=-1)) + 1)
    return OneHotProblems(weights, penalty, sizes,
                          SiblingCoupling.from_tokens(groups, tokens, sizes, strength))
