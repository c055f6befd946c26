"""`qsample calibrate`: the effective inverse temperature of a backend in boltzmann mode.

Specified: the maximum-likelihood fit recovers a known beta from sampled counts (within the
sampling noise), faithful backends calibrate to beta_eff near 1 with TV at the noise floor, the
idealised mock QPU confirms its assumed beta_qpu, results are saved where the dwave backend reads
them, and the command writes a table, JSON and a PNG plot. beta_eff's 95% profile-likelihood
interval covers the true beta about 95% of the time.
"""

import json

import numpy as np
import pytest

from qsample.cli import main
from qsample.tools.calibration import (
    beta_interval,
    calibrate,
    fit_beta,
    load_calibration,
    save_calibration,
    tempered,
)

# 400 replicates: a 95% interval's coverage count is Binomial(400, 0.95), sd 4.4; 364..396
# is +-7 sd, while a 90% or 99% interval would average 360 or 396 and fail half the time
REPLICATES, COVERED = 400, (364, 396)


def test_the_interval_covers_the_true_beta_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    targets = [rng.dirichlet(np.ones(16)), rng.dirichlet(np.full(16, 0.3))]
    covered = 0
    for _ in range(REPLICATES):
        counts = [rng.multinomial(300, tempered(t, 0.8)) for t in targets]
        low, high = beta_interval(counts, targets)
        covered += low < 0.8 < high
    assert COVERED[0] <= covered <= COVERED[1]
    narrow = beta_interval([rng.multinomial(30_000, tempered(t, 0.8)) for t in targets], targets)
    assert narrow[1] - narrow[0] < 0.05  # it shrinks as 1/sqrt(draws)


@pytest.mark.parametrize("beta", [0.5, 1.0, 1.7])
def test_fit_recovers_a_known_beta(beta):
    target = np.random.default_rng(0).dirichlet(np.ones(16))
    counts = np.random.default_rng(1).multinomial(20_000, tempered(target, beta))
    assert fit_beta(counts, target) == pytest.approx(beta, rel=0.05)


def test_a_faithful_backend_calibrates_to_beta_one():
    result, data = calibrate("batched-sa", k=8, draws=4000, seed=1)
    assert result.beta_eff == pytest.approx(1.0, abs=0.08)
    assert result.tv_before < 0.03 and set(data) == {"flat", "peaked"}


def test_the_mock_qpu_confirms_its_beta_and_the_result_is_saved(monkeypatch, tmp_path):
    monkeypatch.setenv("QSAMPLE_CACHE", str(tmp_path))
    result, _ = calibrate("dwave-mock", k=8, draws=1500, seed=0, chunk=16)
    assert result.backend_setting["beta_qpu_assumed"] == 6.0
    assert result.beta_eff == pytest.approx(1.0, abs=0.25)  # chains and majority vote aside
    path = save_calibration(result)
    assert path.parent == tmp_path / "calibration"
    saved = load_calibration("dwave-mock", result.solver)
    calibrated = saved["backend_setting"]["beta_qpu_calibrated"]
    assert saved["beta_eff"] == result.beta_eff and calibrated == pytest.approx(6 * result.beta_eff)

    from qsample.backends.dwave_mock import MockDWaveBackend

    assert MockDWaveBackend(embedding_folder=tmp_path).beta_qpu == calibrated
    assert MockDWaveBackend(topology="pegasus", embedding_folder=tmp_path).beta_qpu == 6.0


def test_calibrate_command_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "cal"
    assert main(["calibrate", "--backend", "batched-sa", "sqa", "--top-k", "8", "--draws", "600",
                 "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "beta_eff" in table and "sqa" in table
    payload = json.loads((out / "calibration.json").read_text())
    assert [r["backend"] for r in payload["results"]] == ["batched-sa", "sqa"]
    assert (out / "calibration.png").stat().st_size > 10_000
