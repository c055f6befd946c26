"""Measure how faithfully a sampler configuration draws from its target distribution.

`measure` samples many tokens from one logits row through `QuantumSampler` (rows of each batch
are independent draws with distinct keys) and compares the counts with the exact target
softmax(l / T) over the same candidate set: chi-square with merged bins and total variation.
Used by the statistical test suite, ``qsample fidelity`` and the examples.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..candidates import select_candidates
from ..config import SamplerConfig
from ..sampler import QuantumSampler
from .stats import FitResult, chi_square, counts_of

SHAPES = ("flat", "peaked")


def reference_logits(shape: str, k: int, vocab: int | None = None, seed: int = 0) -> torch.Tensor:
    """A logits row [V] whose top k values have a known shape, at shuffled token ids.

    flat: N(0, 0.5^2) logits (probabilities within a factor of about 5 of each other);
    peaked: Zipf with exponent 2, l_i = -2 log(i + 1) (p_max = 0.61 at K = 64).
    The other V - k tokens sit at -40, far below the candidates.
    """
    if shape == "flat":
        head = np.sort(np.random.default_rng(k).normal(0.0, 0.5, k))[::-1]
    elif shape == "peaked":
        head = -2.0 * np.log1p(np.arange(k))
    else:
        raise ValueError(f"shape={shape!r} is not allowed: expected one of {SHAPES}")
    vocab = vocab if vocab is not None else k + 24
    values = np.full(vocab, -40.0)
    ids = np.random.default_rng(seed + k).permutation(vocab)[:k]
    values[ids] = head
    return torch.tensor(values, dtype=torch.float32)


def candidate_ranks(candidate_ids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Rank of each token among its candidates (0 = most likely), -1 outside them.

    ``candidate_ids``: one row [K] shared by every token, or a row per token [N, K] (ids sorted
    by probability, -1 past the row's candidates); ``tokens``: [N].
    """
    match = np.asarray(candidate_ids) == np.asarray(tokens, dtype=np.int64)[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1), -1)


@dataclass
class FidelityResult:
    """Counts per candidate rank, the exact target, the fit and the sampler's summary.
    ``ranks`` holds every draw's candidate rank (0 = most likely), in order."""

    ranks: np.ndarray
    counts: np.ndarray
    target: np.ndarray
    fit: FitResult
    telemetry: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"draws": self.fit.draws, "chi2": self.fit.chi2, "dof": self.fit.dof,
                "p_value": self.fit.p_value, "tv": self.fit.tv, "seconds": self.seconds,
                "fallback_rate": self.telemetry["fallback_rate"],
                "valid_read_rate": self.telemetry["valid_read_rate"]}


def measure(config: SamplerConfig, logits: torch.Tensor, draws: int = 20_000,
            chunk: int = 1000, target_temperature: float | None = None) -> FidelityResult:
    """Draw ``draws`` tokens for the logits row [V] and test them against the target.

    The target is softmax(l / T) over the candidates of ``config`` at ``target_temperature``
    (default: the config's own temperature; a different value makes a negative control).
    """
    temperature = target_temperature if target_temperature is not None else config.temperature
    block = select_candidates(logits[None], temperature=temperature, top_k=config.top_k,
                              top_p=config.top_p, min_p=config.min_p)
    k = int(block.sizes[0])
    target = block.target_probs()[0, :k]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = QuantumSampler(config)
    batch = logits[None].expand(min(chunk, draws), -1)
    start = time.perf_counter()
    tokens = []
    for done in range(0, draws, batch.shape[0]):
        tokens.append(sampler.sample(batch[: min(batch.shape[0], draws - done)]).cpu().numpy())
    seconds = time.perf_counter() - start
    ranks = candidate_ranks(block.token_ids[0, :k], np.concatenate(tokens))
    if (ranks < 0).any():
        raise AssertionError("the sampler returned tokens outside the candidate set")
    counts = counts_of(ranks, k)
    return FidelityResult(ranks, counts, target, chi_square(counts, target),
                          sampler.telemetry.summary(), seconds)
