"""`dwave-noisy`: the D-Wave path on an emulator of a QPU's published imperfections.

Specification: with every noise figure at zero it is `dwave-mock`, read for read and token for
token; each knob alone moves beta_eff and TV measurably, as `qsample calibrate` measures them
(the ideal emulator's beta_eff interval holds 1, each knob's excludes it, but the per-call
spread's: a mixture of temperatures, it leaves its distance after the temperature fit); readout
errors break chains, counted in telemetry; bad knob values are refused naming the field. The
emulator's own draws are seeded here (a QPU's are not seeded by qsample's seed).

"Measurably" is against the sampling noise of the calibration's own draw count, not a constant
factor: TV moves when it exceeds `conftest.tv_noise_bound`, the expected TV of an exact sampler
at DRAWS draws per shape (`tools.stats.tv_noise_floor`) plus TV_SDS = 4 standard deviations
(`conftest.tv_noise_sd`; false-alarm rate 4e-4, simulated), and the ideal emulator stays below
that bound (the same bound's negative control).
"""

import dimod
import numpy as np
import pytest
import torch
from conftest import tv_noise_bound

from qsample import QuantumSampler, SamplerConfig
from qsample.backends.dwave import DWaveBackend
from qsample.backends.dwave_mock import IdealQPUStandIn, mock_sampler
from qsample.backends.dwave_noisy import (
    NoiseModel,
    NoisyDWaveBackend,
    NoisyQPUStandIn,
    noisy_sampler,
)
from qsample.errors import ConfigError
from qsample.tools.calibration import calibrate, tempered

ZERO = dict.fromkeys(NoiseModel.figures(), 0.0)
K = 8
DRAWS = 1500  # per logits shape: beta_eff's 95% interval is then about +-0.04 wide
# each knob alone, at a value whose effect the interval resolves (measured: beta_eff 0.41 to
# 0.92 at these values, against 0.99 [0.95, 1.03] with no noise)
KNOB_VALUES = {"ice_h": 0.1, "ice_j": 0.1, "beta_error": -0.3, "beta_call_sd": 1.0,
               "beta_qubit_sd": 0.3, "readout_error": 0.03}


def logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, 40, generator=torch.Generator().manual_seed(seed)) * 2


def test_every_figure_at_zero_is_the_ideal_stand_in_read_for_read():
    bqm = dimod.generators.gnp_random_bqm(12, 0.5, "BINARY", random_state=4)
    ideal = IdealQPUStandIn(seed=3).sample(bqm, num_reads=200, seed=11)
    for noise in (NoiseModel(noise_scale=0.0), NoiseModel(**ZERO), None):
        noisy = NoisyQPUStandIn(seed=3).sample(bqm, num_reads=200, seed=11, qsample_noise=noise)
        assert np.array_equal(noisy.record.sample, ideal.record.sample)
    noisy = NoisyQPUStandIn(seed=3).sample(bqm, num_reads=200, seed=11,
                                           qsample_noise=NoiseModel())
    assert not np.array_equal(noisy.record.sample, ideal.record.sample)  # the knobs act


