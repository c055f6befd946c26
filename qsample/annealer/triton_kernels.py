"""Triton kernels of the batched annealer: one program per (problem, block of reads).

A program holds the states of its BLOCK_R chains as a [BLOCK_R, BLOCK_K] tile (and, for the
dense model, their local fields) on chip for the whole anneal; only the problem's weights (one
row) or couplings (one row per flip) are read from memory. With BLOCK_R = 1 this is one program
per (problem, read). Dynamics, random numbers and energy models follow `qsample.annealer.cpu`
(same chain keys, same draw indices); uniforms use the top 24 bits of a draw in float32, so the
two devices give different, equally distributed, samples.

With ``TRITON_INTERPRET=1`` set before triton is imported they run on CPU tensors in Triton's
interpreter, which is how the tests check this code without a GPU.
"""

import triton
import triton.language as tl

from .. import rng
from . import status

# SplitMix64 (`qsample.rng`) as compile-time constants
GOLDEN: tl.constexpr = int(rng.SPLITMIX_GOLDEN)
M1: tl.constexpr = int(rng.SPLITMIX_M1)
M2: tl.constexpr = int(rng.SPLITMIX_M2)
S1: tl.constexpr = int(rng.SPLITMIX_S1)
S2: tl.constexpr = int(rng.SPLITMIX_S2)
S3: tl.constexpr = int(rng.SPLITMIX_S3)
_UNIFORM_BITS = 24  # a float32 holds 24 random bits exactly: u takes the top 24 of a draw
UNIFORM_SHIFT: tl.constexpr = 64 - _UNIFORM_BITS
UNIFORM_SCALE: tl.constexpr = 1.0 / 2**_UNIFORM_BITS
STATE_SHIFT: tl.constexpr = 63  # a draw's top bit sets an initial spin
LOW_BITS: tl.constexpr = 32  # random order: spin (low 32 bits of a draw * k) >> 32
LOW_MASK: tl.constexpr = 2**32 - 1
EXP_CLAMP: tl.constexpr = 80.0  # float32 exp overflows above about 88.7
COMBINE_START: tl.constexpr = int(rng.COMBINE_START)
_DOUBLE_BITS = 53  # a float64 uniform (`rng.uniform`) takes the top 53 bits of a draw
DOUBLE_SHIFT: tl.constexpr = 64 - _DOUBLE_BITS
DOUBLE_SCALE: tl.constexpr = 1.0 / 2**_DOUBLE_BITS
STREAM_GUMBEL: tl.constexpr = rng.STREAM_GUMBEL
STREAM_FALLBACK: tl.constexpr = rng.STREAM_FALLBACK
STATUS_OK: tl.constexpr = status.OK
STATUS_NO_VALID_READ: tl.constexpr = status.NO_VALID_READ
STATUS_NAN: tl.constexpr = status.NAN
STATUS_EMPTY: tl.constexpr = status.EMPTY


@triton.jit
def _mix64(x):
    x = (x ^ (x >> S1)) * M1
    x = (x ^ (x >> S2)) * M2
    return x ^ (x >> S3)


@triton.jit
def _chains(key_ptr, b, reads):
    key = tl.load(key_ptr + b).to(tl.uint64, bitcast=True)
    return _mix64(key ^ _mix64((reads + 1).to(tl.uint64) * GOLDEN))


@triton.jit
def _initial_state(chain, cols, k):
    draws = _mix64(chain[:, None] + (cols[None, :] + 1).to(tl.uint64) * GOLDEN)
    return tl.where(cols[None, :] < k, (draws >> STATE_SHIFT).to(tl.int32), 0)


@triton.jit
def _accept(delta, beta, draw, GIBBS: tl.constexpr):
    x = (beta * delta).to(tl.float32)
    u = ((draw >> UNIFORM_SHIFT).to(tl.float32) + 0.5) * UNIFORM_SCALE
    if GIBBS:
        p = 1.0 / (1.0 + tl.exp(tl.minimum(x, EXP_CLAMP)))
    else:
        p = tl.exp(tl.minimum(-x, EXP_CLAMP))  # >= 1 when x <= 0: always taken
    return u < p


