"""Sibling groups: which rows of a step are coupled, and the classical draw of a coupled target.

A group is a set of sibling rows (the n sequences of one prompt). With coupling lambda the joint
target of a group's tokens is

    p(x_1..x_n) proportional to prod_r p_r(x_r) exp(-lambda * number of pairs r < r' with
    x_r = x_r'),

lambda = 0 independent rows, lambda = inf distinct tokens. Adapters number the groups (one
integer per row, -1 for a row coupled to none) and, with ``coupling_scope="prefix"``, keep only
siblings whose generated prefixes are identical (`split_by_prefix`, `prefix_ids`).

Siblings need not arrive together (a serving engine may start a request's children in
different steps). A `Continuation` says what the earlier siblings of a joint sample took:
the rows present are drawn from the coupled target *conditioned* on those tokens,

    p(x_present | x_earlier) proportional to prod_{r present} p_r(x_r) exp(-lambda * c(x_r))
        exp(-lambda * pairs among the present rows),

c(i) the number of earlier siblings on token i (`condition`: the tempered logits tilted by
-lambda c, taken tokens removed for lambda = inf). For gumbel + distinct the group's
perturbation is keyed by the joint sample's seed and by token id, so the rows present take the
largest perturbed candidates not yet taken: exactly the next draws of the one ordered sample
without replacement, whatever the arrival order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import rng
from .candidates import CandidateBlock
from .errors import ConfigError

#: Rounds of the rejection draw (`sample_joint`) before the sequential draw takes over, and
#: how many are drawn at once.
REJECTION_ROUNDS = 256
REJECTION_CHUNK = 32


@dataclass(frozen=True)
class Continuation:
    """Joint samples begun in earlier calls (module docstring): each row with a group >= 0
    belongs to the joint sample keyed by ``seeds[r]`` (the same for every row of one group,
    and a row alone in its group is still a member), in which earlier siblings took the
    tokens ``taken[r]``.

    Attributes:
        seeds: uint64 [B], the joint sample's seed (keys a gumbel group's shared perturbation).
        taken: int64 token ids per row, the ones its earlier siblings took (empty: none).
    """

    seeds: np.ndarray
    taken: tuple[np.ndarray, ...]

    @functools.cached_property
    def counts(self) -> np.ndarray:
        """int64 [B]: how many tokens each row's earlier siblings took."""
        return np.array([len(t) for t in self.taken], dtype=np.int64)


def check_groups(groups: Any, batch: int) -> np.ndarray:
    """``groups`` as int64 [B] (a sequence, array or tensor of integers >= -1)."""
    allowed = f"{batch} integers >= -1, one per row (-1: coupled to no row)"
    if isinstance(groups, torch.Tensor):
        groups = groups.detach().cpu().numpy()
    try:
        values = np.asarray(groups)
    except (TypeError, ValueError):
        raise ConfigError("groups", groups, allowed) from None
    if values.shape != (batch,) or (values.size and (values.dtype.kind not in "iu"
                                                      or values.min() < -1)):
        raise ConfigError("groups", groups, allowed)
    return values.astype(np.int64)


def number_groups(groups: np.ndarray, singles: bool = False) -> np.ndarray:
    """Groups renumbered 0..G-1 in order of first row; a group of one row becomes -1 (it has
    no sibling) unless ``singles`` (a row continuing a joint sample alone, `Continuation`)."""
    out = np.full(groups.shape, -1, dtype=np.int64)
    member = groups >= 0
    if not member.any():
        return out
    _, first, inverse, counts = np.unique(groups[member], return_index=True,
                                          return_inverse=True, return_counts=True)
    shared = np.flatnonzero(counts > (0 if singles else 1))
    order = shared[np.argsort(first[shared], kind="stable")]  # by first appearance
    number = np.full(counts.size, -1, dtype=np.int64)
    number[order] = np.arange(order.size)
    out[member] = number[inverse.reshape(-1)]
    return out


def split_by_prefix(groups: np.ndarray, prefixes: np.ndarray, singles: bool = False
                    ) -> np.ndarray:
    """Groups within which every row has the same prefix id (``prefixes`` int64 [B], equal
    exactly where the generated prefixes are), renumbered (`number_groups`)."""
    groups = np.asarray(groups, dtype=np.int64)
    prefixes = np.asarray(prefixes, dtype=np.int64)
    member = groups >= 0
    pairs = np.stack([groups, prefixes], axis=1)
    ids = np.unique(pairs, axis=0, return_inverse=True)[1].reshape(-1)
    return number_groups(np.where(member, ids, -1), singles)


