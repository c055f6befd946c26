"""`qiskit`: gate-model sampling through Qiskit, on any ``BaseSamplerV2``.

Each row's candidate distribution is prepared by `qsample.backends.gate_model`'s circuits
(``onehot``: the weighted W state on K qubits; ``binary``: ceil(log2 K) qubits): the step's
`Encoding.layout` becomes one Qiskit circuit whose RY angles are parameters, compiled once per
(device, encoding, K) and run with every row's angles (`Encoding.ry_angles`) as its parameter
values. ``backend_params.device`` chooses where it runs:

- ``"aer"`` (the default), local and ideal: Aer's state-vector simulator gives each row's exact
  Born probabilities (``save_probabilities``, all rows as parameter bindings of one run), and
  the reads are drawn from them with the row's counter-RNG key, as `qpanda-sim` does: a seed
  reproduces a run and the thermal target is sampled exactly (up to float64 rounding);
- ``"fake_<name>"`` (``fake_torino``, ``fake_fez``, ``fake_sherbrooke``, ...: any backend of
  ``qiskit_ibm_runtime.fake_provider``, snapshots of real IBM devices' coupling map, basis
  gates, T1/T2, gate and read-out errors), local and realistic: the circuit is transpiled onto
  the device (layout, routing with SWAPs, native gates) and run by Aer's ``SamplerV2`` under the
  device's noise model (Aer's ``NoiseModel.from_backend`` figures, kept to the qubits the circuit
  uses, so Aer simulates only those); noisy shots are unseeded, like a QPU's;
- any other name, remote: that IBM Quantum device through ``qiskit-ibm-runtime``'s
  ``SamplerV2`` (``"ibm"``: the least busy operational device), transpiled onto it; credentials
  come only from the environment (`TOKEN_VARIABLE`, `INSTANCE_VARIABLE`, `CHANNEL_VARIABLE`),
  never from qsample's config or a request, and they are never logged;
- or any ``BaseSamplerV2`` passed to the constructor (``sampler``, with the ``target`` backend to
  transpile for, or none).

One job per decoding step: one PUB, the compiled circuit with the step's rows as parameter
values [B, P], ``shots`` = ``num_reads`` (or ``backend_params.shots``). Rows are not packed onto
disjoint qubits: on a simulator that makes the state exponentially wider (docs/gate-model.md
measures it), and a PUB's parameter sets already make one job of the step. A submission error
or a failed job is retried ``max_retries`` times with exponential backoff; a job not finished
within ``timeout`` seconds is cancelled. Either way its rows go to the sampler's fallback policy.
Telemetry (``backend_timing``): ``jobs``, ``circuits`` (rows run), ``shots`` (billed),
``retries``, ``queue_seconds`` and ``job_seconds`` (at the polling resolution),
``quantum_seconds`` (IBM's billed usage, where the job reports it), and the compiled circuit's
``circuit_gates``, ``circuit_two_qubit_gates`` and ``circuit_depth`` summed over rows.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..problems import OneHotProblems
from .base import Failures, SolveRequest, SolveResult, number_param
from .gate_model import (
    DEFAULT_ENCODING,
    Encoding,
    born_draws,
    index_bits,
    target_probs,
    tree_angles,
    tree_levels,
)
from .qpanda import MAX_SIM_QUBITS, TIMING_KEYS, GateModelBackend, job_policy

logger = logging.getLogger(__name__)

QISKIT_EXTRA = "qiskit, qiskit-aer and qiskit-ibm-runtime (pip install 'qsample[qiskit]')"
IDEAL_DEVICE = "aer"
FAKE_PREFIX = "fake_"
LEAST_BUSY = "ibm"
TOKEN_VARIABLE = "QISKIT_IBM_TOKEN"
INSTANCE_VARIABLE = "QISKIT_IBM_INSTANCE"
CHANNEL_VARIABLE = "QISKIT_IBM_CHANNEL"
DEFAULT_CHANNEL = "ibm_quantum_platform"
OPTIMIZATION_LEVEL = 2  # Qiskit's default preset; the compiled circuit is cached per layout
SEED_TRANSPILER = 0  # the same layout and routing in every process
TWO_QUBIT_GATES = frozenset({"cx", "cz", "ecr", "swap", "iswap", "rzz"})
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_POLL_S = 1.0
FIRST_POLL_S = 1e-3  # polls start here and double up to poll_interval (local jobs end fast)
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.5
JOB_TIMING = ("jobs", "retries", "queue_seconds", "job_seconds", "quantum_seconds")


def qiskit_sdk(backend: str = "qiskit"):
    """The ``qiskit`` module; `ConfigError` naming ``backend`` when the extra is missing."""
    try:
        import qiskit
        import qiskit_aer  # noqa: F401
    except ImportError as exc:
        raise ConfigError("backend", backend, QISKIT_EXTRA) from exc
    return qiskit


def fake_devices() -> dict[str, type]:
    """The fake IBM devices of ``qiskit_ibm_runtime.fake_provider`` by name (``fake_torino``:
    ``FakeTorino``; ``fake_manila``: ``FakeManilaV2``), not built."""
    from qiskit_ibm_runtime import fake_provider
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    out = {}
    for attr in dir(fake_provider):
        cls = getattr(fake_provider, attr)
        if (isinstance(cls, type) and issubclass(cls, FakeBackendV2) and cls is not FakeBackendV2
                and attr.startswith("Fake")):
            out[FAKE_PREFIX + attr[len("Fake"):].removesuffix("V2").lower()] = cls
    return out


@functools.cache
def fake_device(name: str):
    """The fake IBM device ``name`` (`fake_devices`), built once per process (read-only, shared
    by its backends); `ConfigError` on ``backend_params.device`` naming the ones there are."""
    try:
        devices = fake_devices()
    except ImportError as exc:
        raise ConfigError("backend_params.device", name, QISKIT_EXTRA) from exc
    if name not in devices:
        raise ConfigError("backend_params.device", name,
                          f"'{IDEAL_DEVICE}', an IBM Quantum device name, or one of "
                          + ", ".join(sorted(devices)))
    return devices[name]()


def connect():
    """qiskit-ibm-runtime's ``QiskitRuntimeService`` from the environment only
    (`TOKEN_VARIABLE`, and `INSTANCE_VARIABLE` / `CHANNEL_VARIABLE` where set; saved accounts
    are not read); `ConfigError` at once when the token is not set."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise ConfigError("backend", "qiskit",
                          f"an IBM Quantum API key in the environment variable {TOKEN_VARIABLE} "
                          "for a remote backend_params.device (qsample never takes it from its "
                          f"config or a request; device '{IDEAL_DEVICE}' or 'fake_<name>' runs "
                          "locally)")
    try:
        from qiskit_ibm_runtime import QiskitRuntimeService
    except ImportError as exc:
        raise ConfigError("backend", "qiskit", QISKIT_EXTRA) from exc
    instance = os.environ.get(INSTANCE_VARIABLE, "").strip() or None
    channel = os.environ.get(CHANNEL_VARIABLE, "").strip() or DEFAULT_CHANNEL
    return QiskitRuntimeService(channel=channel, token=token, instance=instance)


