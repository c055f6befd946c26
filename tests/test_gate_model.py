"""Gate-model backends on pyqpanda3: `qpanda-sim` (its local simulator) and `originq` (Origin
Quantum's cloud, here on the offline stand-in `originq-mock`).

Specification: both encodings' circuits prepare the target state exactly (amplitudes to float
rounding, no weight off the valid states) with the documented gate counts and logarithmic
onehot depth; noise from pyqpanda3's models shows as invalid reads (onehot), at the rate an exact
density-matrix simulation and the read-out formula give; the cloud path packs rows on disjoint
qubits, batches programs into jobs, asks for raw counts, retries and times out into the
fallback policy, counted; credentials come from the environment only and never reach telemetry;
bad settings raise `ConfigError` naming the field. The chi-square suite of the ideal simulator
is in test_fidelity.py.
"""

import numpy as np
import pytest
import torch

pytest.importorskip("pyqpanda3")

from pyqpanda3 import core

from qsample import QuantumSampler, SamplerConfig
from qsample.backends import gate_model, originq
from qsample.backends.gate_model import GateNoise, encoding, row_program, tree_angles
from qsample.backends.originq_mock import OriginQMockBackend, StandInCloudService
from qsample.cli import main
from qsample.errors import ConfigError
from qsample.tools.fidelity import measure, reference_logits

SIGMAS = 4.5  # binomial tolerance of rate checks (two-sided p ~ 7e-6)


def born(enc_name: str, probs: np.ndarray) -> tuple[np.ndarray, object]:
    """The candidates' probabilities in the simulated state of one row, and its program."""
    k = probs.shape[0]
    enc = encoding(enc_name)
    prog = core.QProg()
    prog << row_program(enc, tree_angles(probs[None], gate_model.tree_levels(k)), 0, k)
    qvm = core.CPUQVM()
    qvm.run(prog, 1)
    full = np.asarray(qvm.result().get_prob_list())
    qubits = int(np.log2(full.shape[0]))
    states = enc.states(gate_model.index_bits(np.arange(full.shape[0]), qubits), k, k)
    return full @ states, prog


