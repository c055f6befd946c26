"""OneHotProblems: E(x) = -sum w_i x_i + A (sum x_i - 1)^2, as arrays and as dimod BQMs."""

import itertools

import dimod
import numpy as np
import pytest

from qsample.problems import OneHotProblems


@pytest.fixture
def problems():
    weights = np.array([[0.0, -0.5, -2.0, -np.inf], [0.0, -1.0, -1.5, -3.0]])
    return OneHotProblems(weights=weights, penalty=np.array([1.5, 2.0]), sizes=np.array([3, 4]))


def direct_energy(w, a, x):
    x = np.asarray(x, dtype=float)
    return -(w[: len(x)] * x).sum() + a * (x.sum() - 1) ** 2


def test_energies_equal_the_one_hot_model_on_every_state(problems):
    for row in range(2):
        k = problems.sizes[row]
        states = np.array(list(itertools.product([0, 1], repeat=int(k))), dtype=np.int8)
        padded = np.zeros((1, len(states), problems.width), np.int8)
        padded[0, :, :k] = states
        batch = OneHotProblems(problems.weights[row:row + 1], problems.penalty[row:row + 1],
                               problems.sizes[row:row + 1])
        got = batch.energies(padded)[0]
        want = [direct_energy(problems.weights[row], problems.penalty[row], s) for s in states]
        assert np.allclose(got, want)
        bqm = problems.to_bqm(row)
        assert np.allclose(bqm.energies((states, list(range(k)))), want)


def test_one_hot_state_energy_is_minus_weight(problems):
    states = np.zeros((2, 3, 4), np.int8)
    for i in range(3):
        states[:, i, i] = 1
    assert np.allclose(problems.energies(states), -problems.weights[:, :3])


def test_union_bqm_is_the_disjoint_sum(problems):
    union = problems.union_bqm()
    assert set(union.variables) == {0, 1, 2, 4, 5, 6, 7}
    assert union.num_interactions == 3 + 6
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = {v: int(rng.integers(2)) for v in union.variables}
        rows = [[x[b * 4 + i] for i in range(problems.sizes[b])] for b in range(2)]
        want = sum(direct_energy(problems.weights[b], problems.penalty[b], rows[b])
                   for b in range(2))
        assert np.isclose(union.energy(x), want)


def test_dense_quadratic_reproduces_the_couplings(problems):
    J = problems.dense_quadratic()
    assert np.allclose(J, J.transpose(0, 2, 1))
    assert np.allclose(np.diagonal(J, axis1=1, axis2=2), 0)
    x = np.array([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=float)
    pairs = np.einsum("bi,bij,bj->b", x, J, x)
    ones = x.sum(1)
    assert np.allclose(pairs, problems.coupling * ones * (ones - 1) / 2)
    assert (J[0, 3] == 0).all() and (J[0, :, 3] == 0).all()


def test_bqm_vartype_and_offset(problems):
    bqm = problems.to_bqm(1)
    assert bqm.vartype is dimod.BINARY
    assert bqm.offset == pytest.approx(2.0)


def test_split_union_gives_each_row_its_slice_of_a_union_read(problems):
    states = np.array([[[1, 0, 1, 0], [0, 1, 0, 0]], [[0, 0, 1, 1], [1, 1, 1, 1]]], np.int8)
    union = problems.union_bqm()
    labels = problems.union_labels
    assert list(union.variables) == labels.tolist()
    samples = states.transpose(1, 0, 2).reshape(2, -1)[:, labels]  # [R, n] in union order
    assert np.array_equal(problems.split_union(samples), states)
    energies = union.energies((samples, labels.tolist()))
    np.testing.assert_allclose(energies, problems.energies(states).sum(axis=0))
