"""Counter-based random numbers: every draw is a pure function of (row key, stream, index).

A row's noise therefore does not depend on which other rows share its batch, and the same keys
give the same numbers on every run. The mixer is SplitMix64 (Steele, Lea & Flood 2014),
vectorised with numpy's wrapping uint64 arithmetic.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

#: Stream identifiers: independent sequences drawn from one row key.
STREAM_GUMBEL = 1
STREAM_FALLBACK = 2
STREAM_BACKEND_SEED = 3
STREAM_THERMAL = 4


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijection of uint64 with good avalanche."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def combine(*parts: np.ndarray | int) -> np.ndarray:
    """Hash several integers (scalars or broadcastable arrays) into uint64 keys."""
    key = np.uint64(0x243F6A8885A308D3)
    with np.errstate(over="ignore"):
        for part in parts:
            value = np.asarray(part).astype(np.uint64)
            key = mix64(key ^ (value + _GOLDEN))
    return np.asarray(key, dtype=np.uint64)


def row_keys(seed: int, call_index: int, batch: int) -> np.ndarray:
    """Keys [B] for the rows of one sampler call: hash(seed, call_index, row)."""
    return combine(seed, call_index, np.arange(batch, dtype=np.uint64))


def uniform(keys: np.ndarray, stream: int, count: int) -> np.ndarray:
    """U(0, 1) draws [B, count], open at both ends; element (b, j) depends only on
    (keys[b], stream, j)."""
    base = combine(keys, stream)
    with np.errstate(over="ignore"):
        counters = base[:, None] + (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    bits = mix64(counters) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) * (1.0 / (1 << 53))


def gumbel(keys: np.ndarray, count: int) -> np.ndarray:
    """Standard Gumbel(0, 1) draws [B, count]: g = -log(-log u)."""
    return -np.log(-np.log(uniform(keys, STREAM_GUMBEL, count)))


def seeds31(keys: np.ndarray, stream: int = STREAM_BACKEND_SEED) -> np.ndarray:
    """Per-row seeds in [0, 2^31) for backends that take an integer seed (dwave-samplers
    rejects seeds at or above 2^31 despite documenting 2^32)."""
    return (combine(keys, stream) >> np.uint64(33)).astype(np.int64)


def categorical(keys: np.ndarray, probs: np.ndarray, stream: int = STREAM_FALLBACK) -> np.ndarray:
    """One index per row drawn from probs [B, K] (rows sum to 1) by inverse CDF."""
    u = uniform(keys, stream, 1)
    cdf = np.cumsum(probs, axis=1)
    last_positive = probs.shape[1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
    index = (cdf <= u).sum(axis=1)  # rounding can leave cdf[-1] < u: clip below
    return np.minimum(index, last_positive)
