"""Coupled siblings on the QPU path, offline: `DWaveBackend` on the mock (`mock_sampler`, whose
stand-in samples the programmed problem exactly at beta = 6).

Specified here: a coupled group is embedded as one problem (on one n K-clique where it fits,
else on a minorminer embedding of its graph), and the embedded problem has exactly the logical
coupled energies on every read with intact chains; gumbel ``distinct`` on the QPU gives ordered
draws without replacement and boltzmann with a finite lambda the coupled target (chi-square
against the exact distributions, with negative controls); groups and uncoupled rows are packed
into as few calls as the embeddings allow; embeddings are cached on disk; groups the QPU or the
mock cannot take are refused with a `ConfigError`.
"""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from qsample import QuantumSampler, SamplerConfig
from qsample.backends.base import SolveRequest
from qsample.backends.dimod_backends import union_reads
from qsample.backends.dwave import DWaveBackend, GroupGraph
from qsample.backends.dwave_mock import MOCK_BETA_QPU, MOCK_MAX_GROUP, mock_sampler
from qsample.errors import ConfigError
from qsample.problems import OneHotProblems, SiblingCoupling

pytest.importorskip("dwave.system")
pytestmark = pytest.mark.filterwarnings("ignore:boltzmann mode on backend 'dwave'")

ACCEPT_P = 1e-3  # the exact target is rejected this rarely by sampling noise alone
REJECT_P = 1e-6  # a wrong target must be rejected at least this surely
GROUPS = 20  # coupled pairs per step (each an independent draw), one QPU call on Pegasus P6
STEPS = 50  # 1000 draws: every cell's expected count is 10 or more


def backend(tmp_path, topology=("pegasus", (6,)), seed=0):
    """The mock with a seeded stand-in, beta_qpu its true beta (no saved calibration)."""
    return DWaveBackend(mock_sampler(*topology, seed=seed), embedding_folder=tmp_path,
                        beta_qpu=MOCK_BETA_QPU, backoff=0.0)


def request_for(qpu, task):
    request = SolveRequest(task=task, num_reads=4, num_sweeps=None, beta_range=None,
                           beta_schedule="geometric", keys=np.zeros(1, np.uint64), coupling=1.0)
    return dataclasses.replace(request, settings=qpu.settings(request))


def coupled(groups, tokens, sizes, strength, seed=0):
    """Problems with random weights and penalty 1.5, rows coupled as ``groups``."""
    groups, tokens, sizes = (np.asarray(a, dtype=np.int64) for a in (groups, tokens, sizes))
    weights = np.random.default_rng(seed).normal(size=tokens.shape)
    weights[np.arange(tokens.shape[1])[None, :] >= sizes[:, None]] = -np.inf
    siblings = SiblingCoupling.from_tokens(groups, tokens, sizes, np.asarray(strength, float))
    return OneHotProblems(weights, np.full(len(sizes), 1.5), sizes, siblings)


def joint_energies(problems, states):
    """The sampler's energy of each joint read: rows' one-hot energies plus lambda_g per
    sibling pair on one token (`QuantumSampler._joint_pick`)."""
    siblings = problems.siblings
    return (problems.energies(states).sum(axis=0)
            + (siblings.strength[:, None] * siblings.pairs(states)).sum(axis=0))


def check_embedded_energies(qpu, problems, task):
    """Every joint one-hot state of every call of the plan, embedded with intact chains: the
    programmed energy equals the logical coupled energy (times the thermal scale), and the
    unembedded reads give back the states."""
    import dimod
    from dwave.embedding import majority_vote, unembed_sampleset

    request = request_for(qpu, task)
    calls = qpu.plan(problems)
    for rows, chains in calls:
        part, bqm, embedding, target = qpu.embed(problems, rows, chains, request)
        picks = np.array(list(itertools.product(*(range(int(k)) for k in part.sizes))))
        states = np.zeros((part.batch_size, len(picks), part.width), dtype=np.int8)
        for b in range(part.batch_size):
            states[b, np.arange(len(picks)), picks[:, b]] = 1
        qubits = list(target.variables)
        column = {q: n for n, q in enumerate(qubits)}
        embedded = np.zeros((len(picks), len(qubits)), dtype=np.int8)
        for label, chain in embedding.items():
            b, i = divmod(label, part.width)
            embedded[:, [column[q] for q in chain]] = states[b, :, i][:, None]
        programmed = target.energies((embedded, qubits))
        scale = 1.0 if task == "ground" else qpu._thermal_scale(part.union_bqm(), qpu.beta_qpu)
        np.testing.assert_allclose(programmed, scale * joint_energies(part, states), atol=1e-9)
        reads = dimod.SampleSet.from_samples_bqm((embedded, qubits), target)
        back = unembed_sampleset(reads, embedding, bqm, chain_break_method=majority_vote)
        np.testing.assert_array_equal(union_reads(back, part), states)
    return calls