def condition(block: CandidateBlock, taken: tuple[np.ndarray, ...], strength: float
              ) -> CandidateBlock:
    """The candidates of rows whose earlier siblings took the tokens ``taken[r]`` (module
    docstring): tempered logits tilted by -strength * c_i, c_i how often candidate i was
    taken, and re-sorted; for strength = inf the taken candidates are removed (the others keep
    their order). Rows with nothing taken are unchanged."""
    lengths = np.array([len(t) for t in taken], dtype=np.int64)
    if not lengths.any():
        return block
    owner = np.repeat(np.arange(block.batch_size), lengths)
    tokens = np.concatenate([np.asarray(t, dtype=np.int64) for t in taken])
    counts = np.zeros(block.logits.shape, dtype=np.int64)
    np.add.at(counts, owner, block.token_ids[owner] == tokens[:, None])
    counts[block.token_ids < 0] = 0
    if np.isinf(strength):
        keep = (counts == 0) & (block.token_ids >= 0)
        order = np.argsort(~keep, axis=1, kind="stable")
        inside = np.take_along_axis(keep, order, axis=1)
        logits = np.where(inside, np.take_along_axis(block.logits, order, axis=1), -np.inf)
        token_ids = np.where(inside, np.take_along_axis(block.token_ids, order, axis=1), -1)
        return CandidateBlock(logits, token_ids, keep.sum(axis=1).astype(np.int64))
    tilted = block.logits - strength * counts
    order = np.argsort(-tilted, axis=1, kind="stable")
    return CandidateBlock(np.take_along_axis(tilted, order, axis=1),
                          np.take_along_axis(block.token_ids, order, axis=1), block.sizes)


def prefix_ids(token_rows: torch.Tensor) -> np.ndarray:
    """int64 [B] ids equal exactly where rows of a 2-D token tensor are (e.g. ``input_ids``)."""
    return torch.unique(token_rows, dim=0, return_inverse=True)[1].cpu().numpy().astype(np.int64)


def sizes(groups: np.ndarray) -> np.ndarray:
    """int64 [B]: the size of each row's group (1 for rows in none)."""
    member = groups >= 0
    counts = np.bincount(groups[member], minlength=1)
    return np.where(member, counts[np.where(member, groups, 0)], 1)


def positions(groups: np.ndarray) -> np.ndarray:
    """int64 [B]: each row's index among its group's rows in row order (0 for rows in none)."""
    order = np.lexsort((np.arange(groups.size), groups))
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, groups.size]))
    out = np.empty(groups.size, dtype=np.int64)
    out[order] = np.arange(groups.size) - run_start
    return np.where(groups >= 0, out, 0)


def leaders(groups: np.ndarray) -> np.ndarray:
    """int64 [B]: the first row of each row's group (the row itself for rows in none)."""
    rows = np.arange(groups.size)
    first = np.full(max(int(groups.max(initial=-1)) + 1, 1), groups.size, dtype=np.int64)
    member = groups >= 0
    np.minimum.at(first, groups[member], rows[member])
    return np.where(member, first[np.where(member, groups, 0)], rows)


