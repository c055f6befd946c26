"""Specification: `BatchedSimulatedAnnealingSampler` is a drop-in for dwave-samplers'
``SimulatedAnnealingSampler`` (neal).

The same calls succeed or fail on both (TypeError where neal raises it, else ValueError), and a
success gives a SampleSet with the same variables, vartype, number of reads and info keys, and
energies that are the BQM's; with ``num_sweeps=0`` the samples are neal's (its initial states).
Ours additionally warns about and drops unknown keywords, refuses non-finite biases naming the
variable, and refuses a few calls neal accepts by accident (listed in `test_deliberately_stricter
_than_neal`). Seeds are fixed; CPU kernels run on conftest's numba threads.
"""

import itertools
import re
import unittest
from dataclasses import dataclass

import dimod
import dimod.testing
import numpy as np
import pytest
from dwave.samplers import SimulatedAnnealingSampler

from qsample.annealer import BatchedSimulatedAnnealingSampler
from qsample.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:All bqm biases are zero:UserWarning")


@dimod.testing.load_sampler_bqm_tests(BatchedSimulatedAnnealingSampler)
class TestDimodSamplerContract(unittest.TestCase):
    def test_sampler_api(self):
        dimod.testing.assert_sampler_api(BatchedSimulatedAnnealingSampler())


# ---------------------------------------------------------------- side by side with neal


@dataclass(frozen=True)
class Starts:
    """``count`` initial states for the BQM under test: variable i of read r is (r + i) % 2
    (-1/+1 for SPIN BQMs); int8, as neal fails on wider integer arrays of the BQM's vartype."""

    count: int

    def of(self, bqm: dimod.BinaryQuadraticModel) -> tuple[np.ndarray, list]:
        labels = list(bqm.variables)
        bits = ((np.arange(self.count)[:, None] + np.arange(len(labels))[None, :]) % 2
                ).astype(np.int8)
        return (2 * bits - 1 if bqm.vartype is dimod.SPIN else bits), labels


BQMS = {
    "spin": dimod.generators.ran_r(1, 6, seed=0),
    "binary": dimod.BQM({0: 1.0, 1: -2.0, "a": 0.5}, {(0, 1): 3.0, (1, "a"): -1.0}, 0.25,
                        "BINARY"),
    "empty": dimod.BQM({}, {}, 1.5, "SPIN"),
}

CASES = [
    {},
    dict(num_reads=3, seed=1),
    dict(num_sweeps=0, num_reads=4, seed=7),  # neal's random initial states for the seed
    dict(num_sweeps=0, initial_states=Starts(3)),  # num_reads from the initial states
    dict(num_sweeps=0, initial_states=Starts(2), num_reads=5, initial_states_generator="tile"),
    dict(num_sweeps=0, initial_states=Starts(2), num_reads=5, seed=3),
    dict(num_sweeps=0, initial_states=Starts(4), num_reads=2),  # truncated
    dict(num_sweeps=0, initial_states=Starts(2), num_reads=2, initial_states_generator="none"),
    dict(initial_states=Starts(2), num_reads=5, initial_states_generator="none"),
    dict(initial_states_generator="tile"),
    dict(initial_states_generator="bogus"),
    dict(initial_states=Starts(3), num_sweeps=20, seed=0),
    dict(num_sweeps=1, beta_range=(0, 1)),
    dict(num_sweeps=10, beta_range=(0, 1), beta_schedule_type="linear"),
    dict(num_sweeps=10, beta_range=(0, 1), beta_schedule_type="geometric"),
    dict(num_sweeps=10, beta_range=(2, 1)),
    dict(num_sweeps=10, beta_range=[0.5, 0.5]),
    dict(beta_range=(1,)),
    dict(beta_range=(-1, 1)),
    dict(num_sweeps=10, num_sweeps_per_beta=2),
    dict(num_sweeps=10, num_sweeps_per_beta=3),
    dict(num_sweeps_per_beta=0),
    dict(num_sweeps_per_beta=1.5),
    dict(beta_schedule_type="custom", beta_schedule=[0, 0.5, 2]),
    dict(beta_schedule_type="custom", beta_schedule=[0, 0.5, 2], num_sweeps_per_beta=2,
         num_sweeps=6, beta_range=(0, 2)),
    dict(beta_schedule_type="custom", beta_schedule=[0, 0.5, 2], num_sweeps=5),
    dict(beta_schedule_type="custom", beta_schedule=[0, 0.5, 2], beta_range=(0.1, 2)),
    dict(beta_schedule_type="custom", beta_schedule=[1, -1]),
    dict(beta_schedule_type="custom"),
    dict(beta_schedule=[1, 2]),
    dict(beta_schedule_type="cosine", num_sweeps=5),
    dict(seed=2**31 - 1),
    dict(seed=2**31),
    dict(seed=-1),
    dict(seed=1.5),
    dict(num_reads=0),
    dict(num_reads=2.0),
    dict(num_sweeps=-1),
    dict(num_sweeps=2.0),
    dict(num_reads=3, proposal_acceptance_criteria="Gibbs", randomize_order=True),
    dict(proposal_acceptance_criteria="gibbs"),
    dict(proposal_acceptance_criteria="METROPOLIS"),
    dict(num_reads=3, interrupt_function=lambda: False),
    dict(interrupt_function=3),
]


