"""Specification of the `qiskit` backend (qsample/backends/qiskit_sampler.py): gate_model's
circuits as Qiskit circuits, run on Aer (ideal: exact Born draws), on a fake IBM device (transpiled,
under its noise) or on any ``BaseSamplerV2``, one job per step with retries, a cancelling timeout
and telemetry. The chi-square suite of the ideal backend is in test_fidelity.py."""

import numpy as np
import pytest
import torch

pytest.importorskip("qiskit_aer")
pytest.importorskip("qiskit_ibm_runtime")

from qiskit.primitives import BaseSamplerV2, StatevectorSampler
from qiskit.quantum_info import Statevector
from qiskit_ibm_runtime.fake_provider import FakeManilaV2

from qsample import QuantumSampler, SamplerConfig
from qsample.backends import make_backend
from qsample.backends.gate_model import encoding, tree_angles, tree_levels
from qsample.backends.qiskit_sampler import TOKEN_VARIABLE, QiskitBackend
from qsample.errors import ConfigError

torch.set_num_threads(1)
EXACT = 1e-9  # float64 state vectors of at most 16 qubits agree to rounding
SMALL_DEVICE = "fake_manila"  # 5 qubits on a line: routing needs SWAPs, the noise model is small


def statevector_probs(backend: QiskitBackend, enc_name: str, logits: np.ndarray) -> np.ndarray:
    """Born probabilities [B, 2^n] of each row's circuit (the backend's compiled step circuit,
    its parameters bound to the row's angles), by qiskit.quantum_info."""
    enc = encoding(enc_name)
    k = logits.shape[1]
    levels = tree_levels(k)
    compiled = backend.compiled(enc, k, levels)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    values = enc.ry_angles(tree_angles(probs, levels), k)[:, compiled.order]
    circuit = compiled.circuit.remove_final_measurements(inplace=False)
    circuit.data = [inst for inst in circuit.data
                    if not inst.operation.name.startswith("save_")]
    return np.stack([Statevector(circuit.assign_parameters(row)).probabilities()
                     for row in values])


def one_hot_index(enc_name: str, k: int) -> np.ndarray:
    """The basis-state index of candidate i (qubit q is bit q)."""
    return 1 << np.arange(k) if enc_name == "onehot" else np.array(
        [int(format(i, f"0{tree_levels(k)}b")[::-1], 2) for i in range(k)])


@pytest.mark.parametrize("enc_name", ["onehot", "binary"])
@pytest.mark.parametrize("k", [2, 3, 5, 8, 16])
def test_the_circuit_prepares_the_thermal_target_exactly(enc_name, k):
    logits = np.random.default_rng(k).normal(0.0, 2.0, (3, k))
    probs = statevector_probs(QiskitBackend(), enc_name, logits)
    target = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs[:, one_hot_index(enc_name, k)], target, atol=EXACT)
    assert probs.sum(axis=1) == pytest.approx(1.0, abs=EXACT)  # nothing on other states


@pytest.mark.parametrize("enc_name", ["onehot", "binary"])
@pytest.mark.parametrize("k", [8, 16])
def test_same_circuits_same_probabilities_as_qpanda_sim(enc_name, k):
    pytest.importorskip("pyqpanda3")
    from pyqpanda3 import core

    from qsample.backends.gate_model import row_program

    logits = np.random.default_rng(100 + k).normal(0.0, 2.0, (2, k))
    probs = statevector_probs(QiskitBackend(), enc_name, logits)
    target = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    angles = tree_angles(target, tree_levels(k))
    for row in range(2):
        prog = core.QProg()
        prog << row_program(encoding(enc_name), angles, row, k)
        qvm = core.CPUQVM()
        qvm.run(prog, 1)
        np.testing.assert_allclose(probs[row], np.asarray(qvm.result().get_prob_list()),
                                   atol=EXACT)


def sampler(**fields) -> QuantumSampler:
    return QuantumSampler(SamplerConfig(**{"mode": "boltzmann", "backend": "qiskit",
                                           "top_k": 8, "seed": 7, **fields}))


def test_a_seed_reproduces_an_ideal_run_and_rows_do_not_depend_on_each_other():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 2
    first = sampler().sample(logits)
    assert torch.equal(first, sampler().sample(logits))
    # row 0 alone samples what it sampled beside three others (its reads are its key's)
    alone = sampler().sample(logits[:1])
    assert alone.tolist() == first[:1].tolist()


def test_an_ideal_step_is_one_aer_run_with_its_telemetry():
    s = sampler(num_reads=16)
    s.sample(torch.randn(6, 40, generator=torch.Generator().manual_seed(1)))
    t = s.telemetry.summary()
    timing = t["backend_timing"]
    assert t["backend_calls"] == 1 and t["fallback_rate"] == 0.0
    assert timing["circuits"] == 6 and timing["shots"] == 6 * 16
    assert timing["circuit_two_qubit_gates"] == 6 * 3 * 7  # K - 1 splits of 3 CNOTs each


