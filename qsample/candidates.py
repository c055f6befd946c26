"""Candidate selection: logits [B, V] -> the small block [B, K] the QUBO is built from.

All work runs with torch on the logits' device, batch-first, with no Python loop over rows or
the vocabulary, and ends in one device-to-host copy of the candidate block.

For each row, with x = (logits - max) / T (computed in float32; the shift leaves softmax as it is):

1. top-k: the k = min(top_k, V) largest x, sorted descending (one pass over V; the rest works on
   the [B, k] block);
2. rows holding +inf logits put all their mass, uniformly, on their +inf tokens among the top k;
3. top-p: keep the shortest prefix whose renormalised probability reaches top_p;
4. min-p: drop candidates with p_i < min_p * p_max;
5. -inf candidates are dropped, so K shrinks when fewer than top_k logits are finite.

Because candidates are sorted, the kept set of a row is always a prefix of length ``sizes[b]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import LogitsError

_MAX_EXACT_FLOAT32_ID = 1 << 24
ROWS_SHOWN = 20  # row indices an error message lists


@dataclass(frozen=True)
class CandidateBlock:
    """Host copy of a step's candidates.

    Attributes:
        logits: float64 [B, K] tempered logits (l_i - max_j l_j) / T, sorted descending, -inf
            past ``sizes``.
        token_ids: int64 [B, K] vocabulary ids of the candidates (-1 past ``sizes``).
        sizes: int64 [B] number of candidates kept per row (K_b >= 1).
    """

    logits: np.ndarray
    token_ids: np.ndarray
    sizes: np.ndarray

    @property
    def batch_size(self) -> int:
        return int(self.logits.shape[0])

    @property
    def width(self) -> int:
        return int(self.logits.shape[1])

    def take(self, rows: np.ndarray) -> CandidateBlock:
        """The block of ``rows`` (an index array; rows may repeat)."""
        return CandidateBlock(self.logits[rows], self.token_ids[rows], self.sizes[rows])

    def target_probs(self) -> np.ndarray:
        """p [B, K]: softmax of the tempered logits over each row's candidates (0 past sizes)."""
        shifted = self.logits - self.logits[:, :1]
        weights = np.exp(shifted)  # exp(-inf) = 0 past sizes
        return weights / weights.sum(axis=1, keepdims=True)


def check_logits(logits: torch.Tensor) -> None:
    """Raise `LogitsError` unless logits is a 2-D floating tensor [B, V] with V >= 1."""
    if not isinstance(logits, torch.Tensor):
        raise LogitsError(
            f"logits must be a torch.Tensor [batch, vocab]; got {type(logits).__name__}")
    if logits.dim() != 2:
        hint = " (use logits.unsqueeze(0) for a single row)" if logits.dim() == 1 else ""
        raise LogitsError(
            f"logits must be 2-D [batch, vocab]; got shape {tuple(logits.shape)}{hint}"
        )
    if not logits.is_floating_point():
        raise LogitsError(f"logits must have a floating dtype; got {logits.dtype}")
    if logits.shape[1] == 0:
        raise LogitsError("logits have an empty vocabulary dimension (V = 0)")


def nan_rows_error(rows: np.ndarray) -> LogitsError:
    return LogitsError(f"logits contain NaN in rows {list_rows(rows)}")


def empty_rows_error(rows: np.ndarray) -> LogitsError:
    return LogitsError(f"logits rows {list_rows(rows)} have no finite value (all -inf): "
                       "nothing can be sampled")


def list_rows(rows: np.ndarray) -> str:
    """Row indices for an error message: the first `ROWS_SHOWN`, then the count."""
    rows = [int(r) for r in rows]
    shown = ", ".join(str(r) for r in rows[:ROWS_SHOWN])
    return f"[{shown}{', ...' if len(rows) > ROWS_SHOWN else ''}] ({len(rows)} rows)"


@dataclass(frozen=True)
class BadRows:
    """Rows whose logits leave nothing to sample (the pipeline's bad-logits policy,
    `qsample.pipeline`): a NaN logit (``nan``), or no finite logit (``empty``), bool [B] each.
    Such a row's substitute token is its largest non-NaN logit among the top-k (the first on
    ties, so the first top-k token where every one is NaN or -inf): `screen_candidates` here,
    the fused step kernels (`qsample.annealer.step`) on their own."""

    nan: np.ndarray
    empty: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.nan | self.empty

    def any(self) -> bool:
        return bool(self.nan.any() or self.empty.any())

    def error(self) -> LogitsError:
        """The `LogitsError` naming the rows: the NaN rows, else the empty ones."""
        if self.nan.any():
            return nan_rows_error(np.flatnonzero(self.nan))
        return empty_rows_error(np.flatnonzero(self.empty))