@functools.cache
def device_noise_errors(name: str) -> list[tuple[str, tuple[int, ...], Any]]:
    """The fake device ``name``'s gate errors (name, qubits, error) and read-out errors
    ("measure", qubits, error) as Aer's ``NoiseModel.from_backend`` derives them from its
    target; derived once per process (~5 s for a 156-qubit device), as every sampler of the
    device (each `qsample ab` resampler, say) needs the same."""
    from qiskit_aer.noise.device import basic_device_gate_errors, basic_device_readout_errors

    device = fake_device(name)
    gates = [(name, tuple(qubits), error) for name, qubits, error
             in basic_device_gate_errors(target=device.target)]
    readout = [("measure", tuple(qubits), error) for qubits, error
               in basic_device_readout_errors(target=device.target)]
    return gates + readout


def noise_on(device, errors, qubits: set[int]):
    """Aer's ``NoiseModel`` of ``device`` kept to the errors acting only on ``qubits``."""
    from qiskit_aer.noise import NoiseModel

    model = NoiseModel(basis_gates=list(device.operation_names))
    for name, on, error in errors:
        if set(on) <= qubits:
            if name == "measure":
                model.add_readout_error(error, on)
            else:
                model.add_quantum_error(error, name, on)
    return model


@dataclass
class Compiled:
    """The step circuit of one (encoding, K, tree depth) on the backend's device.

    Attributes:
        circuit: the (transpiled) circuit, RY angles as parameters, qubit q measured into bit q.
        order: for each of ``circuit.parameters`` in order, its index in `Encoding.ry_angles`.
        stats: ``circuit_gates``, ``circuit_two_qubit_gates``, ``circuit_depth`` of one row.
        sampler: the ``BaseSamplerV2`` that runs it (None on the ideal device).
    """

    circuit: Any
    order: np.ndarray
    stats: dict[str, float]
    sampler: Any = None