def token_pairs(groups: np.ndarray, tokens: np.ndarray, num_groups: int) -> np.ndarray:
    """int64 [G, C]: sibling pairs on one token per group, given each row's token in each of C
    draws, tokens [B, C] ([B]: one draw, result [G])."""
    one = tokens.ndim == 1
    tokens = tokens[:, None] if one else tokens
    member = np.flatnonzero(groups >= 0)
    draws = tokens.shape[1]
    cell = groups[member][:, None] * draws + np.arange(draws)[None, :]  # (group, draw)
    key = cell * (int(tokens.max(initial=0)) + 1) + tokens[member]
    found, counts = np.unique(key.ravel(), return_counts=True)
    out = np.zeros(num_groups * draws, dtype=np.int64)
    np.add.at(out, found // (int(tokens.max(initial=0)) + 1), counts * (counts - 1) // 2)
    out = out.reshape(num_groups, draws)
    return out[:, 0] if one else out


def in_order(choice: np.ndarray, weights: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Reassign each group's chosen candidates so that its rows, in row order, hold them in
    decreasing weight (the rows of a group share one candidate list): a Gumbel-top-k set
    becomes the ordered sample without replacement."""
    member = np.flatnonzero(groups >= 0)
    value = weights[member, choice[member]]
    by_weight = member[np.lexsort((-value, groups[member]))]
    by_row = member[np.lexsort((member, groups[member]))]
    out = choice.copy()
    out[by_row] = choice[by_weight]
    return out


def sample_distinct(probs: np.ndarray, counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Exact draws of ``counts[g]`` distinct candidates from p = probs[g] with
    P(S) proportional to prod_{i in S} p_i (conditional Poisson sampling: n identical rows
    conditioned on distinct tokens), in uniformly random order: int64 [G, max n], -1 past n.

    Candidate i is taken, with m still to take, with probability p_i e_{m-1}(p_{>i}) / e_m(p_{>=i}),
    e_m the elementary symmetric polynomials of the candidates from i on (computed backwards on
    p / max p, so no product underflows before the ratio is taken)."""
    groups, width = probs.shape
    most = int(counts.max(initial=0))
    scaled = probs / probs.max(axis=1, keepdims=True)
    sym = np.zeros((groups, width + 1, most + 1))  # sym[:, j, m] = e_m(scaled[:, j:])
    sym[:, width, 0] = 1.0
    for j in range(width - 1, -1, -1):
        sym[:, j, 0] = 1.0
        sym[:, j, 1:] = sym[:, j + 1, 1:] + scaled[:, j, None] * sym[:, j + 1, :-1]
    u = rng.uniform(keys, rng.STREAM_JOINT, 2 * width)  # inclusion draws, then the order
    left = counts.astype(np.int64).copy()
    taken = np.zeros((groups, width), dtype=bool)
    rows = np.arange(groups)
    for j in range(width):
        active = left > 0
        m = np.where(active, left, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            chance = scaled[:, j] * sym[rows, j + 1, m - 1] / sym[rows, j, m]
        take = active & (u[:, j] < chance)
        taken[:, j] = take
        left -= take
    order = np.argsort(np.where(taken, u[:, width:], np.inf), axis=1)[:, :most]
    return np.where(np.arange(most)[None, :] < counts[:, None], order, -1)


def sample_joint(probs: np.ndarray, tokens: np.ndarray, groups: np.ndarray, coupling: float,
                 keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate index per row [B] drawn classically from the coupled target (module
    docstring), and bool [B], True on the rows of groups drawn by the sequential fallback.

    Groups of identical rows with lambda = inf: `sample_distinct`, exact. Otherwise exact by
    rejection: round t draws every row from its p_r with key (key_r, t) and keeps a
    group's draw with probability exp(-lambda * pairs), the group's uniform keyed by its first
    row; a group takes its first kept round (rounds run `REJECTION_CHUNK` at a time). A group
    still pending after `REJECTION_ROUNDS` rounds (very peaked or very strongly coupled) is
    drawn row by row, row j from p_j(i) exp(-lambda * earlier siblings on i): exact for
    lambda = 0, an approximation otherwise, flagged in the second return value.
    """
    batch = probs.shape[0]
    num_groups = int(groups.max(initial=-1)) + 1
    choice = rng.categorical(keys, probs)
    pending = np.ones(num_groups, dtype=bool)
    member = groups >= 0
    group_of = np.where(member, groups, 0)
    first_rows = np.flatnonzero(member)[np.unique(groups[member], return_index=True)[1]]
    if np.isinf(coupling):  # identical rows: conditional Poisson sampling, exact and direct
        lead = leaders(groups)
        same = (tokens == tokens[lead]).all(axis=1) & (probs == probs[lead]).all(axis=1)
        identical = np.ones(num_groups, dtype=bool)
        np.logical_and.at(identical, groups[member], same[member])
        direct = np.flatnonzero(identical)
        drawn = sample_distinct(probs[first_rows[direct]], np.bincount(groups[member])[direct],
                                keys[first_rows[direct]])
        rows = member & identical[group_of]
        slot = np.full(num_groups, -1)
        slot[direct] = np.arange(direct.size)
        choice[rows] = drawn[slot[group_of[rows]], positions(groups)[rows]]
        pending &= ~identical
    for start in range(0, REJECTION_ROUNDS, REJECTION_CHUNK):
        if not pending.any():
            break
        rounds = np.arange(start, start + REJECTION_CHUNK, dtype=np.uint64)
        round_keys = rng.combine(keys[:, None], rounds[None, :])  # [B, C]
        picks = rng.categorical(round_keys.ravel(), np.repeat(probs, rounds.size, axis=0)
                                ).reshape(batch, rounds.size)
        picked = np.take_along_axis(tokens, picks, axis=1)
        pairs = token_pairs(groups, picked, num_groups)
        with np.errstate(invalid="ignore"):
            accept = np.where(pairs == 0, 1.0, np.exp(-coupling * pairs))
        u = rng.uniform(round_keys[first_rows].ravel(), rng.STREAM_JOINT, 1
                        ).reshape(num_groups, rounds.size)
        taken = (u < accept) & pending[:, None]
        done = taken.any(axis=1)
        first = np.argmax(taken, axis=1)
        rows = member & done[group_of]
        choice[rows] = picks[rows, first[group_of[rows]]]
        pending &= ~done
    sequential = member & pending[group_of]
    for group in np.flatnonzero(pending):
        used: dict[int, int] = {}
        for row in np.flatnonzero(groups == group):
            counts = np.array([used.get(int(t), 0) for t in tokens[row]], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                factor = np.where(counts == 0, 1.0, np.exp(-coupling * counts))
            weights = probs[row] * factor
            if weights.sum() == 0:  # every candidate taken: the row's own distribution
                weights = probs[row]
            pick = rng.categorical(keys[row : row + 1], (weights / weights.sum())[None],
                                   rng.STREAM_JOINT)[0]
            choice[row] = pick
            token = int(tokens[row, pick])
            used[token] = used.get(token, 0) + 1
    return choice, sequential