@pytest.mark.parametrize("task", ["ground", "thermal"])
def test_embedded_groups_have_exactly_the_logical_coupled_energies(tmp_path, task):
    """A group of 3 sharing its tokens, a group of 2 sharing some (one row of 3 candidates)
    and an uncoupled row: all in one call, on 12-cliques."""
    tokens = [[5, 6, 7, 8], [5, 6, 7, 8], [8, 7, 6, 5], [1, 2, 3, 4], [9, 4, 1, 0], [0, 1, 2, 3]]
    problems = coupled([0, 0, 0, 1, 1, -1], tokens, [4, 4, 4, 4, 3, 4], [0.7, 1.3])
    calls = check_embedded_energies(backend(tmp_path), problems, task)
    assert len(calls) == 1 and sorted(calls[0][0]) == list(range(6))


def test_a_group_no_clique_holds_is_embedded_by_minorminer_with_the_same_energies(tmp_path):
    """Chimera C(3, 3, 4): its largest clique is 12; a group of 2 rows of 7 candidates
    (14 variables) gets a minorminer embedding of its own graph."""
    qpu = backend(tmp_path, ("chimera", (3, 3, 4)))
    assert not qpu.packing.cliques(14, 1) and qpu.packing.cliques(7, 1)
    tokens = [list(range(7)), [3, 2, 1, 0, 10, 11, 12], list(range(20, 27))]
    problems = coupled([0, 0, -1], tokens, [7, 7, 7], [0.9])
    calls = check_embedded_energies(qpu, problems, "thermal")
    assert sorted(len(rows) for rows, _ in calls) == [1, 2]  # the group on its own embedding
    assert list(tmp_path.glob("*-G*.json"))  # cached by the graph's structure


def ordered_pair_counts(tokens, groups):
    """counts [V, V] of (first row's token, second row's token) over steps and groups."""
    counts = np.zeros((4, 4), dtype=np.int64)
    for step in tokens:
        pairs = step.reshape(groups, 2)
        np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    return counts


def test_distinct_gumbel_on_the_mock_qpu_draws_ordered_pairs_without_replacement(tmp_path):
    """Groups of two identical rows, top_k = 4: the rows' tokens differ at every step, and the
    ordered pair (a, b) follows p_a p_b / (1 - p_a), neither the independent p_a p_b nor the
    independent draw conditioned on distinct tokens."""
    p = np.array([0.6, 0.2, 0.12, 0.08])
    x = torch.log(torch.tensor(p, dtype=torch.float64)).float().repeat(2 * GROUPS, 1)
    groups = np.repeat(np.arange(GROUPS), 2)
    sampler = QuantumSampler(SamplerConfig(mode="gumbel", backend=backend(tmp_path),
                                           coupling="distinct", top_k=4, seed=11))
    tokens = []
    for _ in range(STEPS):
        step = sampler.sample(x, groups=groups).numpy()
        assert (step[0::2] != step[1::2]).all()
        assert sampler.last_step().fallback_count == 0 and sampler.last_step().backend_calls == 1
        tokens.append(step)
    counts = ordered_pair_counts(tokens, GROUPS)
    off = ~np.eye(4, dtype=bool)
    draws = counts.sum()
    without = p[:, None] * p[None, :] / (1 - p[:, None])
    assert chisquare(counts[off], draws * without[off]).pvalue > ACCEPT_P
    independent = p[:, None] * p[None, :]
    assert chisquare(counts.ravel(), draws * independent.ravel()).pvalue < REJECT_P
    conditioned = independent[off] / independent[off].sum()
    assert chisquare(counts[off], draws * conditioned).pvalue < REJECT_P


def test_boltzmann_with_finite_coupling_on_the_mock_qpu_follows_the_joint_target(tmp_path):
    """Pairs of rows with different distributions over one vocabulary, lambda = 1: the joint
    token pair follows p_0(a) p_1(b) exp(-lambda [a = b]) / Z (the QPU's beta_qpu = 6 scaled
    to beta = 1, as for uncoupled rows), not the independent product."""
    lam = 1.0
    p0, p1 = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.1, 0.2, 0.3, 0.4])
    x = torch.log(torch.tensor(np.stack([p0, p1]))).float().repeat(GROUPS, 1)
    groups = np.repeat(np.arange(GROUPS), 2)
    sampler = QuantumSampler(SamplerConfig(mode="boltzmann", backend=backend(tmp_path),
                                           coupling=lam, top_k=4, seed=5))
    tokens, fallbacks = [], 0
    for _ in range(STEPS):
        tokens.append(sampler.sample(x, groups=groups).numpy())
        fallbacks += sampler.last_step().fallback_count
    assert fallbacks <= 0.01 * STEPS * GROUPS * 2
    counts = ordered_pair_counts(tokens, GROUPS).ravel()
    independent = (p0[:, None] * p1[None, :]).ravel()
    target = (p0[:, None] * p1[None, :] * np.exp(-lam * np.eye(4))).ravel()
    target /= target.sum()
    assert chisquare(counts, counts.sum() * target).pvalue > ACCEPT_P
    assert chisquare(counts, counts.sum() * independent).pvalue < REJECT_P