@pytest.mark.parametrize("enc_name", ["onehot", "binary"])
@pytest.mark.parametrize("k", [2, 3, 5, 8, 13, 16])
def test_circuits_prepare_the_target_state(enc_name, k):
    probs = np.random.default_rng(k).dirichlet(np.full(k, 0.5))
    probs[k // 2] = 0.0  # a candidate of probability 0 stays at 0
    probs /= probs.sum()
    got, _ = born(enc_name, probs)
    np.testing.assert_allclose(got, probs, atol=1e-12)  # all weight on valid states


def test_gate_counts_follow_the_rotation_tree():
    for k in (2, 5, 8, 16):
        levels = gate_model.tree_levels(k)
        _, prog = born("onehot", np.full(k, 1.0 / k))
        assert prog.count_ops() == {"X": 1, "RY": 2 * (k - 1), "CNOT": 3 * (k - 1)}
        assert prog.depth() <= 5 * levels + 1  # logarithmic in K
        _, prog = born("binary", np.full(k, 1.0 / k))
        assert prog.count_ops().get("RY") == 2**levels - 1
        assert prog.count_ops().get("CNOT", 0) == 2**levels - 2


def test_a_wrong_angle_is_caught_by_the_state_check():
    """Negative control of the state check: the tree with arccos(P_left / P_node) instead of
    its square root prepares another distribution."""
    probs = np.random.default_rng(0).dirichlet(np.ones(8))
    good, _ = born("onehot", probs)
    angles = [2 * np.arccos(np.cos(a / 2) ** 2) for a in tree_angles(probs[None], 3)]
    prog = core.QProg()
    prog << row_program(encoding("onehot"), angles, 0, 8)
    qvm = core.CPUQVM()
    qvm.run(prog, 1)
    wrong = np.asarray(qvm.result().get_prob_list())[1 << np.arange(8)]
    assert np.abs(good - probs).max() < 1e-12 < 0.01 < np.abs(wrong - probs).max()


def sampler(backend="qpanda-sim", k=8, reads=8, **params) -> QuantumSampler:
    return QuantumSampler(SamplerConfig(mode="boltzmann", backend=backend, top_k=k,
                                        temperature=0.8, seed=5, num_reads=reads,
                                        backend_params=params))


def test_ideal_simulator_reports_its_circuits_and_is_reproducible():
    logits = reference_logits("peaked", 16)[None].expand(6, -1)
    first = sampler(k=16)
    tokens = first.sample(logits)
    assert torch.equal(tokens, sampler(k=16).sample(logits))  # the row keys seed the reads
    summary = first.telemetry.summary()
    timing = summary["backend_timing"]
    assert summary["valid_read_rate"] == 1.0 and summary["fallbacks"] == 0
    assert timing["circuits"] == 1  # six rows of one problem: one simulation
    assert timing["circuit_two_qubit_gates"] == 45 and timing["shots"] == 6 * 8


def dm_valid_mass(probs: np.ndarray, noise: GateNoise) -> float:
    """Exact probability of a one-hot outcome under the gate noise (density matrix)."""
    k = probs.shape[0]
    prog = core.QProg()
    prog << row_program(encoding("onehot"), tree_angles(probs[None], 3), 0, k)
    dm = core.DensityMatrixSimulator()
    dm.run(prog, noise.model())
    return float(np.asarray(dm.state_probs())[1 << np.arange(k)].sum())


def test_gate_noise_invalid_reads_match_the_density_matrix():
    noise = GateNoise(depolarizing_1q=0.01, depolarizing_2q=0.03)
    logits = reference_logits("flat", 8)
    run = sampler(depolarizing_1q=0.01, depolarizing_2q=0.03, reads=20)
    run.sample(logits[None].expand(200, -1))
    rate = run.telemetry.summary()["valid_read_rate"]
    block = torch.softmax(torch.topk(logits, 8).values.double() / 0.8, 0).numpy()
    expected = dm_valid_mass(block, noise)
    sd = np.sqrt(expected * (1 - expected) / 4000)
    assert abs(rate - expected) < SIGMAS * sd, (rate, expected)
    assert expected < 0.8  # a real effect, far outside the tolerance of 1


def test_readout_error_flips_each_qubit_with_the_stated_probability():
    """Onehot reads stay valid with probability (1-r)^K + (K-1) r^2 (1-r)^(K-2) (no flip, or
    the set qubit and one other flipped)."""
    r, k = 0.05, 8
    run = sampler(readout_error=r, reads=20)
    run.sample(reference_logits("flat", 8)[None].expand(200, -1))
    rate = run.telemetry.summary()["valid_read_rate"]
    expected = (1 - r) ** k + (k - 1) * r**2 * (1 - r) ** (k - 2)
    assert abs(rate - expected) < SIGMAS * np.sqrt(expected * (1 - expected) / 4000)


def test_noise_levels_move_tv_and_onehot_filters_what_binary_cannot():
    figures = {"depolarizing_1q": 0.008, "depolarizing_2q": 0.025, "readout_error": 0.07}
    logits = reference_logits("peaked", 8)
    tv, valid = {}, {}
    for enc_name in ("onehot", "binary"):
        for scale in (0.0, 1.0):
            config = SamplerConfig(mode="boltzmann", backend="qpanda-sim", top_k=8,
                                   temperature=0.8, seed=1, backend_params={
                                       "encoding": enc_name, **figures, "noise_scale": scale})
            result = measure(config, logits, 1500, chunk=300)
            tv[enc_name, scale] = result.fit.tv
            valid[enc_name, scale] = result.telemetry["valid_read_rate"]
    assert valid["onehot", 0.0] == valid["binary", 0.0] == valid["binary", 1.0] == 1.0
    assert valid["onehot", 1.0] < 0.6  # invalid reads, caught and counted
    assert tv["onehot", 1.0] > 2 * tv["onehot", 0.0]
    assert tv["binary", 1.0] > tv["onehot", 1.0]  # binary has no invalid read to drop


def test_noisy_simulator_warns_that_it_is_not_faithful(recwarn):
    sampler()
    assert not [w for w in recwarn if "qpanda-sim" in str(w.message)]  # ideal: no warning
    with pytest.warns(UserWarning, match=r"depolarizing 0\.004 per one-qubit gate.*not faithful"):
        sampler(depolarizing_1q=0.008, noise_scale=0.5)


@pytest.mark.parametrize("params, field", [
    ({"encoding": "gray"}, "backend_params.encoding"),
    ({"depolarizing_2q": 1.5}, "backend_params.depolarizing_2q"),
    ({"readout_error": "high"}, "backend_params.readout_error"),
    ({"readout_error": 0.4, "noise_scale": 3}, "backend_params.noise_scale"),
    ({"shots_per_row": 3}, "backend_params"),
])
def test_bad_settings_raise_naming_the_field(params, field):
    with pytest.raises(ConfigError) as error:
        sampler(**params)
    assert error.value.field == field


def test_qubit_budget_and_task_are_checked():
    with pytest.raises(ConfigError) as error:
        sampler(k=32)
    assert error.value.field == "top_k" and "encoding=binary" in str(error.value)
    sampler(k=64, encoding="binary")  # 6 qubits
    with pytest.raises(ConfigError) as error:
        QuantumSampler(SamplerConfig(mode="gumbel", backend="qpanda-sim", top_k=8))
    assert error.value.field == "backend" and "thermal" in str(error.value)


# ---------------------------------------------------------------- cloud


def cloud(service: StandInCloudService | None = None, **kwargs) -> OriginQMockBackend:
    return OriginQMockBackend(service or StandInCloudService(), **kwargs)


def run_cloud(backend, rows=10, k=16, **params):
    config = SamplerConfig(mode="boltzmann", backend=backend, top_k=k, temperature=0.8,
                           seed=2, backend_params=params)
    run = QuantumSampler(config)
    tokens = run.sample(reference_logits("peaked", k)[None].expand(rows, -1))
    return run, tokens


def test_cloud_packs_rows_on_disjoint_qubits_and_asks_for_raw_counts():
    backend = cloud()
    run, _ = run_cloud(backend, rows=10, chip="72")
    (submitted,) = backend.service.submitted  # one job for the step
    assert submitted["programs"] == 3  # the 72-qubit chip's 66 available hold 4 rows of 16
    assert submitted["shots"] == originq.MIN_SHOTS  # 8 reads, the service's minimum 10
    options = submitted["options"]
    assert options.amend_flag() == 0 and options.is_prob_counts() and options.is_mapping()
    summary = run.telemetry.summary()
    timing = summary["backend_timing"]
    assert summary["valid_read_rate"] == 1.0 and summary["fallbacks"] == 0
    assert (timing["jobs"], timing["programs"], timing["shots"]) == (1, 3, 30)
    assert timing["circuits"] == 10 and timing["queue_seconds"] >= 0
    binary = cloud()
    run_cloud(binary, rows=10, encoding="binary", chip="72")
    assert binary.service.submitted[0]["programs"] == 1  # 16 rows of 4 qubits fit


def test_cloud_plans_at_most_200_programs_per_job():
    jobs = cloud().plan(np.full(804, 16), 16, encoding("onehot"), 66)
    assert [len(job) for job in jobs] == [200, 1]
    assert sum(len(rows) for job in jobs for rows in job) == 804


def test_cloud_retries_failed_jobs_then_falls_back_counted():
    backend = cloud(StandInCloudService(fail_jobs=1, raise_runs=1), max_retries=2)
    run, _ = run_cloud(backend, rows=4)
    summary = run.telemetry.summary()
    assert summary["fallbacks"] == 0 and summary["backend_timing"]["retries"] == 2
    failing = cloud(StandInCloudService(fail_jobs=10), max_retries=1)
    run, tokens = run_cloud(failing, rows=4)
    record = next(run.telemetry.records())
    assert run.telemetry.summary()["fallbacks"] == 4 and tokens.shape == (4,)
    assert "CloudJobFailed" in record["fallback_reason"]


def test_cloud_timeout_cancels_the_job_and_falls_back():
    service = StandInCloudService(stall=True)
    run, _ = run_cloud(cloud(service, timeout=0.05), rows=3)
    assert service.jobs[0].cancelled
    record = next(run.telemetry.records())
    assert run.telemetry.summary()["fallbacks"] == 3
    assert record["fallback_reason"].startswith("TimeoutError")


def test_cloud_credentials_come_from_the_environment_only(monkeypatch):
    monkeypatch.delenv(originq.API_KEY_VARIABLE, raising=False)
    with pytest.raises(ConfigError) as error:
        QuantumSampler(SamplerConfig(mode="boltzmann", backend="originq", top_k=8))
    assert originq.API_KEY_VARIABLE in str(error.value)
    secret = "sk-test-0123456789"
    seen = []

    class Service(StandInCloudService):
        def __init__(self, *args):
            seen.append(args)
            super().__init__()

    from pyqpanda3 import qcloud

    monkeypatch.setattr(qcloud, "QCloudService", Service)
    monkeypatch.setenv(originq.API_KEY_VARIABLE, secret)
    monkeypatch.setenv(originq.URL_VARIABLE, "http://127.0.0.1:9")
    run = QuantumSampler(SamplerConfig(mode="boltzmann", backend="originq", top_k=8,
                                       backend_params={"poll_interval": 0}))
    run.sample(reference_logits("flat", 8)[None])
    assert seen == [(secret, "http://127.0.0.1:9")]
    assert secret not in repr(vars(run.backend)) and secret not in str(
        list(run.telemetry.records()))


def test_dry_run_counts_jobs_programs_and_shots(capsys):
    assert main(["generate", "x", "--backend", "originq-mock", "--dry-run", "--n", "10",
                 "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert "boltzmann/originq-mock, top_k=16" in out and "chip WK_C180" in out
    # the default chip's 180 qubits hold 11 rows of 16: one program a step
    assert "QPU calls: 5 (1 per step" in out and "5 programs" in out and "50 shots" in out
    assert main(["generate", "x", "--backend", "originq-mock", "--dry-run", "--n", "10",
                 "--max-new-tokens", "5", "--param", "chip=72"]) == 0
    out = capsys.readouterr().out  # the 72-qubit chip's 66 hold 4: three programs a step
    assert "chip 72: 66 qubits available" in out and "15 programs" in out and "150 shots" in out


def test_generate_runs_on_the_simulator(tiny_llama_dir, capsys):
    assert main(["generate", "Once upon a time", "--model", str(tiny_llama_dir),
                 "--backend", "qpanda-sim", "--max-new-tokens", "4"]) == 0
    err = capsys.readouterr().err
    assert "boltzmann/qpanda-sim" in err and "0 fallbacks" in err


def test_calibrate_and_fidelity_commands_take_the_gate_model_backends(tmp_path, capsys):
    assert main(["calibrate", "--backend", "qpanda-sim", "--top-k", "8", "--draws", "200",
                 "--param", "readout_error=0.05", "--out", str(tmp_path / "cal")]) == 0
    assert (tmp_path / "cal" / "calibration.json").exists()
    assert main(["fidelity", "--mode", "boltzmann", "--backend", "qpanda-sim", "originq-mock",
                 "--top-k", "8", "--shape", "peaked", "--draws", "200",
                 "--param", "encoding=binary"]) == 0
    out = capsys.readouterr().out
    assert "qpanda-sim" in out and "originq-mock" in out
