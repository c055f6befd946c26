"""`qpanda-sim`: gate-model sampling on pyqpanda3's local simulator (``CPUQVM``).

Each row's candidate distribution is prepared as a quantum state by `qsample.backends.gate_model`
(encodings ``onehot``, the weighted W state, and ``binary``) and measured ``num_reads`` times:

- ideal (every noise figure 0): the simulator's state vector |psi|^2 gives the Born
  probabilities exactly, and the reads are drawn from them with the row's counter-RNG key, so a
  seed reproduces a run; the thermal target is sampled exactly (up to float64 rounding);
- noisy (``backend_params`` ``depolarizing_1q``, ``depolarizing_2q``, ``readout_error``,
  ``noise_scale``; `gate_model.GateNoise`): pyqpanda3 runs the measured circuit ``num_reads``
  shots under its ``NoiseModel`` (a trajectory per shot, unseeded, like a QPU); the shots are
  put in an order drawn from the row's key.

The state-vector simulator holds 2^n amplitudes: ``onehot`` takes n = K qubits, so it is limited
to K <= `MAX_SIM_QUBITS`; ``binary`` takes ceil(log2 K). Telemetry's ``backend_timing`` sums the
circuits' ``circuit_gates``, ``circuit_two_qubit_gates`` and ``circuit_depth`` over ``circuits``
and counts ``shots``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..problems import OneHotProblems
from .base import Backend, Failures, SolveRequest, SolveResult, number_param
from .gate_model import (
    DEFAULT_ENCODING,
    Encoding,
    GateNoise,
    born_draws,
    circuit_stats,
    counts_bits,
    encoding,
    index_bits,
    row_program,
    sdk,
    shot_order,
    target_probs,
    tree_angles,
    tree_levels,
)

MAX_SIM_QUBITS = 20  # state vector of 2^20 amplitudes (16 MB); a noisy K = 20 shot takes ~0.1 s
DEFAULT_GATE_TOP_K = 16  # 16 qubits per row in the onehot encoding
TIMING_KEYS = ("circuits", "circuit_gates", "circuit_two_qubit_gates", "circuit_depth", "shots")


def job_policy(params: dict[str, Any], timeout: float, poll_interval: float,
               max_retries: int) -> dict[str, Any]:
    """The job settings of a backend that submits jobs (`originq`, `qiskit`): ``timeout``
    (seconds, > 0), ``poll_interval`` (seconds, >= 0) and ``max_retries`` (>= 0), from
    ``backend_params`` over the given defaults; `ConfigError` naming the key otherwise."""
    return {
        "timeout": number_param("timeout", params.get("timeout", timeout), 0.0, above=True),
        "poll_interval": number_param("poll_interval",
                                      params.get("poll_interval", poll_interval), 0.0),
        "max_retries": int(number_param("max_retries", params.get("max_retries", max_retries),
                                        0.0)),
    }


class GateModelBackend(Backend):
    """What the gate-model backends share: the thermal task only (a measured state is a
    sample, not a search for a ground state), the ``encoding`` parameter and the qubit budget.

    Attributes:
        encoding: the default encoding, ``"onehot"`` or ``"binary"``.
    """

    tasks = ("thermal",)
    default_top_k = DEFAULT_GATE_TOP_K

    def __init__(self, encoding_name: str = DEFAULT_ENCODING) -> None:
        self.require_sdk()
        self.encoding = encoding(encoding_name).name

    def require_sdk(self) -> None:
        """Raise `ConfigError` naming the backend now when its SDK is not installed
        (pyqpanda3 here)."""
        sdk(self.name)

    def qubit_budget(self, params: dict[str, Any]) -> int:
        """The most qubits one row may take with ``backend_params`` ``params``."""
        raise NotImplementedError

    def row_encoding(self, params: dict[str, Any]) -> Encoding:
        return encoding(params.get("encoding", self.encoding))

    def check(self, request: SolveRequest, top_k: int | None) -> None:
        """`Backend.check`, and top_k within the qubit budget in the chosen encoding."""
        super().check(request, top_k)
        params = dict(request.params)
        enc = self.row_encoding(params)
        budget = self.qubit_budget(params)
        if top_k is not None and enc.qubits(top_k) > budget:
            raise ConfigError("top_k", top_k, f"at most {enc.largest(budget)} with backend "
                              f"'{self.name}' "
                              f"in the {enc.name} encoding ({budget} qubits per row; "
                              "backend_params encoding=binary takes ceil(log2 K))")


class QPandaSimBackend(GateModelBackend):
    """pyqpanda3's ``CPUQVM``, ideal or noisy (module docstring).

    Args:
        encoding_name: the default encoding (``backend_params`` ``encoding`` overrides it).
    """

    name = "qpanda-sim"
    params = ("encoding", *GateNoise.knobs())
    probe = True

    def qubit_budget(self, params: dict[str, Any]) -> int:
        return MAX_SIM_QUBITS

    def fidelity_warning(self, request: SolveRequest, top_k: int) -> str | None:
        noise = request.settings["noise"]
        if noise.ideal:
            return None
        one, two, readout = noise.scaled()
        return (f"backend 'qpanda-sim' runs with pyqpanda3 noise (depolarizing {one:g} per "
                f"one-qubit gate, {two:g} per CNOT, read-out error {readout:g}; "
                "docs/gate-model.md): its samples are deliberately not faithful; 'qsample "
                "fidelity' or 'qsample calibrate' measures how far")

    def settings(self, request: SolveRequest) -> dict[str, Any]:
        """``encoding`` (an `Encoding`) and ``noise`` (`GateNoise`) with its pyqpanda3
        ``model``, from ``backend_params``."""
        params = dict(request.params)
        noise = GateNoise.from_params(params)
        return {"encoding": self.row_encoding(params), "noise": noise,
                "model": None if noise.ideal else noise.model()}

    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        settings = request.settings
        enc, model = settings["encoding"], settings["model"]
        batch, width, reads = problems.batch_size, problems.width, request.num_reads
        levels = tree_levels(width)
        probs = target_probs(problems)
        angles = tree_angles(probs, levels)
        states = np.zeros((batch, reads, width), dtype=np.int8)
        read_mask = np.zeros((batch, reads), dtype=bool)
        failures = Failures.none(batch)
        timing = dict.fromkeys(TIMING_KEYS, 0.0)
        qvm = sdk().CPUQVM()
        begin = time.perf_counter()
        # ideal: rows with one problem share one simulation (their draws differ by key)
        firsts, shared = (np.unique(np.column_stack([probs, problems.sizes]), axis=0,
                                    return_index=True, return_inverse=True)[1:]
                          if model is None else (np.arange(batch), np.arange(batch)))
        for index, first in enumerate(firsts):
            rows = np.flatnonzero(shared.ravel() == index)
            k = int(problems.sizes[first])
            qubits = enc.row_qubits(k, levels)
            try:
                prog = sdk().QProg()
                prog << row_program(enc, angles, int(first), k)
                for key, value in circuit_stats(prog).items():
                    timing[key] += value
                for row, bits in zip(rows, self._run(qvm, prog, model, qubits, reads,
                                                     request.keys[rows]), strict=True):
                    states[row] = enc.states(bits, k, width)
                read_mask[rows] = True
            except Exception as exc:
                failures.mark_exception(rows, exc)
            timing["circuits"] += 1.0
        timing["shots"] = float(batch * reads)
        return SolveResult(states, read_mask, failures, time.perf_counter() - begin, 1, timing)

    @staticmethod
    def _run(qvm, prog, model, qubits: int, reads: int, keys: np.ndarray) -> list[np.ndarray]:
        """Measured bits uint8 [reads, qubits] for each row key: drawn from the exact Born
        probabilities (ideal, ``model`` None), else from ``reads`` noisy shots of one row."""
        if model is None:
            qvm.run(prog, 1)
            born = np.asarray(qvm.result().get_prob_list())
            return list(index_bits(born_draws(born, keys, reads), qubits))
        prog << sdk().measure(list(range(qubits)), list(range(qubits)))
        qvm.run(prog, reads, model)
        outcomes, counts = counts_bits(qvm.result().get_counts())
        return [outcomes[shot_order(counts, key, reads)] for key in keys]
