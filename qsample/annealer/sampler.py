"""`BatchedSimulatedAnnealingSampler`: the batched annealer as a drop-in for dwave-neal.

`BatchedSimulatedAnnealingSampler.sample` takes every keyword of dwave-samplers'
``SimulatedAnnealingSampler.sample`` (alias ``neal``) with neal's defaults, checks and edge
cases (``num_sweeps=0`` returns the initial states, schedules may start at beta 0, ...), and
`sample_batch` anneals many BQMs in one kernel call. Unknown keywords are dropped with dimod's
``SamplerUnknownArgWarning``; non-finite biases are refused (`qsample.errors.ConfigError` naming
the variable).

Example:
    >>> import dimod
    >>> from qsample.annealer import BatchedSimulatedAnnealingSampler
    >>> bqms = [dimod.generators.ran_r(1, 16, seed=s) for s in range(100)]
    >>> sampler = BatchedSimulatedAnnealingSampler()
    >>> sets = sampler.sample_batch(bqms, num_reads=10, num_sweeps=1000, seed=0)
    >>> len(sets), len(sets[0])
    (100, 10)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import dimod
import numpy as np

from .. import rng
from ..errors import ConfigError
from .core import anneal_dense, anneal_sparse, problem_keys, ramp

SCHEDULE_TYPES = ("linear", "geometric", "custom")  # neal's beta_schedule_options
CRITERIA = ("metropolis", "gibbs")  # proposal_acceptance_criteria, any case (as neal)
DEFAULT_NUM_SWEEPS = 1000
SEED_LIMIT = 2**rng.BACKEND_SEED_BITS  # neal's seeds: integers in [0, 2^31)
STATE_SEED_LIMIT = 2**32  # numpy RandomState seeds (dimod's random initial states)
# neal's default beta range (`default_beta_range`): the final single-spin excitation rate, and
# what a model without a non-zero bias gets, with neal's warning
EXCITATION_RATE = 0.01
ZERO_BIASES_RANGE = (0.1, 1.0)
ZERO_BIASES_WARNING = ("All bqm biases are zero (all energies are zero), this is likely a value "
                       "error. Temperature range is set arbitrarily to [0.1,1]. "
                       "Metropolis-Hastings update is non-ergodic.")
SPARSE_SHARE = 0.25  # compressed rows when they take at most this share of the dense cells
_PROBE_BETAS = np.zeros(1)  # one sequential Metropolis sweep at beta 0 flips every spin


class BatchedSimulatedAnnealingSampler(dimod.Sampler, dimod.Initialized):
    """Simulated annealing of BQMs, all problems and reads of a call in one kernel: on padded
    dense arrays, or on compressed rows when they take at most ``sparse_share`` of the dense
    cells (sparse models, mixed sizes; the same reads either way).

    The kernel anneals the binary model x^T J x + h x with J symmetric (each pair's bias split
    in two halves): SPIN models are converted to BINARY and the samples back (the same
    configurations); the energies reported are the BQM's own, computed by dimod.
    """

    def __init__(self, sparse_share: float = SPARSE_SHARE) -> None:
        """``sparse_share``: a batch is annealed as compressed rows when they take at most this
        share of the padded dense arrays' cells (0: always dense)."""
        self.sparse_share = sparse_share

    @property
    def parameters(self) -> dict[str, list]:
        names = ("beta_range", "num_reads", "num_sweeps", "num_sweeps_per_beta", "beta_schedule",
                 "seed", "interrupt_function", "initial_states", "initial_states_generator",
                 "randomize_order", "proposal_acceptance_criteria", "keep_best", "engine")
        return {"beta_schedule_type": ["beta_schedule_options"], **{n: [] for n in names}}

    @property
    def properties(self) -> dict[str, Any]:
        return {"beta_schedule_options": SCHEDULE_TYPES}

    def sample(self, bqm: dimod.BinaryQuadraticModel, *, initial_states: Any = None,
               **kwargs: Any) -> dimod.SampleSet:
        """Anneal one BQM; ``initial_states`` is one samples-like, other keywords as
        `sample_batch`."""
        return self.sample_batch([bqm], initial_states=[initial_states], **kwargs)[0]

    def sample_batch(self, bqms: Sequence[dimod.BinaryQuadraticModel], *,
                     num_reads: int | None = None, num_sweeps: int | None = None,
                     num_sweeps_per_beta: int = 1, beta_range: Sequence[float] | None = None,
                     beta_schedule_type: str = "geometric", beta_schedule: Any = None,
                     seed: int | None = None, interrupt_function: Callable[[], bool] | None = None,
                     initial_states: Sequence[Any] | None = None,
                     initial_states_generator: str = "random", randomize_order: bool = False,
                     proposal_acceptance_criteria: str = "Metropolis", keep_best: bool = False,
                     engine: str = "auto", **unknown: Any) -> list[dimod.SampleSet]:
        """Anneal every BQM of ``bqms`` in one kernel call; one SampleSet per BQM.

        Keywords and defaults are neal's; errors are ValueError (`ConfigError`) or, where neal
        raises it, TypeError.

        Args:
            bqms: binary quadratic models (any vartypes, any sizes up to the largest); biases
                must be finite.
            num_reads: reads per BQM; default: the number of its initial states, else 1.
            num_sweeps: sweeps per read (default 1000; with ``"custom"``: None or
                ``len(beta_schedule) * num_sweeps_per_beta``); 0 returns the initial states.
            num_sweeps_per_beta: sweeps at each beta of the schedule.
            beta_range: (first, last) beta, each >= 0 and finite; default: neal's
                ``default_beta_range`` of each BQM. One beta (``num_sweeps ==
                num_sweeps_per_beta``) anneals at the last.
            beta_schedule_type: ``"geometric"`` (betas > 0), ``"linear"`` or ``"custom"``.
            beta_schedule: the betas of ``"custom"``: finite, >= 0.
            seed: integer in [0, 2^31) (default: drawn from numpy's global generator, as neal);
                BQM b's reads depend only on (seed, b, read) unless ``interrupt_function`` splits
                them (below).
            interrupt_function: called with no arguments after each chunk of reads, a chunk
                being as many reads per BQM as numba has threads (one read, as neal, with one
                thread); when it returns True (or raises, as neal), the reads not yet started are
                dropped and each SampleSet holds the reads done so far. Not called when no BQM
                has a variable. Without initial states, chunk c > 0 draws from keys derived from
                (seed, b, its first read), so its reads differ from the same call's without
                ``interrupt_function`` (the first chunk's are the same).
            initial_states: one entry per BQM, each None or anything
                ``dimod.Initialized.parse_initial_states`` takes (SPIN or BINARY values).
            initial_states_generator: fills reads beyond the given initial states: ``"random"``
                (uniform states from ``seed + b``; without initial states and with sweeps, the
                kernel's own uniform starts), ``"tile"`` (repeats them) or ``"none"`` (too few
                is an error). Initial states cost a gauge-transformed copy of the BQM's dense
                couplings per read.
            randomize_order: random spin order instead of sequential sweeps.
            proposal_acceptance_criteria: ``"Metropolis"`` or ``"Gibbs"`` (any case).
            keep_best: return only each BQM's lowest-energy read.
            engine: ``"auto"``, ``"numba"`` or ``"triton"`` (`qsample.annealer.anneal_dense`).
            **unknown: dropped with a ``dimod.exceptions.SamplerUnknownArgWarning``.

        Info of each SampleSet: ``beta_range`` (the range used; with ``"custom"``, the
        schedule's first and last beta), ``beta_schedule_type``, and ``timing``: neal's
        ``preprocessing_ns``, ``sampling_ns`` and ``postprocessing_ns``, here of the whole call,
        and ``problems_in_call``.
        """
        started = time.perf_counter_ns()
        self.remove_unknown_kwargs(**unknown)
        seed = _seed(seed)
        if interrupt_function and not callable(interrupt_function):
            raise TypeError(f"interrupt_function={interrupt_function!r} is not callable")
        acceptance = _acceptance(proposal_acceptance_criteria)
        _check_schedule_keywords(beta_schedule_type, beta_schedule, num_sweeps_per_beta)
        if initial_states is None:
            initial_states = [None] * len(bqms)
        elif len(initial_states) != len(bqms):
            raise ConfigError("initial_states", f"{len(initial_states)} entries",
                              f"one entry per BQM ({len(bqms)}), None for none")
        if len(bqms) == 0:
            return []
        models = [_Model.of(bqm, "bqm" if len(bqms) == 1 else f"bqms[{b}]")
                  for b, bqm in enumerate(bqms)]
        betas, ranges = _schedules(bqms, beta_schedule_type, beta_schedule, beta_range,
                                   num_sweeps, num_sweeps_per_beta)
        given = any(states is not None for states in initial_states)
        if given or betas.shape[1] == 0:
            parsed = [self._initial_states(model, states, initial_states_generator, num_reads,
                                           (seed + b) % STATE_SEED_LIMIT)
                      for b, (model, states) in enumerate(zip(models, initial_states,
                                                              strict=True))]
            starts, reads = parsed, [len(states) for states in parsed]
        else:  # the kernel's own uniform starts; parsed only to check num_reads and generator
            count = self.parse_initial_states(dimod.BQM(dimod.SPIN), num_reads=num_reads,
                                              initial_states_generator=initial_states_generator
                                              ).num_reads
            starts, reads = None, [count] * len(bqms)
        batch = _Batch.of(models, betas, problem_keys(seed, len(bqms)), acceptance,
                          "random" if randomize_order else "sequential", engine, starts, reads,
                          self.sparse_share)
        sampling = time.perf_counter_ns()
        states = batch.run(interrupt_function)
        postprocessing = time.perf_counter_ns()
        sets = []
        for model, bqm, x, used in zip(models, bqms, states, ranges, strict=True):
            samples = 2 * x - 1 if bqm.vartype is dimod.SPIN else x
            info = {"beta_range": used, "beta_schedule_type": beta_schedule_type}
            sampleset = _sampleset(samples, model.labels, bqm.energies((samples, model.labels)),
                                   bqm.vartype, info)
            sets.append(sampleset.truncate(1) if keep_best else sampleset)
        timing = {"preprocessing_ns": sampling - started, "sampling_ns": postprocessing - sampling,
                  "postprocessing_ns": time.perf_counter_ns() - postprocessing,
                  "problems_in_call": len(bqms)}
        for sampleset in sets:
            sampleset.info["timing"] = dict(timing)
        return sets

    def _initial_states(self, model: _Model, states: Any, generator: str, num_reads: int | None,
                        seed: int) -> np.ndarray:
        """Binary initial states int8 [R, n] in ``model.labels`` order, parsed as neal does (on
        the SPIN model, so random states are neal's for the same seed)."""
        spins = dimod.BQM(dict.fromkeys(model.labels, 0.0), {}, 0.0, dimod.SPIN)
        parsed = self.parse_initial_states(spins, initial_states=states,
                                           initial_states_generator=generator,
                                           num_reads=num_reads, seed=seed).initial_states
        order = [parsed.variables.index(v) for v in model.labels]
        return ((parsed.record.sample[:, order] + 1) // 2).astype(np.int8)


@dataclass
class _Model:
    """A BQM's binary energy over ``labels`` up to its offset (energies are dimod's):
    h x + sum_k q_k x_rows[k] x_cols[k]."""

    labels: list
    linear: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    biases: np.ndarray

    @classmethod
    def of(cls, bqm: dimod.BinaryQuadraticModel, name: str) -> _Model:
        """Binary vectors of ``bqm``; a non-finite bias raises `ConfigError` naming it."""
        labels = list(bqm.variables)
        h, (rows, cols, q), offset = bqm.to_numpy_vectors(labels)
        h, q = h.astype(np.float64), q.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(h))
        if bad.size:
            raise ConfigError(f"{name}.linear[{labels[bad[0]]!r}]", h[bad[0]], "a finite bias")
        bad = np.flatnonzero(~np.isfinite(q))
        if bad.size:
            pair = (labels[rows[bad[0]]], labels[cols[bad[0]]])
            raise ConfigError(f"{name}.quadratic[{pair!r}]", q[bad[0]], "a finite bias")
        if not np.isfinite(offset):
            raise ConfigError(f"{name}.offset", offset, "a finite number")
        if bqm.vartype is dimod.SPIN:  # s = 2x - 1
            pulls = np.bincount(rows, q, len(h)) + np.bincount(cols, q, len(h))
            h, q = 2 * h - 2 * pulls, 4 * q
        return cls(labels, h, rows, cols, q)


