"""Counter-based random numbers: every draw is a pure function of (row key, stream, index).

A row's noise therefore does not depend on which other rows share its batch, and the same keys
give the same numbers on every run. The mixer is SplitMix64 (Steele, Lea & Flood 2014),
vectorised with numpy's wrapping uint64 arithmetic; its constants are defined here once, and the
annealer's numba and Triton kernels take theirs from these.
"""

from __future__ import annotations

import numpy as np

#: SplitMix64: the Weyl increment (2^64 / golden ratio) and the finaliser
#: x ^= x >> S1; x *= M1; x ^= x >> S2; x *= M2; x ^= x >> S3. numba freezes them into its cached
#: kernels (qsample/annealer/__pycache__), which a change here must clear.
SPLITMIX_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
SPLITMIX_M1 = np.uint64(0xBF58476D1CE4E5B9)
SPLITMIX_M2 = np.uint64(0x94D049BB133111EB)
SPLITMIX_S1, SPLITMIX_S2, SPLITMIX_S3 = np.uint64(30), np.uint64(27), np.uint64(31)

COMBINE_START = np.uint64(0x243F6A8885A308D3)  # hex digits of pi: the key before any part
_DOUBLE_BITS = 53  # a float64 holds 53 random bits exactly: the top 53 bits of a draw
_DOUBLE_SHIFT = np.uint64(64 - _DOUBLE_BITS)
BACKEND_SEED_BITS = 31  # dwave-samplers takes integer seeds in [0, 2^31)
_SEED31_SHIFT = np.uint64(64 - BACKEND_SEED_BITS)  # the top 31 bits of a key
_FRESH_SEED_LIMIT = 2**63  # fresh seeds fit a non-negative int64

#: Stream identifiers: independent sequences drawn from one row key.
STREAM_GUMBEL = 1
STREAM_FALLBACK = 2
STREAM_BACKEND_SEED = 3
STREAM_THERMAL = 4
STREAM_JOINT = 5  # the classical draw of a coupled group (qsample.coupling)
STREAM_PIT = 99  # the A/B harness's randomised PIT (qsample.evaluation)


def fresh_seed() -> int:
    """A seed in [0, 2^63) from the operating system's entropy (for ``seed=None``)."""
    return int(np.random.SeedSequence().entropy % _FRESH_SEED_LIMIT)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijection of uint64 with good avalanche."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> SPLITMIX_S1)) * SPLITMIX_M1
        x = (x ^ (x >> SPLITMIX_S2)) * SPLITMIX_M2
    return x ^ (x >> SPLITMIX_S3)


def combine(*parts: np.ndarray | int) -> np.ndarray:
    """Hash several integers (scalars or broadcastable arrays) into uint64 keys."""
    key = COMBINE_START
    with np.errstate(over="ignore"):
        for part in parts:
            value = np.asarray(part).astype(np.uint64)
            key = mix64(key ^ (value + SPLITMIX_GOLDEN))
    return np.asarray(key, dtype=np.uint64)


def row_keys(seed: int, call_index: int, batch: int) -> np.ndarray:
    """Keys [B] for the rows of one sampler call: hash(seed, call_index, row)."""
    return combine(seed, call_index, np.arange(batch, dtype=np.uint64))


def uniform(keys: np.ndarray, stream: int, count: int) -> np.ndarray:
    """U(0, 1) draws [B, count], open at both ends; element (b, j) depends only on
    (keys[b], stream, j)."""
    base = combine(keys, stream)
    with np.errstate(over="ignore"):
        counters = (base[:, None]
                    + (np.arange(1, count + 1, dtype=np.uint64) * SPLITMIX_GOLDEN)[None, :])
    bits = mix64(counters) >> _DOUBLE_SHIFT
    return (bits.astype(np.float64) + 0.5) * (1.0 / (1 << _DOUBLE_BITS))


def gumbel(keys: np.ndarray, count: int) -> np.ndarray:
    """Standard Gumbel(0, 1) draws [B, count]: g = -log(-log u)."""
    return -np.log(-np.log(uniform(keys, STREAM_GUMBEL, count)))


def seeds31(keys: np.ndarray, stream: int = STREAM_BACKEND_SEED) -> np.ndarray:
    """Per-row seeds in [0, 2^31) for backends that take an integer seed (dwave-samplers
    rejects seeds at or above 2^31 despite documenting 2^32)."""
    return (combine(keys, stream) >> _SEED31_SHIFT).astype(np.int64)


def categorical(keys: np.ndarray, probs: np.ndarray, stream: int = STREAM_FALLBACK) -> np.ndarray:
    """One index per row drawn from probs [B, K] (rows sum to 1) by inverse CDF."""
    u = uniform(keys, stream, 1)
    cdf = np.cumsum(probs, axis=1)
    last_positive = probs.shape[1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
    index = (cdf <= u).sum(axis=1)  # rounding can leave cdf[-1] < u: clip below
    return np.minimum(index, last_positive)
