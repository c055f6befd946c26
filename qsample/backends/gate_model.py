"""Gate-model sampling of one-hot problems: the candidate distribution as a quantum state.

Row b's thermal target over its one-hot states is p_i ∝ exp(-E(e_i)) = softmax(w)_i (the one-hot
state i has energy -w_i + A - A). A state sum_i sqrt(p_i) |s_i>, measured in the computational
basis, draws s_i with probability p_i (Born rule). Two encodings of candidate i:

- ``onehot``: K qubits, s_i = e_i (qubit i set): the weighted W state, whose support is exactly
  the QUBO's one-hot states; on noisy hardware an outcome with other than one qubit set is an
  invalid read, handled by the mode's validity check and the fallback policy;
- ``binary``: n = ceil(log2 K) qubits, s_i = the digits of i (qubit 0 the most significant);
  outcomes i >= K are invalid reads. Exponentially fewer qubits, but the state is entangled
  across all n qubits and needs ~2^n CNOTs.

Rotation tree. Both states come from one binary tree over 2^n slots (p padded with zeros): the
node at level l with prefix j covers slots [j 2^(n-l), (j+1) 2^(n-l)) and splits them in halves
with angle theta = 2 arccos(sqrt(P_left / P_node)) (0 where P_node = 0), so that cos(theta/2)
of the node's amplitude stays left and sin(theta/2) goes right.

- onehot: X on qubit 0; then, level by level, each node whose right half starts at a candidate
  (mid < K) moves its share from qubit lo to qubit mid: a controlled RY(theta) from lo onto mid
  (RY(theta/2) CNOT RY(-theta/2) CNOT) and CNOT(mid -> lo). K - 1 such splits, depth O(log K):
  1 X, 2(K-1) RY and 3(K-1) CNOT.
- binary: level l sets qubit l by a uniformly controlled RY on qubits 0..l-1 (Möttönen et al.,
  PRL 93, 130502 (2004)): 2^l RY and 2^l CNOT in Gray-code order, angles theta' = M^T alpha / 2^l
  with M_xi = (-1)^(x . g_i), g_i the Gray code of i; 2^n - 1 RY and 2^n - 2 CNOT in all.

Circuits use RY, X and CNOT only. Reads from measurement outcomes are decoded back to one-hot
states [R, K] (a read of an invalid outcome is all zeros, so the sampler counts it invalid).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError
from ..problems import OneHotProblems
from ..rng import STREAM_BACKEND_SEED, uniform
from .base import number_param

DEFAULT_ENCODING = "onehot"
ORIGIN_EXTRA = "pyqpanda3 (pip install 'qsample[origin]')"
_ASCII_ZERO = ord("0")


def sdk(backend: str = "qpanda-sim"):
    """pyqpanda3's ``core`` module; `ConfigError` naming ``backend`` when it is not
    installed."""
    try:
        from pyqpanda3 import core
    except ImportError as exc:
        raise ConfigError("backend", backend, ORIGIN_EXTRA) from exc
    return core


def tree_levels(k: int) -> int:
    """n = ceil(log2 K), at least 1: the depth of the rotation tree over K candidates."""
    return max(1, math.ceil(math.log2(max(k, 2))))


def target_probs(problems: OneHotProblems) -> np.ndarray:
    """p [B, K] = softmax(w) over each row's candidates (0 past sizes): the thermal target
    exp(-E(e_i)) of the one-hot states, normalised."""
    weights = problems.weights
    top = np.max(weights, axis=1, keepdims=True)
    mass = np.where(problems.variable_mask, np.exp(weights - top), 0.0)
    return mass / mass.sum(axis=1, keepdims=True)


def tree_angles(probs: np.ndarray, levels: int) -> list[np.ndarray]:
    """The rotation tree's angles (module docstring): level l's [B, 2^l], node j's theta."""
    batch, width = probs.shape
    padded = np.zeros((batch, 1 << levels))
    padded[:, :width] = probs
    angles = []
    for level in range(levels):
        halves = padded.reshape(batch, 1 << (level + 1), -1).sum(axis=2)
        left, node = halves[:, 0::2], halves[:, 0::2] + halves[:, 1::2]
        ratio = np.divide(left, node, out=np.ones_like(left), where=node > 0)
        angles.append(2.0 * np.arccos(np.sqrt(np.clip(ratio, 0.0, 1.0))))
    return angles


