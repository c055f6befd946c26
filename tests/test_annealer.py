"""Specification of the batched annealer (`qsample.annealer`, CPU kernels).

Statistical tests: at a fixed inverse temperature a chain that has mixed samples the Boltzmann
distribution exp(-beta E) / Z, which we enumerate exactly for K <= 12 and compare by Pearson's
chi-square (bins with expected count < 5 merged). Seeds are fixed; a faithful sampler fails a
case with probability ALPHA = 1e-3. The same test must reject negative controls: samples at
another temperature, the ground state only, and uniform states.
"""

import dimod
import numpy as np
import pytest
from annealer_cases import (
    ALPHA,
    all_states,
    boltzmann,
    dense_energies,
    dense_problem,
    fit_states,
    onehot_energies,
)

from qsample.annealer import (
    BatchedSimulatedAnnealingSampler,
    anneal_dense,
    anneal_onehot,
    beta_schedule,
)
from qsample.errors import ConfigError

READS = 20_000
DYNAMICS = [(a, o) for a in ("metropolis", "gibbs") for o in ("sequential", "random")]


@pytest.mark.statistical
@pytest.mark.parametrize("acceptance, order", DYNAMICS)
@pytest.mark.parametrize("k", [6, 10])
def test_dense_model_samples_the_exact_boltzmann_distribution(k, acceptance, order):
    h, j = dense_problem(k, seed=k)
    out = anneal_dense(h[None], j[None], betas=beta_schedule(60, "fixed", beta=1.0),
                       num_reads=READS, acceptance=acceptance, order=order, seed=11)
    target = boltzmann(dense_energies(h, j), 1.0)
    assert fit_states(out.states[0], target).p_value >= ALPHA

    hotter = anneal_dense(h[None], j[None], betas=beta_schedule(60, "fixed", beta=0.7),
                          num_reads=READS, acceptance=acceptance, order=order, seed=11)
    assert fit_states(hotter.states[0], target).p_value < ALPHA


@pytest.mark.statistical
def test_the_chi_square_rejects_ground_state_and_uniform_controls():
    h, j = dense_problem(10, seed=10)
    energies = dense_energies(h, j)
    target = boltzmann(energies, 1.0)
    states = all_states(10)
    ground = np.repeat(states[np.argmin(energies)][None], READS, axis=0)
    uniform = states[np.random.default_rng(0).integers(0, len(states), READS)]
    assert fit_states(ground, target).p_value < ALPHA
    assert fit_states(uniform, target).p_value < ALPHA


@pytest.mark.statistical
@pytest.mark.parametrize("acceptance, order", DYNAMICS)
def test_onehot_model_samples_the_exact_boltzmann_distribution(acceptance, order):
    """The structured O(1) path, over all 2^K states (one-hot and not), at beta = 1."""
    k, penalty = 8, 1.5
    w = np.log(np.random.default_rng(3).dirichlet(np.ones(k)))
    out = anneal_onehot(w[None], penalty, betas=beta_schedule(40, "fixed", beta=1.0),
                        num_reads=READS, acceptance=acceptance, order=order, seed=5)
    target = boltzmann(onehot_energies(w, penalty), 1.0)
    assert fit_states(out.states[0], target).p_value >= ALPHA
    wrong = boltzmann(onehot_energies(w, penalty), 1.5)
    assert fit_states(out.states[0], wrong).p_value < ALPHA


@pytest.mark.parametrize("acceptance, order", DYNAMICS)
def test_onehot_tables_and_per_attempt_exponentials_make_the_same_decisions(acceptance, order):
    """Sweeps where beta (|w| + A (2K + 1)) would overflow the ratio tables compute exp(-beta d)
    per attempt; with the same draws both paths take the same flips (forced here with
    table_limit=0)."""
    from qsample.annealer import cpu, problem_keys

    draw = np.random.default_rng(7)
    w = draw.normal(size=(4, 16))
    args = (w, np.full(4, 1.2), np.full(4, 16), problem_keys(3, 4),
            np.tile(beta_schedule(30, "geometric", (0.1, 8)), (4, 1)), 6,
            acceptance == "gibbs", order == "random")
    outs = []
    for limit in (cpu.EXP_LIMIT, 0.0):
        states, energies = np.empty((4, 6, 16), np.int8), np.empty((4, 6))
        cpu.anneal_onehot(*args, states, energies, table_limit=limit)
        outs.append(states)
    assert (outs[0] == outs[1]).all()


