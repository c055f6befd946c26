"""Statistical specification: each faithful mode x backend samples softmax(l / T) over the
candidate set.

For each case we draw 20,000 tokens through `QuantumSampler.sample` and run Pearson's chi-square
test against the exact target, merging bins with expected count < 5
(`qsample.tools.fidelity.measure`).
Under the null hypothesis the p-value is uniform, so a faithful sampler fails one case with
probability ALPHA = 1e-3; seeds are fixed, so the suite is deterministic. The same test must
reject the negative controls: argmax, uniform over the candidates, softmax at a wrong
temperature, qsample at a wrong temperature, and an annealer chain too short to mix.
"""

import numpy as np
import pytest
import torch
from conftest import record_fidelity

from qsample import SamplerConfig
from qsample.tools.fidelity import measure, reference_logits
from qsample.tools.stats import chi_square, counts_of

DRAWS = 20_000
ALPHA = 1e-3
TEMPERATURE = 0.8

FAITHFUL = (
    [(mode, "batched-sa", shape, k) for mode in ("gumbel", "boltzmann")
     for shape in ("flat", "peaked") for k in (8, 16, 64)]
    + [(mode, "neal", shape, k) for mode in ("gumbel", "boltzmann")
     for shape in ("flat", "peaked") for k in (8, 16, 64)]
    + [(mode, "tree", shape, k) for mode in ("gumbel", "boltzmann")
       for shape in ("flat", "peaked") for k in (8, 16)]
    + [(mode, "exact", shape, 8) for mode in ("gumbel", "boltzmann")
       for shape in ("flat", "peaked")]
)


def record(label: str, fit) -> None:
    record_fidelity({"case": label, "draws": fit.draws, "chi2": fit.chi2, "dof": fit.dof,
                     "p": fit.p_value, "tv": fit.tv})


@pytest.mark.statistical
@pytest.mark.parametrize("mode, backend, shape, k", FAITHFUL,
                         ids=[f"{m}-{b}-{s}-K{k}" for m, b, s, k in FAITHFUL])
def test_faithful_to_softmax_over_candidates(mode, backend, shape, k):
    config = SamplerConfig(mode=mode, backend=backend, top_k=k, temperature=TEMPERATURE,
                           seed=2024)
    result = measure(config, reference_logits(shape, k), DRAWS)
    record(f"{mode}/{backend}/{shape}/K={k}", result.fit)
    assert result.telemetry["fallback_rate"] < 0.01, result.telemetry
    assert result.fit.p_value >= ALPHA, result.fit


def target(shape: str, k: int) -> np.ndarray:
    head = torch.topk(reference_logits(shape, k), k).values.double() / TEMPERATURE
    return torch.softmax(head, 0).numpy()


CONTROLS = ["argmax", "uniform", "temperature x1.5", "temperature x0.67"]


@pytest.mark.statistical
@pytest.mark.parametrize("shape", ["flat", "peaked"])
@pytest.mark.parametrize("k", [8, 16, 64])
@pytest.mark.parametrize("control", CONTROLS)
def test_negative_controls_are_rejected(control, shape, k):
    probs = target(shape, k)
    draw = np.random.default_rng(1)
    if control == "argmax":
        ranks = np.zeros(DRAWS, dtype=np.int64)
    elif control == "uniform":
        ranks = draw.integers(0, k, DRAWS)
    else:
        factor = 1.5 if "1.5" in control else 1 / 1.5
        distorted = probs ** (1 / factor)
        ranks = draw.choice(k, size=DRAWS, p=distorted / distorted.sum())
    fit = chi_square(counts_of(ranks, k), probs)
    record(f"control {control}/{shape}/K={k}", fit)
    assert fit.p_value < ALPHA, fit


@pytest.mark.statistical
@pytest.mark.parametrize("shape", ["flat", "peaked"])
def test_annealer_controls_are_rejected(shape):
    """qsample itself at the wrong temperature, and a boltzmann chain too short to mix from its
    random start (one sweep, high penalty), must fail the same test."""
    k, logits = 16, reference_logits(shape, 16)
    wrong_t = SamplerConfig(top_k=k, temperature=TEMPERATURE * 1.5, seed=3)
    fit = measure(wrong_t, logits, DRAWS, target_temperature=TEMPERATURE).fit
    record(f"control qsample at T x1.5/{shape}/K={k}", fit)
    assert fit.p_value < ALPHA, fit
    unmixed = SamplerConfig(mode="boltzmann", top_k=k, temperature=TEMPERATURE, seed=3,
                            num_sweeps=1, penalty=8.0, num_reads=40)
    fit = measure(unmixed, logits, DRAWS).fit
    record(f"control unmixed chain/{shape}/K={k}", fit)
    assert fit.p_value < ALPHA, fit