def _gray(i: np.ndarray) -> np.ndarray:
    return i ^ (i >> 1)


def _popcount_parity(x: np.ndarray) -> np.ndarray:
    parity = np.zeros_like(x)
    while np.any(x):
        parity ^= x & 1
        x = x >> 1
    return parity


def _bit_reverse(x: np.ndarray, bits: int) -> np.ndarray:
    out = np.zeros_like(x)
    for m in range(bits):
        out |= ((x >> m) & 1) << (bits - 1 - m)
    return out


def uniformly_controlled_angles(alpha: np.ndarray) -> np.ndarray:
    """Möttönen's rotation angles theta' [2^k] of a uniformly controlled RY whose angle is
    alpha[x] for control state x (bit m of x: control m): theta' = M^T alpha / 2^k."""
    size = alpha.shape[-1]
    x = np.arange(size)[:, None]
    signs = 1.0 - 2.0 * _popcount_parity(x & _gray(np.arange(size))[None, :])
    return alpha @ signs / size


class Gate(NamedTuple):
    """One gate of a row's circuit, independent of the SDK that runs it.

    Attributes:
        name: ``"x"``, ``"ry"`` or ``"cx"`` (CNOT).
        qubits: the target (``x``, ``ry``) or (control, target) (``cx``).
        angle: for ``ry``, the index of its angle in the row's `Encoding.ry_angles`; else -1.
    """

    name: str
    qubits: tuple[int, ...]
    angle: int = -1


class Encoding:
    """How candidate i is written on qubits (module docstring). A row's circuit is its
    `layout` (which gates act on which qubits: fixed by K and the tree's depth) with the RY
    angles of `ry_angles` (the row's distribution) filled in, so a circuit compiled once per
    layout runs every row as parameter values.

    Attributes:
        name: ``"onehot"`` or ``"binary"``.
    """

    name: str = ""

    def qubits(self, k: int) -> int:
        """Qubits of a row of ``k`` candidates."""
        raise NotImplementedError

    def row_qubits(self, k: int, levels: int) -> int:
        """Qubits measured for a row of ``k`` candidates in a step whose tree has ``levels``
        (a binary row takes the step's tree depth, a onehot row its own K)."""
        raise NotImplementedError

    def largest(self, qubits: int) -> int:
        """The most candidates ``qubits`` qubits hold."""
        raise NotImplementedError

    def layout(self, k: int, levels: int, offset: int = 0) -> list[Gate]:
        """The gates preparing a row of ``k`` candidates, from a tree of ``levels``, on qubits
        offset .. offset + row_qubits(k, levels) - 1."""
        raise NotImplementedError

    def ry_angles(self, angles: list[np.ndarray], k: int) -> np.ndarray:
        """The RY angles [B, P] of `layout` (k, len(angles)) for rows whose level angles are
        ``angles`` (`tree_angles`: level l's [B, 2^l])."""
        raise NotImplementedError

    def states(self, bits: np.ndarray, k: int, width: int) -> np.ndarray:
        """One-hot reads int8 [R, width] of measured bits uint8 [R, qubits(k)] (bit q: qubit q);
        an invalid outcome gives an all-zero read."""
        raise NotImplementedError