def test_energies_match_the_states():
    draw = np.random.default_rng(0)
    w = draw.normal(size=(5, 12))
    sizes = np.array([12, 3, 7, 1, 12])
    out = anneal_onehot(w, np.full(5, 0.7), sizes, betas=beta_schedule(5, "linear", (0.1, 1)),
                        num_reads=4, seed=0)
    x = out.states.astype(np.float64)
    assert (out.states[1, :, 3:] == 0).all() and (out.states[3, :, 1:] == 0).all()
    masked = np.where(np.arange(12)[None] < sizes[:, None], w, 0.0)
    expected = -np.einsum("brk,bk->br", x, masked) + 0.7 * (x.sum(axis=2) - 1) ** 2
    np.testing.assert_allclose(out.energies, expected, atol=1e-9)

    h, j = dense_problem(12, seed=1)
    dense = anneal_dense(np.stack([h, h]), np.stack([j, j]), np.array([0.5, -1.0]),
                         betas=beta_schedule(5, "geometric", (0.1, 1)), num_reads=3, seed=0)
    x = dense.states.astype(np.float64)
    expected = (np.array([[0.5], [-1.0]]) + np.einsum("brk,k->br", x, h)
                + np.einsum("bri,ij,brj->br", x, j, x))
    np.testing.assert_allclose(dense.energies, expected, atol=1e-9)


def test_keep_best_returns_each_problems_lowest_energy_read():
    h, j = dense_problem(16, seed=2)
    args = dict(betas=beta_schedule(10, "geometric", (0.1, 3)), num_reads=12, seed=4)
    every = anneal_dense(np.stack([h, -h]), np.stack([j, j]), **args)
    best = anneal_dense(np.stack([h, -h]), np.stack([j, j]), keep_best=True, **args)
    assert best.states.shape == (2, 1, 16)
    np.testing.assert_allclose(best.energies[:, 0], every.energies.min(axis=1))
    picks = every.energies.argmin(axis=1)
    assert (best.states[:, 0] == every.states[[0, 1], picks]).all()


def test_same_seed_same_samples_whatever_the_batch_composition():
    draw = np.random.default_rng(1)
    w = draw.normal(size=(6, 16))
    keys = np.arange(100, 106, dtype=np.uint64)
    args = dict(betas=beta_schedule(20, "geometric", (0.1, 5)), num_reads=3)
    full = anneal_onehot(w, 1.0, keys=keys, **args)
    again = anneal_onehot(w, 1.0, keys=keys, **args)
    part = anneal_onehot(w[[4, 1]], 1.0, keys=keys[[4, 1]], **args)
    assert (full.states == again.states).all()
    assert (full.states[[4, 1]] == part.states).all()
    other = anneal_onehot(w, 1.0, keys=keys + 1, **args)
    assert (other.states != full.states).any()
    h, j = dense_problem(8, seed=0)
    one = anneal_dense(h[None], j[None], betas=np.ones(3), num_reads=5, seed=9)
    two = anneal_dense(np.stack([h, h]), np.stack([j, j]), betas=np.ones(3), num_reads=5, seed=9)
    assert (one.states[0] == two.states[0]).all()  # problem 0 keyed by (seed, 0) either way
    assert (two.states[0] != two.states[1]).any()


def test_torch_inputs_come_back_as_torch():
    import torch

    out = anneal_onehot(torch.zeros(2, 4), torch.ones(2), betas=np.ones(2), seed=0)
    assert isinstance(out.states, torch.Tensor) and out.states.dtype == torch.int8
    assert out.energies.dtype == torch.float64