def _outcome(sampler: dimod.Sampler, bqm: dimod.BinaryQuadraticModel, kwargs: dict):
    """The SampleSet, or the kind of error: TypeError or ValueError."""
    try:
        return sampler.sample(bqm, **kwargs)
    except TypeError:
        return TypeError
    except ValueError:
        return ValueError


def _ordered(sampleset: dimod.SampleSet, labels: list) -> np.ndarray:
    return sampleset.record.sample[:, [sampleset.variables.index(v) for v in labels]]


def _case_id(kwargs: dict) -> str:
    """A stable id (xdist workers must agree): callables by name, not by address."""
    return ",".join(f"{k}={v.__name__ if callable(v) else v!r}" for k, v in kwargs.items())


@pytest.mark.parametrize("kwargs", CASES, ids=_case_id)
@pytest.mark.parametrize("name", list(BQMS))
def test_same_calls_same_outcomes_as_neal(name, kwargs):
    bqm = BQMS[name]
    kwargs = {k: v.of(bqm) if isinstance(v, Starts) else v for k, v in kwargs.items()}
    theirs = _outcome(SimulatedAnnealingSampler(), bqm, kwargs)
    ours = _outcome(BatchedSimulatedAnnealingSampler(), bqm, kwargs)
    if not isinstance(theirs, dimod.SampleSet):
        assert ours is theirs
        return
    assert isinstance(ours, dimod.SampleSet), ours
    assert set(ours.variables) == set(bqm.variables) and ours.vartype is bqm.vartype
    assert len(ours) == len(theirs)
    dimod.testing.assert_sampleset_energies(ours, bqm)
    assert set(ours.info) == set(theirs.info)
    assert set(theirs.info["timing"]) <= set(ours.info["timing"])
    assert ours.info["beta_schedule_type"] == theirs.info["beta_schedule_type"]
    if theirs.info["beta_range"] is not None:  # neal: None for "custom" without beta_range
        np.testing.assert_allclose(ours.info["beta_range"], theirs.info["beta_range"])
    if kwargs.get("num_sweeps") == 0:
        labels = list(bqm.variables)
        assert (_ordered(ours, labels) == _ordered(theirs, labels)).all()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # neal's nan schedule
def test_deliberately_stricter_than_neal():
    """neal accepts these by accident (a schedule type it never reads, betas that are not
    numbers, a criterion it never parses for an empty BQM); ours refuses them."""
    sampler, bqm = BatchedSimulatedAnnealingSampler(), BQMS["spin"]
    for kwargs, field in [(dict(beta_schedule_type="cosine", num_sweeps=1), "beta_schedule_type"),
                          (dict(beta_range=(0.1, np.inf), num_sweeps=3), "beta_range"),
                          (dict(beta_range=(np.nan, 1), num_sweeps=3), "beta_range")]:
        SimulatedAnnealingSampler().sample(bqm, **kwargs)
        with pytest.raises(ConfigError, match=field):
            sampler.sample(bqm, **kwargs)
    with pytest.raises(ConfigError, match="proposal_acceptance_criteria"):
        sampler.sample(BQMS["empty"], proposal_acceptance_criteria="Glauber")


