"""`OneHotProblems`: the B binary quadratic models of one decoding step, as arrays.

Row b is a clique over its K_b candidates with one uniform coupling:

    E_b(x) = sum_i h[b, i] x_i + c[b] * sum_{i<j} x_i x_j + offset[b],   x in {0, 1}^K_b.

With h_i = -w_i - A, c = 2A and offset = A this is E(x) = -sum_i w_i x_i + A (sum_i x_i - 1)^2,
the one-hot model every mode builds (only w differs). Energies of many states are computed in
O(K) per state from the count of ones. Conversions to ``dimod.BinaryQuadraticModel`` (one row, or
the disjoint union of all rows, whose reads `split_union` splits back into rows) serve the dimod
backends.

Sibling rows (the n sequences of one prompt) may be coupled into one model (`SiblingCoupling`):

    E(x) = sum_b E_b(x_b) + sum_g lambda_g sum_{b<b' in g} sum_{i,j: token(b,i) = token(b',j)}
           x_{b,i} x_{b',j},

lambda_g times the number of sibling pairs that sit on one token. A row never lists a token
twice, so within a group each token is one "slot" shared by the rows that list it, and the
coupling energy is lambda_g sum_slots C(n_slot, 2) with n_slot the rows on the slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def _upper_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.triu_indices(k, 1)
    return rows.astype(np.int64), cols.astype(np.int64)


@dataclass(frozen=True)
class SiblingCoupling:
    """Couplings between the rows of groups (see the module docstring).

    Attributes:
        groups: int64 [B], the group of each row (0..G-1), -1 for rows coupled to none.
        slots: int64 [B, K], the step-wide index of candidate (b, i)'s token within b's group:
            two rows of one group share a slot exactly where they list the same token; -1 past
            sizes and on uncoupled rows.
        strength: float64 [G], lambda_g > 0 (finite: the annealed value).
    """

    groups: np.ndarray
    slots: np.ndarray
    strength: np.ndarray

    @classmethod
    def from_tokens(cls, groups: np.ndarray, tokens: np.ndarray, sizes: np.ndarray,
                    strength: np.ndarray) -> SiblingCoupling:
        """Slots from the candidates' token ids [B, K] (``groups`` already numbered 0..G-1)."""
        mask = (np.arange(tokens.shape[1])[None, :] < sizes[:, None]) & (groups[:, None] >= 0)
        key = groups[:, None] * (int(tokens.max(initial=0)) + 1) + tokens
        slots = np.full(tokens.shape, -1, dtype=np.int64)
        slots[mask] = np.unique(key[mask], return_inverse=True)[1]
        return cls(groups.astype(np.int64), slots, np.asarray(strength, dtype=np.float64))

    @property
    def num_groups(self) -> int:
        return int(self.strength.shape[0])

    @property
    def num_slots(self) -> int:
        return int(self.slots.max(initial=-1)) + 1

    def slot_group(self) -> np.ndarray:
        """int64 [num_slots], the group of each slot."""
        out = np.zeros(self.num_slots, dtype=np.int64)
        used = self.slots >= 0
        out[self.slots[used]] = np.broadcast_to(self.groups[:, None], self.slots.shape)[used]
        return out

    def pairs(self, states: np.ndarray) -> np.ndarray:
        """int64 [G, R]: sibling pairs on one token per group and read, sum_slots C(n_slot, 2),
        from states [B, R, K]."""
        reads = states.shape[1]
        used = self.slots >= 0
        b, i = np.nonzero(used)
        index = self.slots[b, i][:, None] * reads + np.arange(reads)[None, :]
        counts = np.bincount(index.ravel(), weights=states[b, :, i].ravel().astype(np.float64),
                             minlength=self.num_slots * reads).reshape(-1, reads)
        per_slot = counts * (counts - 1) / 2.0
        out = np.zeros((self.num_groups, reads))
        np.add.at(out, self.slot_group(), per_slot)
        return np.rint(out).astype(np.int64)

    def edges(self, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The coupled variable pairs (u, v, bias), variables labelled b * width + i: every pair
        of candidates of two sibling rows on one token, bias lambda_g."""
        b, i = np.nonzero(self.slots >= 0)
        slot = self.slots[b, i]
        order = np.argsort(slot, kind="stable")
        label, slot = (b * width + i)[order], slot[order]
        group = self.groups[b[order]]
        us, vs, gs = [], [], []
        for gap in range(1, int(np.bincount(slot).max(initial=1))):  # at most n - 1 gaps
            same = slot[gap:] == slot[:-gap]
            us.append(label[:-gap][same])
            vs.append(label[gap:][same])
            gs.append(group[gap:][same])
        if not us:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0)
        return (np.concatenate(us), np.concatenate(vs),
                self.strength[np.concatenate(gs)])

    def take(self, rows: np.ndarray) -> SiblingCoupling:
        """The coupling of a subset of rows made of whole groups, renumbered."""
        groups = self.groups[rows]
        kept, renumbered = np.unique(groups[groups >= 0], return_inverse=True)
        new = np.full(groups.shape, -1, dtype=np.int64)
        new[groups >= 0] = renumbered
        return SiblingCoupling(new, self.slots[rows], self.strength[kept])


@dataclass(frozen=True)
class OneHotProblems:
    """A batch of one-hot BQMs (see the module docstring).

    Attributes:
        weights: w [B, K] float64, -inf past sizes (the one-hot state i has energy -w_i).
        penalty: A [B] float64 > 0.
        sizes: K_b [B] int64, number of variables of each row.
        siblings: couplings between the rows of groups, or None (every row independent).
    """

    weights: np.ndarray
    penalty: np.ndarray
    sizes: np.ndarray
    siblings: SiblingCoupling | None = None

    @property
    def batch_size(self) -> int:
        return int(self.weights.shape[0])

    @property
    def width(self) -> int:
        return int(self.weights.shape[1])

    @property
    def linear(self) -> np.ndarray:
        """h [B, K] = -w - A on each row's variables, 0 past sizes."""
        mask = self.variable_mask
        return np.where(mask, -np.where(mask, self.weights, 0.0) - self.penalty[:, None], 0.0)

    @property
    def coupling(self) -> np.ndarray:
        """c [B] = 2A, the coupling of every pair of a row's variables."""
        return 2.0 * self.penalty

    @property
    def offset(self) -> np.ndarray:
        """offset [B] = A."""
        return self.penalty.copy()

    @property
    def variable_mask(self) -> np.ndarray:
        return np.arange(self.width)[None, :] < self.sizes[:, None]

    def dense_quadratic(self) -> np.ndarray:
        """J [B, K, K]: symmetric, zero diagonal, J_ij = c / 2 so that sum_{i<j} c x_i x_j =
        x^T J x; zero for variables past sizes."""
        mask = self.variable_mask
        pair = mask[:, :, None] & mask[:, None, :]
        pair &= ~np.eye(self.width, dtype=bool)[None]
        return np.where(pair, (self.coupling / 2.0)[:, None, None], 0.0)

    def energies(self, states: np.ndarray) -> np.ndarray:
        """E [B, R] of states [B, R, K] (binary; values past sizes must be 0)."""
        x = states.astype(np.float64)
        ones = x.sum(axis=2)
        return (
            np.einsum("brk,bk->br", x, self.linear)
            + self.coupling[:, None] * ones * (ones - 1) / 2.0
            + self.offset[:, None]
        )

    def to_bqm(self, row: int):
        """The dimod BQM of one row, variables labelled 0..K_b-1."""
        import dimod

        k = int(self.sizes[row])
        i, j = _upper_pairs(k)
        return dimod.BinaryQuadraticModel.from_numpy_vectors(
            self.linear[row, :k],
            (i, j, np.full(i.shape, self.coupling[row])),
            float(self.offset[row]),
            dimod.BINARY,
        )

    @property
    def union_labels(self) -> np.ndarray:
        """The variables of `union_bqm`, in its order: b * K + i for each row's i < K_b."""
        return np.flatnonzero(self.variable_mask.ravel())

    def union_bqm(self):
        """All rows as one BQM, variable (b, i) labelled b * K + i: the disjoint union of the
        rows, plus the sibling couplings where there are any."""
        import dimod

        mask = self.variable_mask
        position = np.cumsum(mask.ravel()).reshape(mask.shape) - 1
        rows_i, cols_j = _upper_pairs(self.width)
        pair_ok = cols_j[None, :] < self.sizes[:, None]  # i < j < K_b
        b, p = np.nonzero(pair_ok)
        us, vs, bias = position[b, rows_i[p]], position[b, cols_j[p]], self.coupling[b]
        if self.siblings is not None:
            u, v, strength = self.siblings.edges(self.width)
            flat = position.ravel()
            us, vs = np.concatenate([us, flat[u]]), np.concatenate([vs, flat[v]])
            bias = np.concatenate([bias, strength])
        return dimod.BinaryQuadraticModel.from_numpy_vectors(
            self.linear[mask], (us, vs, bias), float(self.offset.sum()), dimod.BINARY,
            variable_order=self.union_labels.tolist(),
        )

    def components(self) -> list[np.ndarray]:
        """The rows of each independent part: a group's rows together, every other row alone."""
        if self.siblings is None:
            return [np.array([row]) for row in range(self.batch_size)]
        groups = self.siblings.groups
        alone = [np.array([row]) for row in np.flatnonzero(groups < 0)]
        order = np.argsort(groups, kind="stable")
        order = order[groups[order] >= 0]
        cuts = np.flatnonzero(np.diff(groups[order])) + 1
        return alone + np.split(order, cuts) if order.size else alone

    def take(self, rows: np.ndarray) -> OneHotProblems:
        """The problems of ``rows`` (whole groups), couplings kept."""
        siblings = None if self.siblings is None else self.siblings.take(rows)
        return OneHotProblems(self.weights[rows], self.penalty[rows], self.sizes[rows], siblings)

    def split_union(self, samples: np.ndarray) -> np.ndarray:
        """Reads of every row, int8 [B, R, K] (0 past sizes), from reads [R, n] of `union_bqm`
        with columns in `union_labels` order."""
        reads = np.zeros((self.batch_size * self.width, samples.shape[0]), dtype=np.int8)
        reads[self.union_labels] = samples.T
        return np.ascontiguousarray(
            reads.reshape(self.batch_size, self.width, -1).transpose(0, 2, 1))