@pytest.mark.parametrize("mode", ["gumbel", "boltzmann"])
def test_zero_noise_backend_draws_the_mock_backends_tokens(tmp_path, mode):
    def tokens(backend, params):
        sampler = QuantumSampler(SamplerConfig(mode=mode, backend=backend, top_k=K, seed=0,
                                               backend_params=params))
        return [sampler.sample(logits(16, step)) for step in range(3)]

    mock = tokens(DWaveBackend(mock_sampler(seed=5), embedding_folder=tmp_path), {})
    quiet = tokens(NoisyDWaveBackend(noisy_sampler(seed=5), embedding_folder=tmp_path),
                   {"noise_scale": 0})
    loud = tokens(NoisyDWaveBackend(noisy_sampler(seed=5), embedding_folder=tmp_path),
                  {"noise_scale": 2})
    assert all(torch.equal(a, b) for a, b in zip(mock, quiet, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(mock, loud, strict=True))


STAND_IN_SEED = 1  # the emulator's own draws (a QPU's are not seeded by qsample's seed)


def noisy_calibration(folder, params):
    """(the calibration result, its per-shape counts and targets), on Pegasus, where the ideal
    stand-in calibrates to 1 at K = 8 (on Zephyr it measures beta_eff about 0.95:
    docs/noise.md)."""
    backend = NoisyDWaveBackend(noisy_sampler("pegasus", seed=STAND_IN_SEED),
                                embedding_folder=folder)
    return calibrate(backend, k=K, draws=DRAWS, seed=1, chunk=16,
                     config={"backend_params": params})


def noise_bounds(result, data) -> tuple[float, float]:
    """The most TV that sampling noise alone gives an exact sampler at the calibration's draw
    count (DRAWS per shape; the reported TV is the mean over the shapes): `tv_noise_bound` of
    the shapes' targets, for ``tv_before``, and of the targets at the fitted beta_eff (an exact
    sampler at that one temperature), for ``tv_after``. The fit takes one degree of freedom off
    the noise, so the second bound is if anything high: measured 0.040 before and after at no
    noise, against a TV of 0.028 before and after the fit."""
    targets = [d["target"] for d in data.values()]
    return (tv_noise_bound(targets, DRAWS),
            tv_noise_bound([tempered(t, result.beta_eff) for t in targets], DRAWS))


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def ideal_calibration(embeddings):
    return noisy_calibration(embeddings, ZERO)


def test_the_ideal_emulator_calibrates_to_beta_one(ideal_calibration):
    result, data = ideal_calibration
    assert result.beta_low < 1.0 < result.beta_high
    before, after = noise_bounds(result, data)  # its distance is sampling noise, fit or not
    assert result.tv_before <= before and result.tv_after <= after


@pytest.mark.parametrize("knob", sorted(KNOB_VALUES))
def test_each_knob_alone_moves_beta_eff_and_tv_measurably(ideal_calibration, embeddings, knob):
    result, data = noisy_calibration(embeddings, {**ZERO, knob: KNOB_VALUES[knob]})
    before, after = noise_bounds(result, data)
    # measured TV 0.052 (readout_error, the smallest) to 0.26 (ice_j), against a bound of 0.040;
    # readout_error's power: above the bound at 16 of 16 stand-in seeds (TV 0.042-0.061, mean
    # 0.052, sd 0.006: about 0.98)
    assert result.tv_before > before
    if knob == "beta_call_sd":
        # a mixture of temperatures, not one: the fit leaves most of the distance (measured
        # TV after the fit 0.09-0.12 at four stand-in seeds, against 0.01-0.03 ideal and a
        # bound of 0.04; beta_eff 0.83-0.92 at those seeds, 0.98 at one unseeded run)
        assert result.tv_after > after
    else:
        assert result.beta_high < ideal_calibration[0].beta_low  # each of these broadens


def test_readout_errors_break_chains_and_telemetry_counts_them(tmp_path):
    def broken(readout: float) -> float:
        backend = NoisyDWaveBackend(noisy_sampler(seed=2), embedding_folder=tmp_path)
        sampler = QuantumSampler(SamplerConfig(
            mode="boltzmann", backend=backend, top_k=K, seed=0,
            backend_params={**ZERO, "readout_error": readout}))
        sampler.sample(logits(32))
        return sampler.last_step().backend_timing["chain_break_fraction"]

    assert broken(0.05) > 0.02 > broken(0.0)


@pytest.mark.parametrize("params, field", [
    ({"ice_h": -0.1}, "backend_params.ice_h"),
    ({"readout_error": "often"}, "backend_params.readout_error"),
    ({"beta_error": -1.0}, "backend_params.beta_error"),
    ({"readout_error": 0.3, "noise_scale": 2}, "backend_params.noise_scale"),
    ({"ice_x": 0.1}, "backend_params"),
])
def test_bad_knob_values_are_refused_naming_the_field(tmp_path, params, field):
    backend = NoisyDWaveBackend(noisy_sampler(), embedding_folder=tmp_path)
    with pytest.raises(ConfigError) as error:
        QuantumSampler(SamplerConfig(mode="boltzmann", backend=backend, top_k=K,
                                     backend_params=params))
    assert error.value.field == field


def test_published_figures_are_the_defaults_and_scale_together():
    model = NoiseModel.from_params({"noise_scale": 2}, "advantage")
    assert model.scaled().ice_h == pytest.approx(2 * NoiseModel().ice_h)
    assert model.scaled().readout_error == pytest.approx(2 * NoiseModel().readout_error)
    assert NoiseModel(noise_scale=0).ideal and not NoiseModel().ideal


def test_generate_fidelity_and_calibrate_take_the_knobs(tiny_llama_dir, tmp_path, capsys):
    from qsample.cli import main

    assert main(["generate", "Once upon a time", "--model", str(tiny_llama_dir), "--mode",
                 "boltzmann", "--backend", "dwave-noisy", "--top-k", "8", "--max-new-tokens",
                 "4", "--param", "noise_scale=2"]) == 0
    assert "dwave-noisy" in capsys.readouterr().err
    assert main(["fidelity", "--mode", "boltzmann", "--backend", "dwave-noisy", "--top-k", "8",
                 "--shape", "flat", "--draws", "16", "--param", "ice_j=0.3"]) == 0
    assert "dwave-noisy" in capsys.readouterr().out
    out = tmp_path / "cal"
    assert main(["calibrate", "--backend", "dwave-noisy", "--top-k", "8", "--draws", "64",
                 "--chunk", "16", "--param", "readout_error=0.02", "--out", str(out)]) == 0
    assert "95% CI" in capsys.readouterr().out
    assert (out / "calibration.png").exists()
    assert main(["calibrate", "--backend", "dwave-noisy", "--top-k", "8", "--draws", "64",
                 "--param", "ice_h=-1", "--out", str(out)]) == 2
    assert "backend_params.ice_h" in capsys.readouterr().err