@triton.jit
def _spin(t, k, draw, RANDOM: tl.constexpr):
    if RANDOM:
        return (((draw & LOW_MASK) * k.to(tl.uint64)) >> LOW_BITS).to(tl.int32)
    return (draw * 0 + (t % k)).to(tl.int32)


@triton.jit
def _store(states_ptr, energy_ptr, x, energy, b, reads, cols, num_reads, width,
           KEEP_BEST: tl.constexpr):
    rmask = reads < num_reads
    if KEEP_BEST:
        best = tl.argmin(tl.where(rmask, energy, float("inf")), axis=0)
        pick = reads[:, None] == best
        row = tl.sum(tl.where(pick, x, 0), axis=0)
        tl.store(states_ptr + b * width + cols, row.to(tl.int8), mask=cols < width)
        tl.store(energy_ptr + b, tl.min(tl.where(rmask, energy, float("inf")), axis=0))
    else:
        offs = (b * num_reads + reads)[:, None] * width + cols[None, :]
        tl.store(states_ptr + offs, x.to(tl.int8), mask=rmask[:, None] & (cols[None, :] < width))
        tl.store(energy_ptr + b * num_reads + reads, energy, mask=rmask)


@triton.jit
def _anneal_onehot_tile(w, a, k, chain, cols, beta_ptr, num_sweeps, GIBBS: tl.constexpr,
                        RANDOM: tl.constexpr):
    """The one-hot anneal of one problem's chains: states x [BLOCK_R, BLOCK_K] and their counts
    n [BLOCK_R], from weights w [BLOCK_K] (0 past k), penalty a and betas at beta_ptr [S]."""
    x = _initial_state(chain, cols, k)
    n = tl.sum(x, axis=1)
    t = 0
    for s in range(num_sweeps):
        beta = tl.load(beta_ptr + s)
        for _ in range(k):
            draw = _mix64(chain + (k + 1 + t).to(tl.uint64) * GOLDEN)
            i = _spin(t, k, draw, RANDOM)
            sel = cols[None, :] == i[:, None]
            xi = tl.sum(tl.where(sel, x, 0), axis=1)
            wi = tl.sum(tl.where(sel, w[None, :], 0.0), axis=1)
            delta = tl.where(xi == 0, -wi + a * (2 * n - 1), wi - a * (2 * n - 3))
            take = _accept(delta, beta, draw, GIBBS)
            x = tl.where(sel & take[:, None], 1 - x, x)
            n = n + tl.where(take, 1 - 2 * xi, 0)
            t += 1
    return x, n


@triton.jit
def _onehot_energy(x, n, w, a):
    nf = (n - 1).to(w.dtype)
    return a * nf * nf - tl.sum(tl.where(x == 1, w[None, :], 0.0), axis=1)


@triton.jit
def anneal_onehot_kernel(w_ptr, penalty_ptr, size_ptr, key_ptr, beta_ptr, states_ptr, energy_ptr,
                         num_sweeps, num_reads, width,
                         GIBBS: tl.constexpr, RANDOM: tl.constexpr, KEEP_BEST: tl.constexpr,
                         BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """One-hot model E = -sum_i w_i x_i + A (n - 1)^2, O(1) energy change per flip."""
    b = tl.program_id(0)
    reads = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_K)
    k = tl.load(size_ptr + b)
    a = tl.load(penalty_ptr + b)
    w = tl.load(w_ptr + b * width + cols, mask=cols < k, other=0.0)
    chain = _chains(key_ptr, b, reads)
    x, n = _anneal_onehot_tile(w, a, k, chain, cols, beta_ptr + b * num_sweeps, num_sweeps,
                               GIBBS, RANDOM)
    energy = _onehot_energy(x, n, w, a)
    _store(states_ptr, energy_ptr, x, energy, b, reads, cols, num_reads, width, KEEP_BEST)


@triton.jit
def _uniform53(key, stream, index):
    """`qsample.rng.uniform`(key, stream, n)[index - 1] in float64 (53 bits), as the CPU."""
    base = _mix64(_mix64(COMBINE_START ^ (key + GOLDEN)) ^ (stream + GOLDEN))
    bits = _mix64(base + index.to(tl.uint64) * GOLDEN) >> DOUBLE_SHIFT
    return (bits.to(tl.float64) + 0.5) * DOUBLE_SCALE


