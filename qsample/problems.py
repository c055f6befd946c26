"""`OneHotProblems`: the B binary quadratic models of one decoding step, as arrays.

Row b is a clique over its K_b candidates with one uniform coupling:

    E_b(x) = sum_i h[b, i] x_i + c[b] * sum_{i<j} x_i x_j + offset[b],   x in {0, 1}^K_b.

With h_i = -w_i - A, c = 2A and offset = A this is E(x) = -sum_i w_i x_i + A (sum_i x_i - 1)^2,
the one-hot model every mode builds (only w differs). Energies of many states are computed in
O(K) per state from the count of ones. Conversions to ``dimod.BinaryQuadraticModel`` (one row, or
the disjoint union of all rows, whose reads `split_union` splits back into rows) serve the dimod
backends.
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
class OneHotProblems:
    """A batch of one-hot BQMs (see the module docstring).

    Attributes:
        weights: w [B, K] float64, -inf past sizes (the one-hot state i has energy -w_i).
        penalty: A [B] float64 > 0.
        sizes: K_b [B] int64, number of variables of each row.
    """

    weights: np.ndarray
    penalty: np.ndarray
    sizes: np.ndarray

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
        """The disjoint union of all rows as one BQM; variable (b, i) is labelled b * K + i."""
        import dimod

        mask = self.variable_mask
        position = np.cumsum(mask.ravel()).reshape(mask.shape) - 1
        rows_i, cols_j = _upper_pairs(self.width)
        pair_ok = cols_j[None, :] < self.sizes[:, None]  # i < j < K_b
        b, p = np.nonzero(pair_ok)
        return dimod.BinaryQuadraticModel.from_numpy_vectors(
            self.linear[mask],
            (position[b, rows_i[p]], position[b, cols_j[p]], self.coupling[b]),
            float(self.offset.sum()),
            dimod.BINARY,
            variable_order=self.union_labels.tolist(),
        )

    def split_union(self, samples: np.ndarray) -> np.ndarray:
        """Reads of every row, int8 [B, R, K] (0 past sizes), from reads [R, n] of `union_bqm`
        with columns in `union_labels` order."""
        reads = np.zeros((self.batch_size * self.width, samples.shape[0]), dtype=np.int8)
        reads[self.union_labels] = samples.T
        return np.ascontiguousarray(
            reads.reshape(self.batch_size, self.width, -1).transpose(0, 2, 1))