@pytest.mark.parametrize("kwargs, field", [
    (dict(acceptance="glauber"), "acceptance"),
    (dict(order="backwards"), "order"),
    (dict(num_reads=0), "num_reads"),
    (dict(betas="geometric"), "betas"),
    (dict(betas=np.array([1.0, np.nan])), "betas"),
    (dict(betas=np.ones((3, 4))), "betas"),
    (dict(sizes=np.array([5, 1])), "sizes"),
    (dict(penalty=np.array([1.0, 0.0])), "penalty"),
    (dict(engine="fpga"), "engine"),
    (dict(engine="triton"), "engine"),  # CPU arrays without Triton's interpreter
    (dict(seed=-1), "seed"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    args = dict(weights=np.zeros((2, 4)), penalty=np.ones(2), betas=np.ones(3))
    args.update(kwargs)
    with pytest.raises(ConfigError, match=field):
        anneal_onehot(**args)


@pytest.mark.parametrize("kwargs, field", [
    (dict(num_sweeps=0), "num_sweeps"),
    (dict(beta_range=(2.0, 1.0)), "beta_range"),
    (dict(schedule="cosine"), "beta_schedule"),
    (dict(schedule="fixed"), "beta"),
])
def test_bad_schedules_name_the_field(kwargs, field):
    args = dict(num_sweeps=10, schedule="geometric", beta_range=(0.1, 1.0))
    args.update(kwargs)
    with pytest.raises(ConfigError, match=field):
        beta_schedule(**args)


def test_schedules_follow_neal():
    np.testing.assert_allclose(beta_schedule(5, "geometric", (0.1, 10)),
                               np.geomspace(0.1, 10, 5))
    np.testing.assert_allclose(beta_schedule(3, "linear", (1, 2)), [1, 1.5, 2])
    assert (beta_schedule(4, "fixed", beta=2.0) == 2.0).all()
    np.testing.assert_allclose(beta_schedule(0, [0.5, 1, 2]), [0.5, 1, 2])


# ---------------------------------------------------------------- dimod Sampler interface


def test_dimod_sampler_returns_samplesets_with_the_bqms_own_energies():
    spin = dimod.BQM({"a": 0.5, "b": -1.0, "c": 0.2}, {("a", "b"): -1.0, ("b", "c"): 0.7}, 0.3,
                     "SPIN")
    binary = dimod.BQM({0: 1.0, 1: -2.0}, {(0, 1): 3.0}, 0.0, "BINARY")
    sampler = BatchedSimulatedAnnealingSampler()
    sets = sampler.sample_batch([spin, binary], num_reads=7, num_sweeps=50, seed=0)
    assert [len(s) for s in sets] == [7, 7]
    assert set(sets[0].variables) == {"a", "b", "c"} and sets[0].vartype is dimod.SPIN
    assert set(np.unique(sets[0].record.sample)) <= {-1, 1}
    for bqm, sampleset in zip([spin, binary], sets, strict=True):
        np.testing.assert_allclose(sampleset.record.energy, bqm.energies(sampleset))
    assert sets[1].first.sample == {0: 0, 1: 1}  # the ground state of the binary model
    one = sampler.sample(spin, num_reads=7, num_sweeps=50, seed=0)
    assert (one.record.sample == sets[0].record.sample).all()


def test_dimod_sampler_schedules_and_errors():
    bqm = dimod.generators.ran_r(1, 10, seed=0)
    sampler = BatchedSimulatedAnnealingSampler()
    custom = sampler.sample(bqm, beta_schedule_type="custom", beta_schedule=[0.1, 1, 5], seed=0)
    assert custom.info["beta_range"] == [0.1, 5.0]
    gibbs = sampler.sample(bqm, proposal_acceptance_criteria="Gibbs", randomize_order=True,
                           num_reads=3, num_sweeps=20, keep_best=True, seed=0)
    assert len(gibbs) == 1
    with pytest.raises(ConfigError, match="beta_schedule_type"):
        sampler.sample(bqm, beta_schedule_type="cosine")
    with pytest.raises(ConfigError, match="proposal_acceptance_criteria"):
        sampler.sample(bqm, proposal_acceptance_criteria="Glauber")
    with pytest.raises(ConfigError, match="beta_schedule"):
        sampler.sample(bqm, beta_schedule_type="custom")
    assert sampler.sample_batch([]) == []


@pytest.mark.statistical
def test_ground_state_hit_rate_on_dense_spin_glasses_is_at_least_neals():
    """K = 64 Gaussian spin glasses, same sweeps, reads and schedule (neal's default range of
    each BQM). The reference ground energy is the best of both samplers and of a long neal run.
    Reads of one problem are correlated, so the margin is three binomial standard deviations
    of neal's hit count."""
    from dwave.samplers import SimulatedAnnealingSampler
    from dwave.samplers.sa.sampler import default_beta_range

    k, problems, reads, sweeps = 64, 12, 50, 100
    bqms = []
    for seed in range(problems):
        weights = np.triu(np.random.default_rng(seed).normal(size=(k, k)), 1)
        rows, cols = np.nonzero(weights)
        couplings = {(int(a), int(b)): float(weights[a, b])
                     for a, b in zip(rows, cols, strict=True)}
        bqms.append(dimod.BQM.from_ising({}, couplings))
    neal = SimulatedAnnealingSampler()
    ours = BatchedSimulatedAnnealingSampler().sample_batch(bqms, num_reads=reads,
                                                          num_sweeps=sweeps, seed=1)
    hits_ours = hits_neal = 0
    for index, bqm in enumerate(bqms):
        theirs = neal.sample(bqm, num_reads=reads, num_sweeps=sweeps, seed=index,
                             beta_range=default_beta_range(bqm))
        long_run = neal.sample(bqm, num_reads=100, num_sweeps=3000, seed=99)
        best = min(long_run.first.energy, theirs.first.energy, ours[index].first.energy)
        hits_ours += int((ours[index].record.energy <= best + 1e-6).sum())
        hits_neal += int((theirs.record.energy <= best + 1e-6).sum())
    total = problems * reads
    rate = hits_neal / total
    margin = 3 * np.sqrt(total * rate * (1 - rate))
    assert hits_ours >= hits_neal - margin, (hits_ours, hits_neal)
    assert hits_neal > margin  # neal finds the best often enough for the comparison to bite


def test_dense_coupling_must_be_symmetric_with_zero_diagonal():
    j = np.zeros((1, 3, 3))
    j[0, 0, 1] = 1.0
    with pytest.raises(ConfigError, match="quadratic"):
        anneal_dense(np.zeros((1, 3)), j, betas=np.ones(2))
    j = np.eye(3)[None]
    with pytest.raises(ConfigError, match="quadratic"):
        anneal_dense(np.zeros((1, 3)), j, betas=np.ones(2))