@triton.jit
def sample_step_kernel(value_ptr, id_ptr, key_ptr, beta_ptr, out_i_ptr, out_f_ptr,
                       temperature, top_p, min_p, penalty, num_sweeps, num_reads, width,
                       PERTURB: tl.constexpr, KEEP_LOWEST: tl.constexpr, FILTER: tl.constexpr,
                       GIBBS: tl.constexpr, RANDOM: tl.constexpr,
                       BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """`qsample.annealer.step` for one row per program, all its reads in one tile: candidates
    from the top-k values, weights, the one-hot anneal, decoding and the fallback draw; the
    anneal in float32 (the CPU kernel's in float64), the noise and fallback uniforms at 53 bits
    as the CPU's."""
    b = tl.program_id(0)
    reads = tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_K)
    inside = cols < width
    key = tl.load(key_ptr + b).to(tl.uint64, bitcast=True)
    v = tl.load(value_ptr + b * width + cols, mask=inside, other=float("-inf")).to(tl.float32)
    first = tl.sum(tl.where(cols == 0, v, 0.0), axis=0)  # NaN stays NaN (max may drop it)
    nan_row = first != first
    posinf = first == float("inf")
    v = tl.where(v != v, float("-inf"), v)
    # a bad row's substitute (`qsample.candidates.BadRows`): its first largest value, NaN as -inf
    substitute = tl.min(tl.where(v == tl.max(v, axis=0), cols, BLOCK_K), axis=0)
    v = tl.where(posinf, tl.where(v == float("inf"), 0.0, float("-inf")), v)
    top = tl.where(posinf | (first == float("-inf")) | nan_row, 0.0, first)
    x = (v - top) / temperature
    keep = x > float("-inf")
    peak = tl.max(x, axis=0)
    e = tl.where(keep, tl.exp(x - peak), 0.0)
    p = e / tl.sum(e, axis=0)
    if FILTER:
        before = tl.cumsum(p, axis=0) - p
        keep = keep & (before < top_p) & (p >= min_p * tl.max(p, axis=0))
    size = tl.sum(keep.to(tl.int32), axis=0)
    x = tl.where(keep, x, float("-inf"))
    peak = tl.max(x, axis=0)
    e = tl.where(keep, tl.exp(x - peak), 0.0)
    p = e / tl.sum(e, axis=0)
    if PERTURB:
        u = _uniform53(key, STREAM_GUMBEL, cols + 1)
        perturbed = tl.where(keep, x.to(tl.float64) - tl.log(-tl.log(u)), float("-inf"))
        w = (perturbed - tl.max(perturbed, axis=0)).to(tl.float32)
    else:
        w = x - (peak + tl.log(tl.sum(e, axis=0)))
    w = tl.where(keep, w, 0.0)
    chain = _mix64(key ^ _mix64((reads + 1).to(tl.uint64) * GOLDEN))
    k = tl.maximum(size, 1)
    xs, n = _anneal_onehot_tile(w, penalty, k, chain, cols, beta_ptr, num_sweeps, GIBBS, RANDOM)
    energy = _onehot_energy(xs, n, w, penalty)
    valid = (n == 1) & (reads < num_reads)
    count = tl.sum(valid.to(tl.int32), axis=0)
    if KEEP_LOWEST:
        pick = tl.argmin(tl.where(valid, energy, float("inf")), axis=0)
    else:
        pick = tl.argmin(tl.where(valid, reads, BLOCK_R), axis=0)
    picked = reads[:, None] == pick
    read_choice = tl.sum(tl.sum(tl.where(picked & (xs == 1), cols[None, :], 0), axis=1), axis=0)
    kept_energy = tl.sum(tl.where(reads == pick, energy, 0.0), axis=0)
    # the fallback's exact draw (rng.categorical): the count of cdf <= u, at most the last
    # positive candidate
    uf = tl.sum(tl.where(cols == 0, _uniform53(key, STREAM_FALLBACK, cols + 1), 0.0), axis=0)
    drawn = tl.sum(((tl.cumsum(p, axis=0) <= uf) & keep).to(tl.int32), axis=0)
    drawn = tl.minimum(drawn, tl.max(tl.where(p > 0, cols, 0), axis=0))
    choice = tl.where(count > 0, read_choice, drawn)
    status = tl.where(nan_row, STATUS_NAN, tl.where(size == 0, STATUS_EMPTY, tl.where(
        count > 0, STATUS_OK, STATUS_NO_VALID_READ)))
    sampled = status <= STATUS_NO_VALID_READ
    token = tl.sum(tl.where(cols == tl.where(sampled, choice, substitute),
                            tl.load(id_ptr + b * width + cols, mask=inside, other=0), 0), axis=0)
    entropy = -tl.sum(tl.where(p > 0, p * tl.log(p), 0.0), axis=0)
    prob = tl.sum(tl.where(cols == choice, p, 0.0), axis=0)
    tl.store(out_i_ptr + b * 5 + 0, token)
    tl.store(out_i_ptr + b * 5 + 1, choice.to(tl.int64))
    tl.store(out_i_ptr + b * 5 + 2, tl.where(nan_row, 0, size).to(tl.int64))
    tl.store(out_i_ptr + b * 5 + 3, count.to(tl.int64))
    tl.store(out_i_ptr + b * 5 + 4, status.to(tl.int64))
    tl.store(out_f_ptr + b * 3 + 0, tl.where(sampled, prob, float("nan")))
    tl.store(out_f_ptr + b * 3 + 1, tl.where(sampled, entropy, float("nan")))
    tl.store(out_f_ptr + b * 3 + 2, tl.where(count > 0, kept_energy, float("nan")))