def test_a_fake_device_transpiles_onto_its_coupling_map_and_adds_its_noise():
    backend = make_backend("qiskit", {"device": SMALL_DEVICE})
    assert backend.device == SMALL_DEVICE and backend.qubit_budget({}) == 5
    s = QuantumSampler(SamplerConfig(mode="boltzmann", backend=backend, top_k=4, seed=3,
                                     num_reads=256, backend_params={"device": SMALL_DEVICE}))
    tokens = s.sample(torch.randn(3, 30, generator=torch.Generator().manual_seed(2)))
    assert tokens.shape == (3,)
    t = s.telemetry.summary()
    timing = t["backend_timing"]
    assert timing["jobs"] == 1 and timing["shots"] == 3 * 256
    compiled = next(iter(backend._compiled.values()))
    names = set(compiled.circuit.count_ops())
    assert names <= set(FakeManilaV2().operation_names)  # native gates only
    # W state on 4 qubits: 9 CNOTs before routing; a line of 5 qubits needs more (SWAPs)
    assert timing["circuit_two_qubit_gates"] >= 3 * 9
    # the device's errors give invalid reads: neither none nor all
    assert 0.5 < t["valid_read_rate"] < 1.0


class StandInSampler(BaseSamplerV2):
    """Qiskit's reference sampler, with injected failures: ``raise_runs`` submissions raise,
    ``fail_jobs`` jobs end in an error, ``stall`` jobs never finish (their cancel is
    recorded)."""

    def __init__(self, raise_runs=0, fail_jobs=0, stall=False):
        self.inner = StatevectorSampler(seed=11)
        self.raise_runs, self.fail_jobs, self.stall = raise_runs, fail_jobs, stall
        self.runs, self.cancelled = 0, 0

    def run(self, pubs, *, shots=None):
        self.runs += 1
        if self.raise_runs:
            self.raise_runs -= 1
            raise RuntimeError("service unavailable")
        if self.stall:
            return StalledJob(self)
        job = self.inner.run(pubs, shots=shots)
        if self.fail_jobs:
            self.fail_jobs -= 1
            return FailedJob(job)
        return job


class StalledJob:
    def __init__(self, owner):
        self.owner = owner

    def in_final_state(self):
        return False

    def running(self):
        return False

    def cancel(self):
        self.owner.cancelled += 1

    def job_id(self):
        return "stalled-1"


class FailedJob:
    def __init__(self, job):
        self.job = job

    def in_final_state(self):
        return True

    def running(self):
        return False

    def result(self):
        raise RuntimeError("job failed on the device")


def stand_in_sampler(stand_in, **params) -> QuantumSampler:
    backend = QiskitBackend("stand-in", sampler=stand_in, backoff=0.0)
    return QuantumSampler(SamplerConfig(mode="boltzmann", backend=backend, top_k=8, seed=5,
                                        num_reads=32, backend_params=params))


def test_any_base_sampler_v2_runs_a_step_as_one_job():
    stand_in = StandInSampler()
    s = stand_in_sampler(stand_in)
    s.sample(torch.randn(5, 40, generator=torch.Generator().manual_seed(3)))
    assert stand_in.runs == 1
    t = s.telemetry.summary()
    assert t["fallback_rate"] == 0.0 and t["valid_read_rate"] == 1.0  # ideal reads
    assert t["backend_timing"]["jobs"] == 1


def test_failed_submissions_and_jobs_are_retried():
    stand_in = StandInSampler(raise_runs=1, fail_jobs=1)
    s = stand_in_sampler(stand_in, max_retries=2)
    s.sample(torch.randn(2, 40, generator=torch.Generator().manual_seed(4)))
    t = s.telemetry.summary()
    assert stand_in.runs == 3 and t["backend_timing"]["retries"] == 2
    assert t["fallback_rate"] == 0.0


def test_a_job_failing_past_its_retries_sends_its_rows_to_the_fallback():
    stand_in = StandInSampler(raise_runs=5)
    s = stand_in_sampler(stand_in, max_retries=1)
    tokens = s.sample(torch.randn(2, 40, generator=torch.Generator().manual_seed(5)))
    assert tokens.shape == (2,)
    t = s.telemetry.summary()
    assert stand_in.runs == 2 and t["fallback_rate"] == 1.0
    assert "service unavailable" in next(s.telemetry.records())["fallback_reason"]


def test_a_job_past_its_timeout_is_cancelled_and_its_rows_fall_back():
    stand_in = StandInSampler(stall=True)
    s = stand_in_sampler(stand_in, timeout=0.05, poll_interval=0.01, max_retries=0)
    s.sample(torch.randn(2, 40, generator=torch.Generator().manual_seed(6)))
    t = s.telemetry.summary()
    assert stand_in.cancelled == 1 and t["fallback_rate"] == 1.0
    reason = next(s.telemetry.records())["fallback_reason"]
    assert reason.startswith("JobTimeout") and "not finished in 0.05 s (cancelled)" in reason