def select_candidates(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int,
    top_p: float = 1.0,
    min_p: float = 0.0,
    min_keep: np.ndarray | None = None,
) -> CandidateBlock:
    """`screen_candidates`, raising for bad rows.

    Raises:
        LogitsError: NaN rows, or rows with no finite logit (all -inf), naming the rows.
    """
    block, bad = screen_candidates(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                   min_p=min_p, min_keep=min_keep)
    if bad.any():
        raise bad.error()
    return block


def screen_candidates(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int,
    top_p: float = 1.0,
    min_p: float = 0.0,
    min_keep: np.ndarray | None = None,
) -> tuple[CandidateBlock, BadRows]:
    """Filter and sort candidates on the logits' device, then copy the block to the host once;
    and the rows whose logits are bad (`BadRows`), each left with one candidate, its
    substitute token, at tempered logit 0.

    ``min_keep`` (int [B], optional): top-p and min-p leave row b at least min_keep[b] of its
    top-k finite candidates (as transformers' ``min_tokens_to_keep``; distinct siblings need
    one candidate each).
    """
    check_logits(logits)
    if temperature <= 0:
        raise ValueError("select_candidates needs temperature > 0 (0 is greedy, no candidates)")
    k = min(top_k, logits.shape[1])
    # The only pass over the vocabulary: tempering and shifting keep the order, and topk sorts
    # NaN first, then +inf, so every check below runs on the small [B, k] block.
    values, ids = torch.topk(logits, k, dim=1, sorted=True)
    values = values.float()
    nan_flag = torch.isnan(values[:, :1])
    posinf = torch.isposinf(values)
    values = torch.where(posinf[:, :1], torch.where(posinf, 0.0, float("-inf")), values)
    values = values.masked_fill(torch.isnan(values), float("-inf"))
    ranked = values  # unfiltered: a bad row's values as they were, NaN as -inf
    # subtract the row max before dividing by T: a tiny T then sends the others to -inf
    # instead of overflowing several tokens to +inf (softmax is shift-invariant)
    top = values[:, :1]
    values = (values - torch.where(torch.isfinite(top), top, 0.0)) / temperature
    keep = torch.isfinite(values)
    if top_p < 1.0 or min_p > 0.0:
        probs = torch.softmax(values, dim=1)  # -inf -> 0; an all -inf row gives NaN, caught below
        if top_p < 1.0:
            mass_before = torch.cumsum(probs, dim=1) - probs
            keep &= mass_before < top_p
        if min_p > 0.0:
            keep &= probs >= min_p * probs[:, :1]
        if min_keep is not None:
            floor = torch.as_tensor(min_keep, device=values.device)[:, None]
            rank = torch.arange(k, device=values.device)[None, :]
            keep |= (rank < floor) & torch.isfinite(values)
    values = values.masked_fill(~keep, float("-inf"))

    if logits.shape[1] < _MAX_EXACT_FLOAT32_ID:
        packed = torch.cat([values, ids.to(torch.float32), nan_flag.to(torch.float32)], dim=1)
        host = packed.cpu().numpy()  # the step's one device-to-host copy
        host_values, host_ids = host[:, :k], host[:, k : 2 * k].astype(np.int64)
        host_nan = host[:, 2 * k] > 0
    else:  # ids would not be exact in float32
        host_values = values.cpu().numpy()
        host_ids = ids.cpu().numpy()
        host_nan = nan_flag.cpu().numpy()[:, 0]

    host_values = host_values.astype(np.float64)
    sizes = np.isfinite(host_values).sum(axis=1)
    bad = BadRows(nan=host_nan.astype(bool), empty=(sizes == 0) & ~host_nan)
    if bad.any():  # one candidate: the substitute (`BadRows`), at logit 0
        rows = np.flatnonzero(bad.mask)
        # from their unfiltered values: a second, small copy, made only when a row is bad
        first_max = ranked[torch.from_numpy(rows).to(ranked.device)].argmax(dim=1)
        substitute = host_ids[rows, first_max.cpu().numpy()]
        host_values[rows] = -np.inf
        host_values[rows, 0] = 0.0
        host_ids[rows, 0] = substitute
        sizes[rows] = 1
    host_ids = np.where(np.isfinite(host_values), host_ids, -1)
    width = int(sizes.max())
    block = CandidateBlock(
        logits=np.ascontiguousarray(host_values[:, :width]),
        token_ids=np.ascontiguousarray(host_ids[:, :width]),
        sizes=sizes.astype(np.int64),
    )
    return block, bad