class QiskitBackend(GateModelBackend):
    """Qiskit circuits on Aer, a fake IBM device, IBM Quantum or any ``BaseSamplerV2`` (module
    docstring).

    Args:
        device: ``"aer"``, ``"fake_<name>"``, an IBM Quantum device name or ``"ibm"``
            (``backend_params.device`` at construction, through `make_backend`).
        sampler: a ``BaseSamplerV2`` to run on instead (``device`` then only names it).
        target: the Qiskit backend ``sampler``'s circuits are transpiled for (None: not
            transpiled).
        service: a ``QiskitRuntimeService`` for a remote device (default: `connect`).
        encoding_name: the default encoding (``backend_params.encoding`` overrides it).
        timeout: seconds a job may take before it is cancelled (``backend_params.timeout``
            overrides it, as the next two).
        poll_interval: the longest pause between two polls of a job, seconds.
        max_retries: retries of a failed submission or job.
        backoff: first retry delay, seconds, doubled per retry.
    """

    name = "qiskit"
    machine_params = ("device",)
    params = ("encoding", "shots", "timeout", "poll_interval", "max_retries", *machine_params)

    def __init__(self, device: str = IDEAL_DEVICE, *, sampler: Any = None, target: Any = None,
                 service: Any = None, encoding_name: str = DEFAULT_ENCODING,
                 timeout: float = DEFAULT_TIMEOUT_S, poll_interval: float = DEFAULT_POLL_S,
                 max_retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF_S) -> None:
        super().__init__(encoding_name)
        if not isinstance(device, str) or not device:
            raise ConfigError("backend_params.device", device,
                              f"'{IDEAL_DEVICE}', 'fake_<name>' or an IBM Quantum device name")
        self.device_name = device
        self.timeout, self.poll_interval = timeout, poll_interval
        self.max_retries, self.backoff = max_retries, backoff
        self._sampler = sampler
        self._compiled: dict[tuple[str, int, int], Compiled] = {}
        if sampler is not None:
            self.target, self.kind = target, "sampler"
        elif device == IDEAL_DEVICE:
            self.target, self.kind = None, "ideal"
        elif device.startswith(FAKE_PREFIX):
            self.target, self.kind = fake_device(device), "fake"
        else:
            service = service if service is not None else connect()
            self.target = (service.least_busy(operational=True, simulator=False)
                           if device == LEAST_BUSY else service.backend(device))
            self.kind = "remote"
        self.probe = self.kind in ("ideal", "fake")  # a probe of a remote device spends QPU time

    def require_sdk(self) -> None:
        qiskit_sdk(self.name)

    @property
    def device(self) -> str:
        """The device's name (the least busy one's for ``"ibm"``)."""
        return str(getattr(self.target, "name", self.device_name))

    solver_id = device  # calibrations (`qsample calibrate`) are saved per device

    def qubit_budget(self, params: dict[str, Any]) -> int:
        qubits = getattr(self.target, "num_qubits", None) or MAX_SIM_QUBITS
        return qubits if self.kind == "remote" else min(qubits, MAX_SIM_QUBITS)

    def fidelity_warning(self, request: SolveRequest, top_k: int) -> str | None:
        if self.kind == "ideal":
            return None
        if self.kind == "sampler":
            return (f"backend 'qiskit' runs on a sampler of your own ('{self.device}'): qsample "
                    "has not measured whether it is faithful; 'qsample fidelity' or 'qsample "
                    "calibrate' measures it")
        return (f"backend 'qiskit' runs on device '{self.device}' ({self.kind}): its samples "
                "carry the device's noise and are not faithful; 'qsample fidelity' or 'qsample "
                "calibrate' measures how far")

    def settings(self, request: SolveRequest) -> dict[str, Any]:
        """``encoding``, ``shots`` (>= num_reads), ``timeout``, ``poll_interval`` and
        ``max_retries`` from ``backend_params`` over the constructor's."""
        params = dict(request.params)
        device = params.get("device")
        if device is not None and device not in (self.device_name, self.device):
            raise ConfigError("backend_params.device", device,
                              f"'{self.device}': this backend was built for that device (name "
                              "the backend, not an instance, to choose another)")
        reads = request.num_reads
        return {
            "encoding": self.row_encoding(params),
            "shots": int(number_param("shots", params.get("shots", reads), reads)),
            **job_policy(params, self.timeout, self.poll_interval, self.max_retries),
        }

    # ---------------------------------------------------------------- compiling

    def compiled(self, enc: Encoding, width: int, levels: int) -> Compiled:
        """The step circuit of ``enc`` at ``width`` candidates (cached): `Encoding.layout` with
        parameters for its RY angles, measured, transpiled onto the device (but on ``aer``)."""
        key = (enc.name, width, levels)
        if key in self._compiled:
            return self._compiled[key]
        qiskit = qiskit_sdk(self.name)
        from qiskit.circuit import ParameterVector

        layout = enc.layout(width, levels)
        qubits = enc.row_qubits(width, levels)
        angles = ParameterVector("a", sum(gate.name == "ry" for gate in layout))
        circuit = qiskit.QuantumCircuit(qubits, qubits)
        for gate in layout:
            if gate.name == "ry":
                circuit.ry(angles[gate.angle], gate.qubits[0])
            else:
                getattr(circuit, gate.name)(*gate.qubits)
        if self.kind == "ideal":
            circuit.save_probabilities()
        else:
            circuit.measure(range(qubits), range(qubits))
            if self.target is not None:
                circuit = qiskit.transpile(circuit, backend=self.target,
                                           optimization_level=OPTIMIZATION_LEVEL,
                                           seed_transpiler=SEED_TRANSPILER)
        order = np.array([param.index for param in circuit.parameters], dtype=np.int64)
        compiled = Compiled(circuit, order, circuit_stats(circuit),
                            None if self.kind == "ideal" else self._sampler_for(circuit))
        self._compiled[key] = compiled
        return compiled

    def _sampler_for(self, circuit):
        """The ``BaseSamplerV2`` of a compiled circuit: the given one; IBM's on a remote
        device; Aer's under the device's noise on the qubits ``circuit`` uses (fake)."""
        if self.kind == "sampler":
            return self._sampler
        if self.kind == "remote":
            from qiskit_ibm_runtime import SamplerV2

            return SamplerV2(mode=self.target)
        from qiskit_aer.primitives import SamplerV2

        used = {circuit.find_bit(q).index for inst in circuit.data for q in inst.qubits}
        return SamplerV2(options={"backend_options": {
            "noise_model": noise_on(self.target, device_noise_errors(self.device_name), used)}})

    # ---------------------------------------------------------------- planning

    def estimate(self, batch: int, top_k: int, num_reads: int, steps: int,
                 group_size: int = 1, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Jobs, circuits (rows run), shots and the compiled circuit's depth and two-qubit
        gates for ``steps`` steps of ``batch`` rows of ``top_k`` candidates, spending nothing
        (rows are never coupled here, so ``group_size`` does not change the plan)."""
        params = params or {}
        enc = self.row_encoding(params)
        compiled = self.compiled(enc, top_k, tree_levels(top_k))
        shots = int(number_param("shots", params.get("shots", num_reads), num_reads))
        device_qubits = getattr(self.target, "num_qubits", None) or MAX_SIM_QUBITS
        return {"device": self.device, "device_qubits": float(device_qubits),
                "transpiled": self.target is not None,
                "calls_per_step": 1.0, "calls": float(steps), "rows_per_call": float(batch),
                "circuits": float(batch * steps), "shots": float(batch * shots * steps),
                "qubits_per_row": float(enc.qubits(top_k)),
                "transpiled_depth": compiled.stats["circuit_depth"],
                "two_qubit_gates": compiled.stats["circuit_two_qubit_gates"]}

    # ---------------------------------------------------------------- solving

    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        settings = request.settings
        enc = settings["encoding"]
        batch, width, reads = problems.batch_size, problems.width, request.num_reads
        levels = tree_levels(width)
        timing = dict.fromkeys(TIMING_KEYS + JOB_TIMING, 0.0)
        failures = Failures.none(batch)
        states = np.zeros((batch, reads, width), dtype=np.int8)
        read_mask = np.zeros((batch, reads), dtype=bool)
        begin = time.perf_counter()
        compiled, bits = None, None
        try:
            compiled = self.compiled(enc, width, levels)
            values = enc.ry_angles(tree_angles(target_probs(problems), levels), width)
            if self.kind == "ideal":
                bits = self._ideal(compiled, values, request.keys, reads,
                                   enc.row_qubits(width, levels))
            else:
                bits = self._job(compiled, values[:, compiled.order], settings, timing)
        except ConfigError:
            raise
        except Exception as exc:
            failures.mark_exception(slice(None), exc)
        if bits is not None:
            states[:] = decode(enc, bits[:, :reads], problems.sizes, width)
            read_mask[:] = True
            for key, value in compiled.stats.items():
                timing[key] += value * batch
        timing["circuits"] = float(batch)
        timing["shots"] = float(batch * (reads if self.kind == "ideal" else settings["shots"]))
        return SolveResult(states, read_mask, failures, time.perf_counter() - begin,
                           1, timing)

    def _ideal(self, compiled: Compiled, values: np.ndarray, keys: np.ndarray, reads: int,
               qubits: int) -> np.ndarray:
        """Bits uint8 [B, reads, qubits]: each row's exact Born probabilities (Aer's state
        vector, one run for the step's distinct rows) drawn with the row's key."""
        from qiskit_aer import AerSimulator

        unique, inverse = np.unique(values, axis=0, return_inverse=True)
        params = list(compiled.circuit.parameters)
        binds = [{param: unique[:, int(index)].tolist()
                  for param, index in zip(params, compiled.order, strict=True)}]
        simulator = AerSimulator(method="statevector", precision="double")
        result = simulator.run(compiled.circuit, parameter_binds=binds if params else None,
                               shots=1).result()
        bits = np.zeros((values.shape[0], reads, qubits), dtype=np.uint8)
        for u in range(unique.shape[0]):
            rows = np.flatnonzero(inverse.ravel() == u)
            born = np.asarray(result.data(u)["probabilities"])
            bits[rows] = index_bits(born_draws(born, keys[rows], reads), qubits)
        return bits

    def _job(self, compiled: Compiled, values: np.ndarray, settings: dict[str, Any],
             timing: dict[str, float]) -> np.ndarray:
        """Bits uint8 [B, shots, qubits] of one sampler job (one PUB: the circuit with the
        rows' parameter values), retried and cancelled as the module docstring says."""
        pub = (compiled.circuit, values)
        attempts = 0
        while True:
            timing["jobs"] += 1.0
            try:
                job = compiled.sampler.run([pub], shots=settings["shots"])
                result = self._wait(job, settings, timing)
                return pub_bits(result[0])
            except JobTimeout:
                raise
            except Exception as exc:
                if attempts >= settings["max_retries"]:
                    raise
                logger.warning("qiskit job on %s failed (%s), retrying (%d of %d)", self.device,
                               exc, attempts + 1, settings["max_retries"])
                time.sleep(self.backoff * 2**attempts)
                attempts += 1
                timing["retries"] += 1.0

    @staticmethod
    def _wait(job, settings: dict[str, Any], timing: dict[str, float]):
        """``job``'s result once it reaches a final state; `JobTimeout` (the job cancelled)
        past ``timeout`` seconds."""
        submitted = time.perf_counter()
        started, pause = None, FIRST_POLL_S
        while not job.in_final_state():
            now = time.perf_counter()
            if started is None and job.running():
                started = now
                timing["queue_seconds"] += now - submitted
            if now - submitted > settings["timeout"]:
                job.cancel()
                raise JobTimeout(f"job {job.job_id()} not finished in {settings['timeout']:g} "
                                 "s (cancelled)")
            time.sleep(pause)
            pause = min(2.0 * pause, settings["poll_interval"])
        result = job.result()
        now = time.perf_counter()
        if started is None:
            timing["queue_seconds"] += now - submitted
        timing["job_seconds"] += now - submitted
        usage = getattr(job, "usage", None)
        if callable(usage):  # IBM Quantum's billed seconds
            timing["quantum_seconds"] += float(usage())
        return result


class JobTimeout(TimeoutError):
    """A job that did not finish within the timeout (it was cancelled)."""


def circuit_stats(circuit) -> dict[str, float]:
    """Gate count (measurements and Aer's save instructions left out), two-qubit gate count and
    depth of one row's Qiskit circuit."""
    ops = {name: count for name, count in circuit.count_ops().items()
           if name not in ("measure", "barrier") and not name.startswith("save_")}
    return {"circuit_gates": float(sum(ops.values())),
            "circuit_two_qubit_gates": float(sum(count for name, count in ops.items()
                                                 if name in TWO_QUBIT_GATES)),
            "circuit_depth": float(circuit.depth(
                lambda inst: inst.operation.name not in ("measure", "barrier")
                and not inst.operation.name.startswith("save_")))}


def pub_bits(pub_result) -> np.ndarray:
    """Bits uint8 [B, shots, n] of a PUB's measurements (bit q: classical bit q)."""
    bits = pub_result.join_data().to_bool_array(order="little")
    return bits.astype(np.uint8)


def decode(enc: Encoding, bits: np.ndarray, sizes: np.ndarray, width: int) -> np.ndarray:
    """One-hot reads int8 [B, R, width] of measured bits [B, R, n] of a step circuit built for
    ``width`` candidates: a read that names a candidate at or past its row's size (a qubit set
    past it, in ``onehot``) is invalid (all zeros)."""
    batch, reads, qubits = bits.shape
    states = enc.states(bits.reshape(-1, qubits), width, width).reshape(batch, reads, width)
    past = np.arange(width)[None, None, :] >= sizes[:, None, None]
    states[np.any(states.astype(bool) & past, axis=2)] = 0
    return states