@pytest.mark.parametrize("topology", [("pegasus", (6,)), ("chimera", (3, 3, 4))],
                         ids=["pegasus", "chimera"])
def test_groups_and_uncoupled_rows_share_calls_and_embeddings_are_cached(tmp_path, topology):
    """A group of 3, a group of 2 and three uncoupled rows, K = 4: slots of 12 variables (the
    largest group), first fit: [group of 3], [group of 2 + a row], [two rows]; as many slots
    per call as disjoint 12-cliques fit (Pegasus P6: all, one call; Chimera C(3, 3, 4): one)."""
    qpu = backend(tmp_path, topology)
    x = torch.randn(7, 30, generator=torch.Generator().manual_seed(0))
    groups = [0, -1, 1, 0, -1, 1, 0]
    sampler = QuantumSampler(SamplerConfig(backend=qpu, coupling="distinct", top_k=4, seed=0))
    tokens = sampler.sample(x, groups=groups)
    per_call = len(qpu.packing.cliques(12, 3))
    assert sampler.last_step().backend_calls == -(-3 // per_call)
    assert sampler.last_step().fallback_count == 0
    assert len({int(t) for t in tokens[[0, 3, 6]]}) == 3 and tokens[2] != tokens[5]
    estimate = qpu.estimate(batch=6, top_k=4, num_reads=5, steps=10, group_size=3)
    assert estimate["calls_per_step"] == -(-2 // per_call) and estimate["calls"] == 10 * (
        estimate["calls_per_step"])
    assert estimate["rows_per_call"] == 3 * min(2, per_call)

    again = DWaveBackend(qpu.sampler, embedding_folder=tmp_path)
    sampler = QuantumSampler(SamplerConfig(backend=again, coupling="distinct", top_k=4, seed=0))
    sampler.sample(x, groups=groups)
    assert sampler.last_step().backend_calls == -(-3 // per_call)
    assert again.packing.searches == 0


def test_minorminer_groups_sample_and_are_found_once(tmp_path):
    """Chimera C(3, 3, 4), groups of 2 rows of 7 candidates: each group on a minorminer
    embedding of its graph (gumbel distinct: both rows on the first row's candidates, so
    candidate i of one row is coupled to candidate i of the other), as many per call as fit
    disjointly; distinct tokens, no fallback; the embeddings come from the cache the second
    time."""
    qpu = backend(tmp_path, ("chimera", (3, 3, 4)))
    x = torch.randn(4, 30, generator=torch.Generator().manual_seed(1))
    config = SamplerConfig(backend=qpu, coupling="distinct", top_k=7, seed=0)
    sampler = QuantumSampler(config)
    for _ in range(3):
        tokens = sampler.sample(x, groups=[0, 0, 1, 1])
        assert tokens[0] != tokens[1] and tokens[2] != tokens[3]
        assert sampler.last_step().fallback_count == 0
    graph = GroupGraph((7, 7), tuple((i, 7 + i) for i in range(7)))
    assert (tmp_path / f"{qpu.packing.key}-G{graph.digest}.json").exists()
    per_call = len(qpu.packing.minors(graph, 2))
    assert sampler.last_step().backend_calls == -(-2 // per_call)
    searches = qpu.packing.searches
    again = DWaveBackend(qpu.sampler, embedding_folder=tmp_path)
    QuantumSampler(dataclasses.replace(config, backend=again)).sample(x, groups=[0, 0, 1, 1])
    assert again.packing.searches == 0 and qpu.packing.searches == searches


def test_groups_the_qpu_or_the_mock_cannot_take_are_refused(tmp_path):
    """A group that no clique holds and minorminer cannot embed (2 x 10 variables on Chimera
    C(3, 3, 4)), and one above the mock's exact stand-in (n x K > MOCK_MAX_GROUP)."""
    qpu = backend(tmp_path, ("chimera", (3, 3, 4)))
    x = torch.randn(2, 30, generator=torch.Generator().manual_seed(0))
    sampler = QuantumSampler(SamplerConfig(backend=qpu, coupling="distinct", top_k=10, seed=0))
    with pytest.raises(ConfigError, match="minorminer found none"):
        sampler.sample(x, groups=[0, 0])
    top_k = MOCK_MAX_GROUP // 3 + 1
    sampler = QuantumSampler(SamplerConfig(backend=qpu, coupling="distinct", top_k=top_k,
                                           seed=0))
    with pytest.raises(ConfigError, match=f"at most {top_k - 1} for coupled groups of 3 rows"):
        sampler.sample(torch.randn(3, 30), groups=[0, 0, 0])