def _splits(k: int, levels: int) -> list[tuple[int, int, int]]:
    """The onehot tree's splits, in gate order: (level, node j, first slot lo) of each node
    whose right half starts at a candidate (mid < k)."""
    out = []
    for level in range(levels):
        span = 1 << (levels - level)
        out += [(level, j, j * span) for j in range(1 << level)
                if j * span + span // 2 < k]
    return out


class OneHotEncoding(Encoding):
    name = "onehot"

    def qubits(self, k: int) -> int:
        return k

    def row_qubits(self, k: int, levels: int) -> int:
        return k

    def largest(self, qubits: int) -> int:
        return qubits

    def layout(self, k: int, levels: int, offset: int = 0) -> list[Gate]:
        out = [Gate("x", (offset,))]
        for n, (level, _, lo) in enumerate(_splits(k, levels)):
            a, b = offset + lo, offset + lo + (1 << (levels - level - 1))
            out += [Gate("ry", (b,), 2 * n), Gate("cx", (a, b)), Gate("ry", (b,), 2 * n + 1),
                    Gate("cx", (a, b)), Gate("cx", (b, a))]
        return out

    def ry_angles(self, angles: list[np.ndarray], k: int) -> np.ndarray:
        splits = _splits(k, len(angles))
        if not splits:
            return np.zeros((angles[0].shape[0], 0))
        half = np.stack([angles[level][:, j] for level, j, _ in splits], axis=1) / 2.0
        return np.stack([half, -half], axis=2).reshape(half.shape[0], -1)

    def states(self, bits: np.ndarray, k: int, width: int) -> np.ndarray:
        out = np.zeros((bits.shape[0], width), dtype=np.int8)
        out[:, :k] = bits[:, :k]
        return out


class BinaryEncoding(Encoding):
    name = "binary"

    def qubits(self, k: int) -> int:
        return tree_levels(k)

    def row_qubits(self, k: int, levels: int) -> int:
        return levels

    def largest(self, qubits: int) -> int:
        return 1 << qubits

    def layout(self, k: int, levels: int, offset: int = 0) -> list[Gate]:
        out = [Gate("ry", (offset,), 0)]
        index = 1
        for level in range(1, levels):
            states = np.arange(1 << level)
            gray = _gray(states)
            flips = gray ^ _gray((states + 1) % (1 << level))  # the bit each CNOT toggles
            for i in range(1 << level):
                control = int(flips[i]).bit_length() - 1
                out += [Gate("ry", (offset + level,), index),
                        Gate("cx", (offset + control, offset + level))]
                index += 1
        return out

    def ry_angles(self, angles: list[np.ndarray], k: int) -> np.ndarray:
        out = [angles[0][:, :1]]
        for level in range(1, len(angles)):
            # the tree numbers prefixes with qubit 0 the most significant digit; the control
            # state x has qubit m as bit m
            alpha = angles[level][:, _bit_reverse(np.arange(1 << level), level)]
            out.append(uniformly_controlled_angles(alpha))
        return np.concatenate(out, axis=1)

    def states(self, bits: np.ndarray, k: int, width: int) -> np.ndarray:
        n = bits.shape[1]
        index = bits.astype(np.int64) @ (1 << np.arange(n - 1, -1, -1))
        out = np.zeros((bits.shape[0], width), dtype=np.int8)
        valid = index < k
        out[np.flatnonzero(valid), index[valid]] = 1
        return out


ENCODING_CLASSES: dict[str, type[Encoding]] = {"onehot": OneHotEncoding,
                                               "binary": BinaryEncoding}
ENCODINGS = tuple(ENCODING_CLASSES)


def encoding(name: Any) -> Encoding:
    """The `Encoding` called ``name``; `ConfigError` on ``backend_params.encoding`` otherwise."""
    if name not in ENCODING_CLASSES:
        raise ConfigError("backend_params.encoding", name, " or ".join(map(repr, ENCODINGS)))
    return ENCODING_CLASSES[name]()


def row_program(enc: Encoding, angles: list[np.ndarray], row: int, k: int, offset: int = 0):
    """The gates of ``row`` (of the step's `tree_angles`) as a pyqpanda3 ``QCircuit``."""
    core = sdk()
    values = enc.ry_angles([level[row:row + 1] for level in angles], k)[0]
    circuit = core.QCircuit()
    for gate in enc.layout(k, len(angles), offset):
        if gate.name == "ry":
            circuit << core.RY(gate.qubits[0], float(values[gate.angle]))
        elif gate.name == "cx":
            circuit << core.CNOT(*gate.qubits)
        else:
            circuit << core.X(gate.qubits[0])
    return circuit


def circuit_stats(prog) -> dict[str, float]:
    """Gate count, two-qubit gate count and depth of a pyqpanda3 program (telemetry)."""
    ops = prog.count_ops()
    return {"circuit_gates": float(sum(ops.values())),
            "circuit_two_qubit_gates": float(sum(prog.count_ops(True).values())),
            "circuit_depth": float(prog.depth())}


def counts_bits(counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """The outcomes of a counts dict as bits uint8 [U, n] (column q: the key's qubit q, keys
    written with qubit 0 rightmost as pyqpanda3 does) and their counts int64 [U]."""
    keys = list(counts)
    if not keys:
        return np.zeros((0, 0), np.uint8), np.zeros(0, np.int64)
    width = len(keys[0])
    raw = np.frombuffer("".join(keys).encode("ascii"), dtype=np.uint8).reshape(len(keys), width)
    bits = (raw[:, ::-1] - _ASCII_ZERO).astype(np.uint8)
    return bits, np.fromiter(counts.values(), dtype=np.int64, count=len(keys))


def shot_order(counts: np.ndarray, key: np.ndarray, reads: int) -> np.ndarray:
    """Outcome index of each of ``reads`` shots, int64 [reads]: the shots of ``counts``
    (outcome u repeated counts[u] times) in a random order drawn from the uint64 ``key``, so
    that "the first valid read" is a random shot, not the lowest bit string."""
    shots = np.repeat(np.arange(counts.shape[0]), counts)
    order = np.argsort(uniform(np.atleast_1d(key), STREAM_BACKEND_SEED, shots.shape[0])[0])
    return shots[order][:reads]


def born_draws(probs: np.ndarray, keys: np.ndarray, reads: int) -> np.ndarray:
    """Outcome indices int64 [rows, reads] drawn from the Born probabilities [2^n] with each
    row's uint64 key (inverse CDF of the counter RNG's uniforms)."""
    cdf = np.cumsum(probs)
    u = uniform(np.atleast_1d(keys), STREAM_BACKEND_SEED, reads) * cdf[-1]
    return np.minimum(np.searchsorted(cdf, u, side="right"), probs.shape[0] - 1)


def index_bits(index: np.ndarray, qubits: int) -> np.ndarray:
    """Bits uint8 [..., qubits] of outcome indices [...] (bit q: qubit q)."""
    return ((index[..., None] >> np.arange(qubits)) & 1).astype(np.uint8)


# ---------------------------------------------------------------- noise

MAX_ERROR = 1.0  # pyqpanda3's error probabilities lie in [0, 1]


@dataclass(frozen=True)
class GateNoise:
    """pyqpanda3 noise of a simulated gate-model run (``backend_params`` of `qpanda-sim`).

    Attributes:
        depolarizing_1q: p of pyqpanda3's ``depolarizing_error`` on every RY and X:
            rho -> (1 - p) rho + p I/2 (a gate fidelity F is p = 2 (1 - F)).
        depolarizing_2q: p of the same error on every CNOT (pyqpanda3 applies it to each of
            the two qubits).
        readout_error: probability that a measured qubit reads the other value (symmetric).
        noise_scale: multiplies all three (0: ideal).
    """

    depolarizing_1q: float = 0.0
    depolarizing_2q: float = 0.0
    readout_error: float = 0.0
    noise_scale: float = 1.0

    @classmethod
    def knobs(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> GateNoise:
        """The noise of ``backend_params`` (other keys ignored); a value outside [0, 1] (any
        finite number >= 0 for ``noise_scale``), or a scale leaving a probability above 1,
        raises `ConfigError` naming ``backend_params.<knob>``."""
        values = {}
        for name in cls.knobs():
            if name in params:
                high = math.inf if name == "noise_scale" else MAX_ERROR
                values[name] = number_param(name, params[name], 0.0, high)
        noise = cls(**values)
        if max(noise.scaled()) > MAX_ERROR:
            raise ConfigError("backend_params.noise_scale", noise.noise_scale,
                              f"a scale leaving every error probability <= {MAX_ERROR:g}")
        return noise

    def scaled(self) -> tuple[float, float, float]:
        """(depolarizing_1q, depolarizing_2q, readout_error) times ``noise_scale``."""
        return (self.depolarizing_1q * self.noise_scale, self.depolarizing_2q * self.noise_scale,
                self.readout_error * self.noise_scale)

    @property
    def ideal(self) -> bool:
        return not any(self.scaled())

    def model(self):
        """The pyqpanda3 ``NoiseModel`` (errors of probability 0 left out)."""
        core = sdk()
        one, two, readout = self.scaled()
        model = core.NoiseModel()
        if one:
            model.add_all_qubit_quantum_error(core.depolarizing_error(one),
                                              [core.GateType.RY, core.GateType.X])
        if two:
            model.add_all_qubit_quantum_error(core.depolarizing_error(two), core.GateType.CNOT)
        if readout:  # probs[i][j] = P(read j | state i)
            model.add_all_qubit_read_out_error([[1.0 - readout, readout],
                                                [readout, 1.0 - readout]])
        return model