# ---------------------------------------------------------------- keywords


def test_parameters_declare_every_neal_keyword_and_unknown_ones_are_dropped_with_a_warning():
    sampler = BatchedSimulatedAnnealingSampler()
    assert set(SimulatedAnnealingSampler().parameters) <= set(sampler.parameters)
    assert sampler.properties == SimulatedAnnealingSampler().properties
    bqm = BQMS["spin"]
    with pytest.warns(dimod.exceptions.SamplerUnknownArgWarning, match="not_a_keyword"):
        sampleset = sampler.sample(bqm, num_reads=2, num_sweeps=10, not_a_keyword=1)
    assert len(sampleset) == 2
    with pytest.warns(dimod.exceptions.SamplerUnknownArgWarning, match="also_unknown"):
        sets = sampler.sample_batch([bqm, bqm], num_reads=2, also_unknown=None)
    assert [len(s) for s in sets] == [2, 2]
    h, j, _ = bqm.to_ising()
    with pytest.warns(dimod.exceptions.SamplerUnknownArgWarning):
        assert len(sampler.sample_ising(h, j, num_reads=3, verbose=True)) == 3


@pytest.mark.parametrize("bqm, where", [
    (dimod.BQM({"a": 1.0, "b": np.nan}, {("a", "b"): 1.0}, 0.0, "SPIN"), "bqm.linear['b']"),
    (dimod.BQM({"a": 1.0, "b": -np.inf}, {}, 0.0, "BINARY"), "bqm.linear['b']"),
    (dimod.BQM({"a": 1.0, "b": 0.0, "c": 0.5}, {("a", "c"): np.inf}, 0.0, "SPIN"),
     "bqm.quadratic[('c', 'a')]"),
    (dimod.BQM({"a": 1.0}, {}, np.nan, "BINARY"), "bqm.offset"),
])
def test_non_finite_biases_are_refused_naming_the_variable(bqm, where):
    sampler = BatchedSimulatedAnnealingSampler()
    with pytest.raises(ConfigError, match=re.escape(where)):
        sampler.sample(bqm, num_reads=2, num_sweeps=10)
    with pytest.raises(ConfigError, match=re.escape(where.replace("bqm", "bqms[1]"))):
        sampler.sample_batch([BQMS["spin"], bqm])


def test_interrupt_function_is_checked_between_chunks_of_reads_as_neal_between_reads():
    """A chunk is as many reads per BQM as numba has threads (one here, as neal): a function
    that returns True on its n-th call leaves n chunks of reads; one that raises counts as
    True; with no variables it is never called. The first chunk's reads are the first reads
    of the uninterrupted call."""
    import numba

    chunk = numba.get_num_threads()
    bqm = dimod.generators.ran_r(1, 12, seed=1)
    calls = []

    def stop_on_second_call() -> bool:
        calls.append(None)
        return len(calls) == 2

    ours = BatchedSimulatedAnnealingSampler()
    out = ours.sample(bqm, num_reads=5, num_sweeps=10, seed=3,
                      interrupt_function=stop_on_second_call)
    assert len(out) == min(5, 2 * chunk) and len(calls) == 2
    calls.clear()
    neal = SimulatedAnnealingSampler().sample(bqm, num_reads=5, num_sweeps=10, seed=3,
                                              interrupt_function=stop_on_second_call)
    assert len(neal) == 2 and len(calls) == 2

    whole = ours.sample(bqm, num_reads=5, num_sweeps=10, seed=3)
    first = ours.sample(bqm, num_reads=5, num_sweeps=10, seed=3, interrupt_function=lambda: True)
    assert (first.record.sample == whole.record.sample[: len(first)]).all()

    def broken() -> bool:
        raise RuntimeError

    assert len(ours.sample(bqm, num_reads=5, num_sweeps=10, interrupt_function=broken)) == min(
        5, chunk)
    starts = Starts(4).of(bqm)
    assert len(ours.sample(bqm, initial_states=starts, num_sweeps=10,
                           interrupt_function=lambda: True)) == min(4, chunk)
    calls.clear()
    assert len(ours.sample(BQMS["empty"], num_reads=4, interrupt_function=stop_on_second_call)) == 4
    assert not calls


