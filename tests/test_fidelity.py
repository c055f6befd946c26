"""Statistical specification: each faithful mode x backend samples softmax(l / T) over the
candidate set.

For each case we draw 20,000 tokens through `QuantumSampler.sample` (rows of one batch are
independent draws with distinct keys) and run Pearson's chi-square test against the exact target,
merging bins with expected count < 5. Under the null hypothesis the p-value is uniform, so a
faithful sampler fails a single case with probability ALPHA = 1e-3; seeds are fixed, so the suite
is deterministic. The same test must reject the negative controls: argmax, uniform over the
candidates, softmax at a wrong temperature, and an annealer run too short to mix.
"""

import numpy as np
import pytest
import torch
from conftest import record_fidelity, shaped_logits, softmax

from qsample import QuantumSampler, SamplerConfig
from qsample.stats import chi_square, counts_of

DRAWS = 20_000
ALPHA = 1e-3
TEMPERATURE = 0.8

FAITHFUL = (
    [(mode, "neal", shape, k) for mode in ("gumbel", "boltzmann")
     for shape in ("flat", "peaked") for k in (8, 16, 64)]
    + [(mode, "tree", shape, k) for mode in ("gumbel", "boltzmann")
       for shape in ("flat", "peaked") for k in (8, 16)]
    + [(mode, "exact", shape, 8) for mode in ("gumbel", "boltzmann")
       for shape in ("flat", "peaked")]
)


def logits_rows(shape: str, k: int, rows: int) -> torch.Tensor:
    """rows copies of a [V = k + 24] logits vector whose top k entries are the test shape
    (scaled by T so that softmax(l / T) over the top k is the shape's softmax)."""
    values = np.concatenate([shaped_logits(shape, k), np.full(24, -40.0)])
    vocab = np.random.default_rng(k).permutation(len(values))  # candidates are not ids 0..k-1
    row = np.empty_like(values)
    row[vocab] = values * TEMPERATURE
    return torch.tensor(row, dtype=torch.float32).expand(rows, -1), vocab[:k]


def draw_tokens(config: SamplerConfig, shape: str, k: int, draws: int = DRAWS) -> np.ndarray:
    """Candidate ranks (0 = most likely) of ``draws`` tokens sampled through qsample."""
    chunk = 1000
    logits, ids = logits_rows(shape, k, chunk)
    sampler = QuantumSampler(config)
    tokens = np.concatenate([sampler.sample(logits).numpy() for _ in range(draws // chunk)])
    rank_of = {int(t): r for r, t in enumerate(ids)}
    ranks = np.array([rank_of.get(int(t), -1) for t in tokens])
    assert (ranks >= 0).all(), "a token outside the candidate set was returned"
    summary = sampler.telemetry.summary()
    assert summary["fallback_rate"] < 0.01, summary
    return ranks


def fit(ranks: np.ndarray, shape: str, k: int, label: str):
    result = chi_square(counts_of(ranks, k), softmax(shaped_logits(shape, k)))
    record_fidelity({"case": label, "draws": result.draws, "chi2": result.chi2,
                     "dof": result.dof, "p": result.p_value, "tv": result.tv})
    return result


@pytest.mark.statistical
@pytest.mark.parametrize("mode, backend, shape, k", FAITHFUL,
                         ids=[f"{m}-{b}-{s}-K{k}" for m, b, s, k in FAITHFUL])
def test_faithful_to_softmax_over_candidates(mode, backend, shape, k):
    config = SamplerConfig(mode=mode, backend=backend, top_k=k, temperature=TEMPERATURE,
                           seed=2024)
    ranks = draw_tokens(config, shape, k)
    result = fit(ranks, shape, k, f"{mode}/{backend}/{shape}/K={k}")
    assert result.p_value >= ALPHA, result


def sample_numpy(probs: np.ndarray, draws: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(len(probs), size=draws, p=probs)


CONTROLS = ["argmax", "uniform", "temperature x1.5", "temperature x0.67"]


@pytest.mark.statistical
@pytest.mark.parametrize("shape", ["flat", "peaked"])
@pytest.mark.parametrize("k", [8, 16, 64])
@pytest.mark.parametrize("control", CONTROLS)
def test_negative_controls_are_rejected(control, shape, k):
    logits = shaped_logits(shape, k)
    if control == "argmax":
        ranks = np.zeros(DRAWS, dtype=np.int64)
    elif control == "uniform":
        ranks = sample_numpy(np.full(k, 1.0 / k), DRAWS, 1)
    else:
        factor = 1.5 if "1.5" in control else 1 / 1.5
        ranks = sample_numpy(softmax(logits / factor), DRAWS, 2)
    result = fit(ranks, shape, k, f"control {control}/{shape}/K={k}")
    assert result.p_value < ALPHA, result


@pytest.mark.statistical
@pytest.mark.parametrize("shape", ["flat", "peaked"])
def test_annealer_controls_are_rejected(shape):
    """qsample itself at the wrong temperature, and a boltzmann chain too short to mix from its
    random start (one sweep, high penalty), must fail the same test."""
    k = 16
    wrong_t = SamplerConfig(top_k=k, temperature=TEMPERATURE * 1.5, seed=3)
    result = fit(draw_tokens(wrong_t, shape, k), shape, k, f"control qsample T x1.5/{shape}")
    assert result.p_value < ALPHA, result
    unmixed = SamplerConfig(mode="boltzmann", top_k=k, temperature=TEMPERATURE, seed=3,
                            num_sweeps=1, penalty=8.0, num_reads=40)
    result = fit(draw_tokens(unmixed, shape, k), shape, k, f"control unmixed chain/{shape}")
    assert result.p_value < ALPHA, result
