"""Modes: how a row's candidate distribution becomes a one-hot QUBO, and how reads become a
choice.

Both modes build E(x) = -sum_i w_i x_i + A (sum_i x_i - 1)^2 over the K candidates (see
`qsample.problems`); the one-hot state e_i has energy -w_i, every other state pays the penalty.

``gumbel`` (perturb-and-MAP). w_i = l_i / T + g_i - max_j (l_j / T + g_j), g_i ~ Gumbel(0, 1)
i.i.d. By the Gumbel-max theorem argmax_i w_i ~ softmax(l / T), so the ground state is an exact
sample of the target. With max_i w_i = 0 every A > 0 makes the ground state one-hot (the empty
state costs A, an m-hot state -sum w + A (m-1)^2 > 0). The backend's job is to find it; the
lowest-energy valid read is kept.

``boltzmann`` (thermal). w_i = log softmax(l / T)_i, sampled at inverse temperature 1. Restricted
to one-hot states, exp(-E) is exactly softmax(l / T); non-one-hot reads are rejected and each read
is an independent chain, so the first valid read is a sample of the target once the chain has
mixed. Centring by the log-sum-exp fixes the weight of invalid states relative to valid ones
(empty: e^-A, two-hot: about e^-A / 2), so A alone sets both the reject rate and, through detailed
balance, the rate of moves between one-hot states: a small A mixes in few sweeps at the cost of
more rejected reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from . import rng
from .candidates import CandidateBlock
from .problems import OneHotProblems


@dataclass(frozen=True)
class ModeDefaults:
    """Settings a mode uses when the config leaves them None."""

    penalty: float
    num_reads: int
    num_sweeps: int
    beta_range: tuple[float, float] | None = None


class Mode(ABC):
    """A QUBO encoding of the candidate distribution."""

    name: str
    task: str  # what it needs from a backend: "ground" or "thermal"
    defaults: ModeDefaults  # the settings measured faithful (docs/fidelity.md)

    @abstractmethod
    def weights(self, block: CandidateBlock, keys: np.ndarray) -> np.ndarray:
        """w [B, K] (-inf past each row's size)."""

    def encode(self, block: CandidateBlock, keys: np.ndarray, penalty: float) -> OneHotProblems:
        return OneHotProblems(
            weights=self.weights(block, keys),
            penalty=np.full(block.batch_size, float(penalty)),
            sizes=block.sizes,
        )

    @abstractmethod
    def choose(self, energies: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Index of the read to keep per row, given energies [B, R] and valid [B, R] (rows with
        no valid read are handled by the caller)."""


class GumbelMode(Mode):
    name = "gumbel"
    task = "ground"
    defaults = ModeDefaults(penalty=1.0, num_reads=5, num_sweeps=30, beta_range=(0.1, 10.0))

    def weights(self, block: CandidateBlock, keys: np.ndarray) -> np.ndarray:
        perturbed = block.logits + rng.gumbel(keys, block.width)
        return perturbed - perturbed.max(axis=1, keepdims=True)

    def choose(self, energies: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return np.argmin(np.where(valid, energies, np.inf), axis=1)


class BoltzmannMode(Mode):
    name = "boltzmann"
    task = "thermal"
    defaults = ModeDefaults(penalty=1.5, num_reads=8, num_sweeps=20)

    def weights(self, block: CandidateBlock, keys: np.ndarray) -> np.ndarray:
        top = block.logits[:, :1]
        return block.logits - (top + np.log(np.exp(block.logits - top).sum(axis=1, keepdims=True)))

    def choose(self, energies: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return np.argmax(valid, axis=1)  # first valid read: reads are independent chains


MODES: dict[str, Mode] = {"gumbel": GumbelMode(), "boltzmann": BoltzmannMode()}