# ---------------------------------------------------------------- initial states


def test_initial_states_generators_tile_none_and_random():
    sampler, bqm = BatchedSimulatedAnnealingSampler(), BQMS["spin"]
    labels = list(bqm.variables)
    given, _ = Starts(2).of(bqm)
    tiled = sampler.sample(bqm, initial_states=(given, labels), num_reads=5, num_sweeps=0,
                           initial_states_generator="tile")
    assert (_ordered(tiled, labels) == given[[0, 1, 0, 1, 0]]).all()
    with pytest.raises(ValueError, match="insufficient"):
        sampler.sample(bqm, initial_states=(given, labels), num_reads=3,
                       initial_states_generator="none")
    filled = sampler.sample(bqm, initial_states=(given, labels), num_reads=40, num_sweeps=0,
                            seed=5)
    states = _ordered(filled, labels)
    assert (states[:2] == given).all() and set(np.unique(states[2:])) == {-1, 1}
    assert len({row.tobytes() for row in states[2:]}) > 10  # fresh states, not one repeated
    inferred = sampler.sample(bqm, initial_states=(given, labels), num_sweeps=0)
    assert (_ordered(inferred, labels) == given).all()
    binary = sampler.sample(bqm, initial_states=((given + 1) // 2, labels), num_sweeps=0)
    assert (_ordered(binary, labels) == given).all()  # BINARY states on a SPIN BQM
    with pytest.raises(ValueError, match="mismatch"):
        sampler.sample(bqm, initial_states=(given[:, 1:], labels[1:]))


def _local_minima(bqm: dimod.BinaryQuadraticModel) -> np.ndarray:
    """Every state from which each single flip raises the energy (SPIN BQM, enumerated)."""
    states = np.array(list(itertools.product([-1, 1], repeat=len(bqm))))
    energies = bqm.energies((states, list(bqm.variables)))
    index = {tuple(s): e for s, e in zip(states, energies, strict=True)}
    flips = [states * np.where(np.arange(len(bqm)) == i, -1, 1) for i in range(len(bqm))]
    worse = np.all([[index[tuple(f)] > e for f, e in zip(flipped, energies, strict=True)]
                    for flipped in flips], axis=0)
    return states[worse]


@pytest.mark.parametrize("randomize_order", [False, True])
def test_annealing_starts_from_the_initial_states(randomize_order):
    """At beta = 50 no flip out of a strict local minimum is taken (probability < e^-50), so
    reads started at local minima stay there, one kernel call for all of them."""
    bqm = dimod.generators.ran_r(1, 10, seed=3)
    minima = _local_minima(bqm)
    assert len(minima) >= 3
    starts = np.concatenate([minima, minima[::-1]])
    out = BatchedSimulatedAnnealingSampler().sample(
        bqm, initial_states=(starts, list(bqm.variables)), beta_schedule_type="custom",
        beta_schedule=[50.0] * 3, randomize_order=randomize_order, seed=1)
    assert (_ordered(out, list(bqm.variables)) == starts).all()


def test_sample_batch_takes_initial_states_per_bqm_and_spin_binary_twins_agree():
    spin = dimod.generators.ran_r(1, 8, seed=4)
    binary = spin.binary
    labels = list(spin.variables)
    given, _ = Starts(3).of(spin)
    sampler = BatchedSimulatedAnnealingSampler()
    sets = sampler.sample_batch([spin, binary, BQMS["empty"]],
                                initial_states=[(given, labels), ((given[:2] + 1) // 2, labels),
                                                None],
                                num_sweeps=30, seed=2)
    assert [len(s) for s in sets] == [3, 2, 1]
    for sampleset, bqm in zip(sets, [spin, binary, BQMS["empty"]], strict=True):
        dimod.testing.assert_sampleset_energies(sampleset, bqm)
    twin = sampler.sample(binary, num_reads=6, num_sweeps=30, seed=9)
    same = sampler.sample(spin, num_reads=6, num_sweeps=30, seed=9)
    assert ((_ordered(same, labels) + 1) // 2 == _ordered(twin, labels)).all()
    with pytest.raises(ConfigError, match="initial_states"):
        sampler.sample_batch([spin, binary], initial_states=[None])


# ---------------------------------------------------------------- quality


@pytest.mark.parametrize("make", [
    lambda seed: dimod.generators.ran_r(1, 32, seed=seed),
    lambda seed: dimod.generators.frustrated_loop(24, 24, seed=seed),
], ids=["ran_r", "frustrated_loop"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lowest_energy_is_as_good_as_neals(make, seed):
    """Easy instances (K <= 32, 20 reads of 300 sweeps): both find the lowest energy either
    sees, so ours is at least as low as neal's, with and without initial states."""
    bqm = make(seed)
    args = dict(num_reads=20, num_sweeps=300, seed=seed)
    theirs = SimulatedAnnealingSampler().sample(bqm, **args)
    ours = BatchedSimulatedAnnealingSampler().sample(bqm, **args)
    assert ours.first.energy <= theirs.first.energy
    starts = np.ones((20, len(bqm)), dtype=np.int8)
    restarted = BatchedSimulatedAnnealingSampler().sample(
        bqm, initial_states=(starts, list(bqm.variables)), **args)
    assert restarted.first.energy <= theirs.first.energy


def test_default_beta_range_is_neals_on_arrays():
    """neal's default (hot, cold) range, computed on dimod's arrays: equal to float rounding
    (hot sums the fields in another order), the ties that set cold exactly; a model without a
    non-zero bias gets neal's [0.1, 1] and its warning."""
    from dwave.samplers.sa.sampler import default_beta_range as neals

    from qsample.annealer.sampler import default_beta_range

    cases = []
    for seed in range(10):
        cases += [dimod.generators.gnp_random_bqm(30, 0.3, "BINARY", random_state=seed),
                  dimod.generators.gnp_random_bqm(30, 0.3, "SPIN", random_state=seed),
                  dimod.generators.ran_r(3, 20, seed=seed).change_vartype("BINARY",
                                                                           inplace=False),
                  dimod.generators.randint(15, "BINARY", low=-3, high=3, seed=seed)]
    cases.append(dimod.BQM({"a": 0.0, "b": 2.0}, {}, 0.0, "SPIN"))  # an unbiased variable
    for bqm in cases:
        hot, cold = default_beta_range(bqm)
        their_hot, their_cold = neals(bqm)
        assert hot == pytest.approx(their_hot, rel=1e-12) and cold == their_cold
    with pytest.warns(UserWarning, match="All bqm biases are zero"):
        assert default_beta_range(dimod.BQM({"a": 0.0}, {}, 0.0, "BINARY")) == [0.1, 1.0]


def _sparse_problems(sizes, density, seed):
    """Random problems of the given sizes as compressed rows and as padded dense arrays."""
    draw = np.random.default_rng(seed)
    width = max(sizes)
    linear = np.zeros((len(sizes), width))
    quadratic = np.zeros((len(sizes), width, width))
    for b, k in enumerate(sizes):
        linear[b, :k] = draw.normal(size=k)
        upper = np.triu(draw.normal(size=(k, k)) * (draw.random((k, k)) < density), 1)
        quadratic[b, :k, :k] = upper + upper.T
    starts = np.concatenate([[0], np.cumsum(sizes)])
    flat = np.concatenate([linear[b, :k] for b, k in enumerate(sizes)])
    rows, cols, data = [], [], []
    for b, k in enumerate(sizes):
        i, j = np.nonzero(quadratic[b, :k, :k])
        rows.append(i + starts[b])
        cols.append(j + starts[b])
        data.append(quadratic[b, i, j])
    rows, cols, data = map(np.concatenate, (rows, cols, data))  # row-major: columns sorted
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=starts[-1]))])
    return (flat, starts, indptr, cols, data), (linear, quadratic)


@pytest.mark.parametrize("acceptance", ["metropolis", "gibbs"])
@pytest.mark.parametrize("order", ["sequential", "random"])
def test_sparse_kernel_gives_the_dense_kernels_reads(acceptance, order):
    """Same dynamics and draws on compressed rows: identical reads and energies, mixed sizes
    included (the dense arrays pad every problem to the largest)."""
    from qsample.annealer import anneal_dense, anneal_sparse, beta_schedule

    sizes = [5, 1, 40, 12]
    sparse, (linear, quadratic) = _sparse_problems(sizes, 0.2, seed=3)
    betas = beta_schedule(25, "geometric", (0.1, 5.0))
    ours = anneal_sparse(*sparse, betas=betas, num_reads=6, seed=9, acceptance=acceptance,
                         order=order)
    dense = anneal_dense(linear, quadratic, None, np.array(sizes), betas=betas, num_reads=6,
                         seed=9, acceptance=acceptance, order=order)
    starts = sparse[1]
    for b, k in enumerate(sizes):
        np.testing.assert_array_equal(ours.states[:, starts[b]:starts[b] + k],
                                      dense.states[b, :, :k])
    np.testing.assert_array_equal(ours.energies, dense.energies)


def test_sample_batch_takes_compressed_rows_for_sparse_or_mixed_batches(monkeypatch):
    """A Chimera-structured BQM and a batch of 63 small BQMs with one large one go through the
    sparse kernel (no B x W x W padding) and give the dense path's samples."""
    from dwave.graphs import chimera_graph

    from qsample.annealer import sampler as module

    chimera = dimod.generators.ran_r(1, chimera_graph(4), seed=0)
    mixed = [dimod.generators.ran_r(1, 4, seed=s) for s in range(63)]
    mixed.append(dimod.generators.ran_r(1, 300, seed=63))
    built = []
    original = module._Batch.of

    def record(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(module._Batch, "of", staticmethod(record))
    results = {}
    for share in (module.SPARSE_SHARE, 0.0):  # 0: the dense path, for comparison
        batched = BatchedSimulatedAnnealingSampler(sparse_share=share)
        results[share] = [batched.sample(chimera, num_reads=4, num_sweeps=50, seed=1),
                          *batched.sample_batch(mixed, num_reads=4, num_sweeps=50, seed=1)]
    assert built[0].sparse is not None and built[1].sparse is not None
    assert built[1].quadratic is None  # not 64 x 300 x 300
    assert built[2].sparse is None and built[3].sparse is None
    for ours, dense in zip(results[module.SPARSE_SHARE], results[0.0], strict=True):
        np.testing.assert_array_equal(ours.record.sample, dense.record.sample)
        np.testing.assert_allclose(ours.record.energy, dense.record.energy)


@pytest.mark.parametrize("vartype", ["BINARY", "SPIN"])
@pytest.mark.parametrize("labels", [["b", "a", "c"], [2, "x", 0]], ids=["sortable", "mixed"])
def test_samplesets_are_dimods_own_for_the_same_reads(vartype, labels):
    """`sample_batch` builds each SampleSet from its record directly: the same variables (sorted
    where they sort), samples, energies, occurrences and vartype as dimod's from_samples_bqm."""
    bqm = dimod.BQM({labels[0]: 0.5, labels[1]: -1.0, labels[2]: 0.25},
                    {(labels[0], labels[1]): -1.5, (labels[1], labels[2]): 2.0}, 0.75, vartype)
    ours = BatchedSimulatedAnnealingSampler().sample_batch([bqm], num_reads=7, seed=3)[0]
    theirs = dimod.SampleSet.from_samples_bqm(ours, bqm)
    assert list(ours.variables) == list(theirs.variables)
    assert ours.vartype is theirs.vartype
    for field in ("sample", "energy", "num_occurrences"):
        np.testing.assert_array_equal(ours.record[field], theirs.record[field])
    assert ours.record.dtype == theirs.record.dtype
