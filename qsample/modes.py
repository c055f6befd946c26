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

Coupled siblings (`qsample.coupling`: groups of rows, coupling lambda) add lambda for every
pair of a group's rows on one token (`qsample.problems.SiblingCoupling`):

``boltzmann``: each row keeps its own weights; restricted to one-hot states exp(-E) is then
prod_r p_r(x_r) exp(-lambda * pairs), the coupled target. A read of a group is kept only if all
n rows are one-hot at once, so a group of n rows anneals with A_g = A_0 + ln n: a row's chance
of a non-one-hot read falls about like e^-A, and n rows then keep about the joint valid-read
rate of one row at A_0 (the mixing time grows like e^A, i.e. about n-fold). For lambda = inf
the anneal uses lambda = A_g and reads with a collision are rejected like non-one-hot reads: on
the distinct states that remain the coupling energy is 0, so the accepted reads follow
prod_r p_r restricted to distinct tokens (not the same law as gumbel's ordered sample without
replacement).

``gumbel`` with lambda = inf (``"distinct"``): the rows of a group share their first row's
candidates and perturbed weights w (one Gumbel draw, keyed by the first row's key, or by the
joint sample's seed where the adapter continues one, `coupling.Continuation`, and by token id,
so that a candidate's perturbation does not depend on its rank or on the other candidates). With
A = lambda = A_0 + max(0, -w_(n)) (w_(n) the n-th largest weight of a group of n rows) every
ground state puts the rows one-hot on the n largest perturbed candidates: an empty row costs A
more than any of them, and a collision costs lambda more than moving a colliding row to an
unused one of the n. That set is Gumbel-top-k, an exact sample without replacement (Kool, van
Hoof and Welling 2019); the sampler hands it to the rows in decreasing w (`coupling.in_order`),
so row j of a group holds the j-th draw of the ordered sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from . import coupling, rng
from .annealer.step import KernelMode
from .candidates import CandidateBlock
from .problems import OneHotProblems, SiblingCoupling


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
    kernel: KernelMode  # what the fused step kernels read of it (`qsample.annealer.step`)

    @abstractmethod
    def weights(self, block: CandidateBlock, keys: np.ndarray,
                groups: np.ndarray | None = None) -> np.ndarray:
        """w [B, K] (-inf past each row's size); ``groups`` as `encode`'s."""

    def encode(self, block: CandidateBlock, keys: np.ndarray, penalty: float,
               groups: np.ndarray | None = None, strength: float = 0.0) -> OneHotProblems:
        """The step's problems; with ``groups`` (numbered 0..G-1, -1: none) rows of a group
        are coupled by ``strength`` (the config's coupling, inf for distinct)."""
        weights = self.weights(block, keys, groups)
        penalties = np.full(block.batch_size, float(penalty))
        if groups is None:
            return OneHotProblems(weights, penalties, block.sizes)
        group_penalty, lam = self.group_terms(weights, groups, strength, float(penalty))
        member = groups >= 0
        penalties[member] = group_penalty[groups[member]]
        siblings = SiblingCoupling.from_tokens(groups, block.token_ids, block.sizes, lam)
        return OneHotProblems(weights, penalties, block.sizes, siblings)

    def group_terms(self, weights: np.ndarray, groups: np.ndarray, strength: float,
                    penalty: float) -> tuple[np.ndarray, np.ndarray]:
        """(A_g, lambda_g) [G] each, what the anneal of each group uses: A_g = A_0 + ln n for a
        group of n rows (module docstring), lambda_g the coupling (A_g for inf)."""
        n = np.bincount(groups[groups >= 0])
        group_penalty = penalty + np.log(n)
        lam = group_penalty if np.isinf(strength) else np.full(n.size, strength)
        return group_penalty, lam

    @abstractmethod
    def choose(self, energies: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Index of the read to keep per row (or group), given energies [B, R] and valid
        [B, R] (rows with no valid read are handled by the caller)."""

    def shared(self, block: CandidateBlock, keys: np.ndarray, groups: np.ndarray | None,
               group_keys: np.ndarray | None = None) -> tuple[CandidateBlock, np.ndarray]:
        """The candidates and noise keys each row is encoded with: its own. ``group_keys``
        (uint64 [B]): the seeds of the joint samples the rows continue, or None."""
        return block, keys

    def arrange(self, choice: np.ndarray, problems: OneHotProblems, groups: np.ndarray
                ) -> np.ndarray:
        """The chosen candidate of each row once a group's joint read is chosen: as read."""
        return choice

    def draw(self, block: CandidateBlock, keys: np.ndarray, groups: np.ndarray | None,
             strength: float) -> tuple[np.ndarray, np.ndarray]:
        """A classical draw of the target, one candidate index per row (the fallback ``exact``):
        rows in no group from p_r, groups from the coupled target (`coupling.sample_joint`);
        and bool [B], True where the draw is only approximate (`coupling.sample_joint`'s
        sequential draw)."""
        if groups is None:
            return (rng.categorical(keys, block.target_probs()),
                    np.zeros(block.batch_size, dtype=bool))
        return coupling.sample_joint(block.target_probs(), block.token_ids, groups, strength,
                                     keys)


class GumbelMode(Mode):
    name = "gumbel"
    task = "ground"
    defaults = ModeDefaults(penalty=1.0, num_reads=5, num_sweeps=30, beta_range=(0.1, 10.0))
    kernel = KernelMode(perturb=True, keep_lowest=True)  # `weights`, `choose`

    def weights(self, block: CandidateBlock, keys: np.ndarray,
                groups: np.ndarray | None = None) -> np.ndarray:
        """w = l / T + g - max(l / T + g): g keyed by (row key, rank) for a row in no group,
        by (group key, token id) for a group's rows (`shared`)."""
        noise = rng.gumbel(keys, block.width)
        if groups is not None:
            member = groups >= 0
            noise[member] = rng.gumbel(
                rng.combine(keys[member, None], block.token_ids[member]).ravel(), 1
            ).reshape(-1, block.width)
        perturbed = block.logits + noise
        return perturbed - perturbed.max(axis=1, keepdims=True)

    def choose(self, energies: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return np.argmin(np.where(valid, energies, np.inf), axis=1)

    def shared(self, block: CandidateBlock, keys: np.ndarray, groups: np.ndarray | None,
               group_keys: np.ndarray | None = None) -> tuple[CandidateBlock, np.ndarray]:
        """The first row's candidates and noise key (its group key, where given) for every
        row of a group."""
        if groups is None:
            return block, keys
        first = coupling.leaders(groups)
        source = keys if group_keys is None else np.where(groups >= 0, group_keys, keys)
        return block.take(first), source[first]

    def arrange(self, choice: np.ndarray, problems: OneHotProblems, groups: np.ndarray
                ) -> np.ndarray:
        """The Gumbel-top-k set in decreasing perturbed weight over the group's rows."""
        return coupling.in_order(choice, problems.weights, groups)

    def draw(self, block: CandidateBlock, keys: np.ndarray, groups: np.ndarray | None,
             strength: float) -> tuple[np.ndarray, np.ndarray]:
        """As `Mode.draw`, but a distinct group takes the n largest perturbed weights of its
        shared candidates in order: the ground state itself, found by sorting (exact)."""
        choice = rng.categorical(keys, block.target_probs())
        if groups is not None:
            order = np.argsort(-self.weights(block, keys, groups), axis=1, kind="stable")
            member = np.flatnonzero(groups >= 0)
            choice[member] = order[member, coupling.positions(groups)[member]]
        return choice, np.zeros(block.batch_size, dtype=bool)

    def group_terms(self, weights: np.ndarray, groups: np.ndarray, strength: float,
                    penalty: float) -> tuple[np.ndarray, np.ndarray]:
        """A_g = lambda_g = A_0 + max(0, -w_(n)) per group of n rows (module docstring)."""
        member = np.flatnonzero(groups >= 0)
        n = coupling.sizes(groups)[member]
        nth = -np.sort(-weights[member], axis=1)[np.arange(member.size), n - 1]
        out = np.full(int(groups.max(initial=-1)) + 1, penalty)
        np.maximum.at(out, groups[member], penalty + np.maximum(0.0, -nth))
        return out, out


class BoltzmannMode(Mode):
    name = "boltzmann"
    task = "thermal"
    defaults = ModeDefaults(penalty=1.5, num_reads=8, num_sweeps=20)
    kernel = KernelMode(perturb=False, keep_lowest=False)  # `weights`, `choose`

    def weights(self, block: CandidateBlock, keys: np.ndarray,
                groups: np.ndarray | None = None) -> np.ndarray:
        top = block.logits[:, :1]
        return block.logits - (top + np.log(np.exp(block.logits - top).sum(axis=1, keepdims=True)))

    def choose(self, energies: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return np.argmax(valid, axis=1)  # first valid read: reads are independent chains


MODES: dict[str, Mode] = {"gumbel": GumbelMode(), "boltzmann": BoltzmannMode()}