@triton.jit
def anneal_dense_kernel(h_ptr, j_ptr, offset_ptr, size_ptr, key_ptr, beta_ptr, states_ptr,
                        energy_ptr, num_sweeps, num_reads, width,
                        GIBBS: tl.constexpr, RANDOM: tl.constexpr, KEEP_BEST: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Dense model E = offset + sum_i h_i x_i + sum_{i != j} J_ij x_i x_j, local fields kept
    on chip, O(K) update per accepted flip."""
    b = tl.program_id(0)
    reads = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_K)
    k = tl.load(size_ptr + b)
    inside = cols < k
    h = tl.load(h_ptr + b * width + cols, mask=inside, other=0.0)
    base = j_ptr + b * width * width
    chain = _chains(key_ptr, b, reads)
    x = _initial_state(chain, cols, k)
    field = tl.zeros((BLOCK_R, BLOCK_K), dtype=h.dtype) + h[None, :]
    for j in range(k):
        xj = tl.sum(tl.where(cols[None, :] == j, x, 0), axis=1)
        row = tl.load(base + j * width + cols, mask=inside, other=0.0)
        field += 2.0 * xj[:, None].to(h.dtype) * row[None, :]
    t = 0
    for s in range(num_sweeps):
        beta = tl.load(beta_ptr + b * num_sweeps + s)
        for _ in range(k):
            draw = _mix64(chain + (k + 1 + t).to(tl.uint64) * GOLDEN)
            i = _spin(t, k, draw, RANDOM)
            sel = cols[None, :] == i[:, None]
            xi = tl.sum(tl.where(sel, x, 0), axis=1)
            fi = tl.sum(tl.where(sel, field, 0.0), axis=1)
            step = 1 - 2 * xi
            take = _accept(step.to(h.dtype) * fi, beta, draw, GIBBS)
            x = tl.where(sel & take[:, None], 1 - x, x)
            rows = tl.load(base + i[:, None] * width + cols[None, :], mask=inside[None, :],
                           other=0.0)
            change = tl.where(take, 2 * step, 0).to(h.dtype)
            field += change[:, None] * rows
            t += 1
    xf = x.to(h.dtype)
    energy = tl.load(offset_ptr + b) + tl.sum(xf * (field + h[None, :]), axis=1) * 0.5
    _store(states_ptr, energy_ptr, x, energy, b, reads, cols, num_reads, width, KEEP_BEST)