@dataclass
class _Sparse:
    """A batch as compressed rows (`qsample.annealer.anneal_sparse`): no padding."""

    linear: np.ndarray  # [N]
    starts: np.ndarray  # [B + 1]
    indptr: np.ndarray  # [N + 1]
    indices: np.ndarray  # [2 nnz], global positions, sorted within each row
    data: np.ndarray  # [2 nnz], J = half of each pair's bias, both directions

    @classmethod
    def of(cls, linear: np.ndarray, starts: np.ndarray, rows: np.ndarray, cols: np.ndarray,
           halves: np.ndarray) -> _Sparse:
        """From the flat ``linear`` [N], the problems' ``starts`` [B + 1] and the pairs (global
        positions ``rows``, ``cols``, each listed once) with their halves."""
        first, second = np.concatenate([rows, cols]), np.concatenate([cols, rows])
        order = np.lexsort((second, first))
        counts = np.bincount(first, minlength=linear.shape[0])
        return cls(linear, starts, np.concatenate([[0], np.cumsum(counts)]), second[order],
                   np.concatenate([halves, halves])[order])


@dataclass
class _Batch:
    """A batch's arrays, dense or sparse, and how to anneal reads [start, stop) of every BQM."""

    linear: np.ndarray | None  # [B, W] (dense)
    quadratic: np.ndarray | None  # [B, W, W], symmetric, zero diagonal (dense)
    sparse: _Sparse | None  # compressed rows instead of linear and quadratic
    sizes: np.ndarray  # [B], >= 1 (an empty BQM anneals one unbiased padding variable)
    counts: list[int]  # variables of each BQM
    betas: np.ndarray  # [B, S]
    keys: np.ndarray  # [B]
    acceptance: str
    order: str
    engine: str
    starts: list[np.ndarray] | None  # binary initial states [R_b, n_b]; None: the kernel's own
    reads: list[int]

    @classmethod
    def of(cls, models: list[_Model], betas: np.ndarray, keys: np.ndarray, acceptance: str,
           order: str, engine: str, starts: list[np.ndarray] | None, reads: list[int],
           sparse_share: float) -> _Batch:
        """The dense arrays, or compressed rows where they take at most ``sparse_share`` of the
        dense cells (sparse models, or sizes so mixed that padding dominates) and the kernel's
        own starts on the CPU are used (initial states and Triton take the dense path)."""
        counts = [len(model.labels) for model in models]
        sizes = np.maximum(np.array(counts, dtype=np.int64), 1)
        # every variable and pair once, as (problem, index) in one array per field: a BQM lists
        # each pair once, so one scatter fills the whole batch
        holder = np.repeat(np.arange(len(models)), counts)
        index = np.arange(holder.size) - np.repeat(np.cumsum(counts) - counts, counts)
        biases = np.concatenate([model.linear for model in models])
        owner = np.repeat(np.arange(len(models)), [model.rows.size for model in models])
        rows = np.concatenate([model.rows for model in models]).astype(np.int64)
        cols = np.concatenate([model.cols for model in models]).astype(np.int64)
        halves = np.concatenate([model.biases for model in models]) / 2.0
        width = int(sizes.max())
        if (starts is None and engine != "triton"
                and int(sizes.sum()) + 2 * rows.size <= sparse_share * len(models) * width**2):
            first = np.concatenate([[0], np.cumsum(sizes)])
            linear = np.zeros(int(first[-1]))
            linear[first[holder] + index] = biases
            sparse = _Sparse.of(linear, first, rows + first[owner], cols + first[owner], halves)
            return cls(None, None, sparse, sizes, counts, betas, keys, acceptance, order, engine,
                       starts, reads)
        linear = np.zeros((len(models), width))
        linear[holder, index] = biases
        quadratic = np.zeros((len(models), width, width))
        quadratic[owner, rows, cols] = halves
        quadratic[owner, cols, rows] = halves
        return cls(linear, quadratic, None, sizes, counts, betas, keys, acceptance, order,
                   engine, starts, reads)

    def run(self, interrupt_function: Callable[[], bool] | None) -> list[np.ndarray]:
        """Binary states [reads done, n_b] of every BQM, in chunks checked by
        ``interrupt_function`` (see `BatchedSimulatedAnnealingSampler.sample_batch`)."""
        total = max(self.reads)
        checked = bool(interrupt_function) and max(self.counts) > 0
        chunk = _reads_per_check() if checked else total
        parts = []
        for start in range(0, total, chunk):
            parts.append(self.anneal(start, min(start + chunk, total)))
            if checked and _interrupted(interrupt_function):
                break
        return [np.concatenate([part[b] for part in parts]) for b in range(len(self.counts))]

    def anneal(self, start: int, stop: int) -> list[np.ndarray]:
        """Binary states of reads [start, min(stop, R_b)) of every BQM."""
        if self.starts is None:
            keys = self.keys if start == 0 else rng.combine(self.keys, start)
            if self.sparse is not None:
                sp = self.sparse
                states = anneal_sparse(sp.linear, sp.starts, sp.indptr, sp.indices, sp.data,
                                       betas=self.betas, num_reads=stop - start, keys=keys,
                                       acceptance=self.acceptance, order=self.order).states
                return [states[:, sp.starts[b]: sp.starts[b] + n]
                        for b, n in enumerate(self.counts)]
            out = anneal_dense(self.linear, self.quadratic, None, self.sizes,
                               betas=self.betas, num_reads=stop - start, keys=keys,
                               acceptance=self.acceptance, order=self.order, engine=self.engine)
            states = np.asarray(out.states)
            return [states[b, :, :n] for b, n in enumerate(self.counts)]
        if self.betas.shape[1] == 0:
            return [s[start:stop] for s in self.starts]
        return self._anneal_from_starts(start, stop)

    def _anneal_from_starts(self, start: int, stop: int) -> list[np.ndarray]:
        """One kernel row per read, gauge-transformed so that the kernel's own start z is the
        read's initial state s: x = y XOR g with g = z XOR s, h'_i = sigma_i (h_i + 2 (J g)_i),
        J'_ij = sigma_i sigma_j J_ij, sigma = 1 - 2 g; single flips keep their energy changes,
        so y's chain is x's."""
        spans = [np.arange(start, min(stop, r)) for r in self.reads]
        problem = np.concatenate([np.full(len(span), b) for b, span in enumerate(spans)])
        read = np.concatenate(spans)
        keys = rng.combine(self.keys[problem], read)
        sizes = self.sizes[problem]
        kernel_starts = self._kernel_starts(keys, sizes)
        wanted = np.zeros_like(kernel_starts)
        for b, n in enumerate(self.counts):
            wanted[problem == b, :n] = self.starts[b][start:stop]
        gauge = kernel_starts ^ wanted
        g = gauge.astype(np.float64)
        sigma = 1.0 - 2.0 * g
        quadratic = self.quadratic[problem]
        linear = self.linear[problem]
        pull = np.einsum("nij,nj->ni", quadratic, g)
        out = anneal_dense(sigma * (linear + 2.0 * pull),
                           quadratic * sigma[:, :, None] * sigma[:, None, :], None, sizes,
                           betas=self.betas[problem], keys=keys, acceptance=self.acceptance,
                           order=self.order, engine=self.engine)
        states = np.asarray(out.states)[:, 0] ^ gauge
        return [states[problem == b, :n] for b, n in enumerate(self.counts)]

    def _kernel_starts(self, keys: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """The kernel's starting states of one-read rows with ``keys``, int8 [N, W]: the
        complement of one sequential Metropolis sweep at beta 0 (every flip is taken)."""
        n, width = len(keys), self.linear.shape[1]
        flipped = anneal_dense(np.zeros((n, width)), np.zeros((n, width, width)), None, sizes,
                               betas=_PROBE_BETAS, keys=keys, engine=self.engine).states
        inside = np.arange(width)[None, :] < sizes[:, None]
        return np.where(inside, 1 - np.asarray(flipped)[:, 0], 0).astype(np.int8)


def _sampleset(samples: np.ndarray, labels: list, energies: np.ndarray, vartype: Any,
               info: dict) -> dimod.SampleSet:
    """`dimod.SampleSet.from_samples` (labels sorted where they sort, one occurrence per read)
    built from its record directly: a tenth of the cost, which counts at hundreds of BQMs."""
    order = np.arange(len(labels))
    try:
        order = np.array(sorted(order, key=labels.__getitem__), dtype=np.int64)
        labels = [labels[i] for i in order]
    except TypeError:  # labels of mixed types keep their order
        pass
    record = np.empty(len(samples), dtype=[("sample", samples.dtype, (len(labels),)),
                                           ("energy", np.float64), ("num_occurrences", np.int64)])
    record["sample"] = samples[:, order]
    record["energy"] = energies
    record["num_occurrences"] = 1
    return dimod.SampleSet(record.view(np.recarray), labels, info, vartype)


def _reads_per_check() -> int:
    """Reads per BQM between ``interrupt_function`` calls: one per numba thread."""
    from numba import get_num_threads

    return get_num_threads()


def _interrupted(interrupt_function: Callable[[], bool]) -> bool:
    try:
        return bool(interrupt_function())
    except Exception:  # neal counts a raising interrupt_function as an interrupt
        return True


def _seed(seed: Any) -> int:
    if seed is None:
        return int(np.random.randint(SEED_LIMIT))  # neal's draw: np.random.seed reproduces it
    if not isinstance(seed, Integral):
        raise TypeError(f"seed={seed!r} is not allowed: expected None or an integer")
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError("seed", seed, "None or an integer in [0, 2^31)")
    return int(seed)


def _acceptance(criteria: Any) -> str:
    name = criteria.lower() if isinstance(criteria, str) else criteria
    if name not in CRITERIA:
        raise ConfigError("proposal_acceptance_criteria", criteria, "'Metropolis' or 'Gibbs'")
    return name


def _check_schedule_keywords(schedule_type: Any, schedule: Any, per_beta: Any) -> None:
    if schedule_type not in SCHEDULE_TYPES:
        raise ConfigError("beta_schedule_type", schedule_type,
                          "one of " + ", ".join(map(repr, SCHEDULE_TYPES)))
    if schedule_type == "custom" and schedule is None:
        raise ConfigError("beta_schedule", None,
                          "an array of inverse temperatures for beta_schedule_type 'custom'")
    if schedule_type != "custom" and schedule is not None:
        raise ConfigError("beta_schedule", schedule, "None unless beta_schedule_type is 'custom'")
    if not isinstance(per_beta, Integral):
        raise TypeError(f"num_sweeps_per_beta={per_beta!r} is not allowed: expected an integer")
    if per_beta < 1:
        raise ConfigError("num_sweeps_per_beta", per_beta, "an integer >= 1")


def _schedules(bqms: Sequence[dimod.BinaryQuadraticModel], schedule_type: str, schedule: Any,
               beta_range: Any, num_sweeps: Any, per_beta: int) -> tuple[np.ndarray, list]:
    """Betas [B, S] (each beta of the schedule repeated ``per_beta`` times) and each BQM's
    beta range for its info, as neal."""
    if schedule_type == "custom":
        betas = _custom_schedule(schedule, beta_range, num_sweeps, per_beta)
        ranges = [[float(betas[0]), float(betas[-1])]] * len(bqms)
        rows = np.broadcast_to(betas, (len(bqms), len(betas)))
    else:
        num_sweeps = DEFAULT_NUM_SWEEPS if num_sweeps is None else num_sweeps
        if not isinstance(num_sweeps, Integral):
            raise TypeError(f"num_sweeps={num_sweeps!r} is not allowed: expected an integer")
        num_betas, rest = divmod(num_sweeps, per_beta)
        if rest or num_betas < 0:
            raise ConfigError("num_sweeps", num_sweeps,
                              f"an integer >= 0 divisible by num_sweeps_per_beta={per_beta}")
        if beta_range is None:
            ranges = [default_beta_range(bqm) for bqm in bqms]
        else:
            ranges = [_beta_range(beta_range)] * len(bqms)
        rows = np.stack([_neal_ramp(schedule_type, hot, cold, num_betas) for hot, cold in ranges])
    return np.repeat(rows, per_beta, axis=1), ranges


def default_beta_range(bqm: dimod.BinaryQuadraticModel) -> list[float]:
    """neal's default (hot, cold) beta range of ``bqm`` (dwave-samplers'
    ``default_beta_range``), on dimod's arrays instead of a Python loop over the couplings.

    On the Ising form (h, J): with f_i = |h_i| + sum_j |J_ij| (the largest field spin i can
    feel) and g_i the smallest non-zero |h_i| or |J_ij| at i, hot = ln 2 / (2 max_i f_i) (every
    flip accepted with probability >= 1/2) and cold = ln(m / 0.01) / (2 g), g = min_i g_i and m
    the number of spins whose g_i = g (an excitation rate of 0.01 at the end). A model without
    a non-zero bias gets neal's [0.1, 1] with its warning. Equal to neal's to float rounding
    (f is summed in another order); the ties m are exact.
    """
    ising = bqm if bqm.vartype is dimod.SPIN else bqm.change_vartype(dimod.SPIN, inplace=False)
    h, (rows, cols, couplings), _ = ising.to_numpy_vectors()
    size = len(h)
    field, coupling = np.abs(np.asarray(h, np.float64)), np.abs(np.asarray(couplings, np.float64))
    total = field + np.bincount(rows, coupling, size) + np.bincount(cols, coupling, size)
    least = np.where(field != 0, field, np.inf)
    nonzero = coupling != 0
    np.minimum.at(least, rows[nonzero], coupling[nonzero])
    np.minimum.at(least, cols[nonzero], coupling[nonzero])
    gaps = least[np.isfinite(least)]
    if gaps.size == 0:
        warnings.warn(ZERO_BIASES_WARNING, stacklevel=3)
        return list(ZERO_BIASES_RANGE)
    hot = np.log(2) / (2 * total.max())
    smallest = gaps.min()
    cold = np.log(np.count_nonzero(gaps == smallest) / EXCITATION_RATE) / (2 * smallest)
    return [float(hot), float(cold)]


def _custom_schedule(schedule: Any, beta_range: Any, num_sweeps: Any, per_beta: int
                     ) -> np.ndarray:
    try:
        betas = np.asarray(schedule, dtype=np.float64)
    except (TypeError, ValueError):
        betas = np.zeros(0)
    if betas.ndim != 1 or betas.size == 0 or not np.isfinite(betas).all() or (betas < 0).any():
        raise ConfigError("beta_schedule", schedule,
                          "a non-empty 1-D array of finite inverse temperatures >= 0")
    if num_sweeps is not None and num_sweeps != betas.size * per_beta:
        raise ConfigError("num_sweeps", num_sweeps, "None or len(beta_schedule) * "
                          f"num_sweeps_per_beta = {betas.size * per_beta} for 'custom'")
    if beta_range is not None and (len(beta_range) != 2 or beta_range[0] != betas[0]
                                   or beta_range[-1] != betas[-1]):
        raise ConfigError("beta_range", beta_range,
                          "None or (beta_schedule[0], beta_schedule[-1]) for 'custom'")
    return betas


def _beta_range(beta_range: Any) -> list[float]:
    try:
        hot, cold = map(float, beta_range)
    except (TypeError, ValueError):
        hot = cold = np.nan
    if not (np.isfinite([hot, cold]).all() and min(hot, cold) >= 0):
        raise ConfigError("beta_range", beta_range, "(first, last): two finite betas >= 0")
    return [hot, cold]


def _neal_ramp(schedule_type: str, hot: float, cold: float, num_betas: int) -> np.ndarray:
    """neal's schedule: one beta anneals at ``cold``; else geometric or linear from hot."""
    if num_betas == 1:
        return np.array([cold])
    if schedule_type == "geometric" and min(hot, cold) <= 0:
        raise ConfigError("beta_range", (hot, cold), "betas > 0 for beta_schedule_type "
                          "'geometric' (or 'linear', which may start at 0)")
    return ramp(num_betas, schedule_type, hot, cold)