def test_configuration_mistakes_name_the_field():
    with pytest.raises(ConfigError, match=r"backend_params\.device.*fake_torino"):
        make_backend("qiskit", {"device": "fake_nowhere"})
    with pytest.raises(ConfigError, match="only thermal"):
        QuantumSampler(SamplerConfig(mode="gumbel", backend="qiskit", top_k=8))
    with pytest.raises(ConfigError, match="at most 20 with backend 'qiskit'"):
        QuantumSampler(SamplerConfig(mode="boltzmann", backend="qiskit", top_k=32))
    with pytest.raises(ConfigError, match=r"backend_params\.device.*built for that device"):
        QuantumSampler(SamplerConfig(mode="boltzmann", backend=QiskitBackend(), top_k=8,
                                     backend_params={"device": "fake_torino"}))


def test_a_remote_device_needs_the_token_from_the_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match=TOKEN_VARIABLE):
        make_backend("qiskit", {"device": "ibm_torino"})


def test_the_default_k_fits_the_ideal_simulator():
    assert QuantumSampler(SamplerConfig(mode="boltzmann", backend="qiskit")).config.top_k == 16


class StandInService:
    """Answers the calls the backend makes of ``QiskitRuntimeService``, with a fake device:
    qiskit-ibm-runtime's ``SamplerV2`` then runs in its local testing mode (Aer), so the remote
    path runs end to end offline."""

    def __init__(self):
        self.asked = []

    def backend(self, name):
        self.asked.append(name)
        return FakeManilaV2()

    def least_busy(self, operational, simulator):
        self.asked.append(("least_busy", operational, simulator))
        return FakeManilaV2()


@pytest.mark.parametrize("device", ["ibm_manila", "ibm"])
def test_a_remote_device_runs_through_ibm_runtimes_sampler(device):
    service = StandInService()
    backend = QiskitBackend(device, service=service)
    assert service.asked == (["ibm_manila"] if device != "ibm" else [("least_busy", True, False)])
    assert backend.device == "fake_manila" and backend.qubit_budget({}) == 5
    assert not backend.probe  # no QPU time spent on a probe
    s = QuantumSampler(SamplerConfig(mode="boltzmann", backend=backend, top_k=4, seed=3,
                                     num_reads=64))
    assert s.sample(torch.randn(2, 30, generator=torch.Generator().manual_seed(9))).shape == (2,)
    timing = s.telemetry.summary()["backend_timing"]
    assert timing["jobs"] == 1 and timing["shots"] == 2 * 64
    assert timing["circuit_two_qubit_gates"] > 0


def test_the_dry_run_names_the_device_and_the_transpiled_circuit(capsys):
    from qsample.cli import main

    assert main(["generate", "x", "--backend", "qiskit", "--dry-run", "--n", "3", "--top-k", "4",
                 "--max-new-tokens", "5", "--param", f"device={SMALL_DEVICE}"]) == 0
    out = capsys.readouterr().out
    assert "boltzmann/qiskit, top_k=4" in out
    assert f"device {SMALL_DEVICE}: 5 qubits; a row's circuit, transpiled onto it" in out
    assert "QPU calls: 5 (1 per step" in out and "15 circuits of 4 qubits" in out


def test_the_token_comes_from_the_environment_and_goes_nowhere_else(monkeypatch):
    import qiskit_ibm_runtime

    secret = "token-4f1c"
    seen = []

    def service(channel, token, instance):
        seen.append((channel, token, instance))
        return StandInService()

    monkeypatch.setenv(TOKEN_VARIABLE, secret)
    monkeypatch.setenv("QISKIT_IBM_INSTANCE", "crn:stand-in")
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", service)
    run = QuantumSampler(SamplerConfig(mode="boltzmann", backend="qiskit", top_k=4, seed=1,
                                       num_reads=16, backend_params={"device": "ibm_manila"}))
    run.sample(torch.randn(1, 30, generator=torch.Generator().manual_seed(8)))
    assert seen == [("ibm_quantum_platform", secret, "crn:stand-in")]
    assert secret not in repr(vars(run.backend)) and secret not in str(
        list(run.telemetry.records()))


def test_generate_runs_on_the_qiskit_backend(tiny_llama_dir, capsys):
    from qsample.cli import main

    assert main(["generate", "Once upon a time", "--model", str(tiny_llama_dir),
                 "--backend", "qiskit", "--max-new-tokens", "4"]) == 0
    err = capsys.readouterr().err
    assert "boltzmann/qiskit" in err and "0 fallbacks" in err
