"""CPU kernels of the batched annealer, compiled with numba.

No Python loop over rows, reads, sweeps or spins: threads run over problems (one-hot model) or
over all B * R chains (dense model). Conventions (`qsample.annealer.triton_kernels` follows the
same dynamics with its own draw layout):

- state x in {0, 1}^K; sweep s makes K_b flip attempts at inverse temperature betas[b, s];
- a flip with energy change d is taken with probability min(1, exp(-beta d)) (Metropolis) or
  1 / (1 + exp(beta d)) (Gibbs), decided as u < ratio with u uniform on (0, 1) at 32-bit
  resolution (probabilities below 2^-33 round to 0);
- random numbers are counter-based: chain (b, r) has key mix64(key_b ^ mix64((r + 1) G)) and
  its j-th 64-bit draw is mix64(chain + j G) (SplitMix64, the mixer of `qsample.rng`; G the
  golden-ratio increment). Draws 1..K set the initial state (top bit); attempt t = s K_b + step
  uses draw K + 1 + t: high 32 bits for u, low 32 bits for the spin in random order
  ((low * K_b) >> 32; sequential order tries spin ``step``).

Two energy models:

- one-hot (structured): E(x) = -sum_i w_i x_i + A (n - 1)^2 with n = sum_i x_i, so flipping x_i
  costs d = -w_i + A (2n - 1) (0 -> 1) or w_i - A (2n - 3) (1 -> 0): O(1) per flip;
- dense: E(x) = offset + sum_i h_i x_i + sum_{i != j} J_ij x_i x_j with J symmetric, zero
  diagonal; a field f_i = h_i + 2 sum_j J_ij x_j gives d = (1 - 2 x_i) f_i, and an accepted flip
  updates f in O(K).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..rng import SPLITMIX_GOLDEN, SPLITMIX_M1, SPLITMIX_M2, SPLITMIX_S1, SPLITMIX_S2, SPLITMIX_S3


def _shield_llvmlite_from_introspection() -> None:
    """llvmlite's library object answers *any* attribute with a C-function wrapper, "__dict__"
    included, so code that scans module globals with ``vars()`` (vLLM's CPU kernel-override scan,
    run whenever a CPU engine starts) crashes once numba is loaded. Give it an empty __dict__."""
    try:
        from llvmlite.binding import ffi
    except ImportError:  # pragma: no cover - numba always brings llvmlite
        return
    table = getattr(ffi.lib, "_fntab", None)
    if isinstance(table, dict):
        table.setdefault("__dict__", {})


_shield_llvmlite_from_introspection()

_S32, _S63 = np.uint64(32), np.uint64(63)  # the high half of a draw; its top bit
_LOW32 = np.uint64(0xFFFFFFFF)
_INV32 = 1.0 / 2**32
EXP_LIMIT = 700.0  # exp(x) overflows float64 above about 709.8


@njit(inline="always", cache=True)
def _mix64(x):
    x = (x ^ (x >> SPLITMIX_S1)) * SPLITMIX_M1
    x = (x ^ (x >> SPLITMIX_S2)) * SPLITMIX_M2
    return x ^ (x >> SPLITMIX_S3)


@njit(inline="always", cache=True)
def _draw(chain, j):
    return _mix64(chain + np.uint64(j) * SPLITMIX_GOLDEN)


@njit(inline="always", cache=True)
def _chain(key, read):
    return _mix64(key ^ _mix64(np.uint64(read + 1) * SPLITMIX_GOLDEN))


@njit(inline="always", cache=True)
def _uniform(half):
    """u in (0, 1) from 32 random bits."""
    return (np.int64(half) + 0.5) * _INV32


@njit(inline="always", cache=True)
def _take(ratio, u, gibbs):
    """Accept a flip whose Boltzmann ratio exp(-beta d) is ``ratio``."""
    if gibbs:
        return u * (1.0 + ratio) < ratio
    return u < ratio  # ratio >= 1 (d <= 0) is always taken


@njit(inline="always", cache=True)
def _take_exact(delta, beta, u, gibbs):
    """`_take` from the energy change itself (no overflow for any beta d)."""
    x = beta * delta
    if gibbs:
        return x < EXP_LIMIT and u * (1.0 + math.exp(x)) < 1.0
    return x <= 0.0 or u < math.exp(-x)


@njit(inline="always", cache=True)
def _spin(bits, k, step, random_order):
    """The spin of an attempt: ``step`` in sequential order, else (low 32 bits * k) >> 32."""
    if random_order:
        return np.int64(((bits & _LOW32) * np.uint64(k)) >> _S32)
    return step


@njit(inline="always", cache=True)
def _sweep_tables(weights, k, a, beta, up, down, grow, shrink):
    """A sweep's acceptance tables at inverse temperature beta: up[i] = exp(beta w_i),
    down[i] = 1 / up[i], grow[n] = exp(-beta A (2n - 1)) and shrink[n] = 1 / grow[n - 1]
    (n = 0..k+1), by recurrence: k + 2 exponentials, not 3k."""
    for i in range(k):
        up[i] = math.exp(beta * weights[i])
        down[i] = 1.0 / up[i]
    factor = math.exp(-2.0 * beta * a)
    g = math.exp(beta * a)
    for m in range(k + 2):
        grow[m] = g
        shrink[m] = 1.0 / grow[m - 1] if m > 0 else 0.0
        g *= factor


@njit(inline="always", cache=True)
def anneal_onehot_row(weights, a, k, key, betas, num_reads, gibbs, random_order, table_limit,
                      xs, energies):
    """One one-hot problem: weights float64 [>= k], penalty ``a``, size ``k``, key uint64, betas
    float64 [S]; writes states int8 xs [R, >= k] (0 past k) and energies float64 [R].

    Its reads advance attempt by attempt together (independent chains overlap in the CPU) and
    take their acceptance ratios exp(-beta d) = exp(beta w_i) exp(-beta A (2n - 1)) (0 -> 1) or
    exp(-beta w_i) exp(beta A (2n - 3)) (1 -> 0) from per-sweep tables (K + 2 exponentials)
    shared by all reads: no exponential per attempt. When beta (|w| + A (2K + 1)) reaches
    ``table_limit`` (`EXP_LIMIT`: a float64 exponential could overflow) the sweep computes
    exp(-beta d) per attempt instead.
    """
    chains = np.empty(num_reads, dtype=np.uint64)
    counts = np.zeros(num_reads, dtype=np.int64)
    for r in range(num_reads):
        chains[r] = _chain(key, r)
        for i in range(k):
            bit = np.int8(_draw(chains[r], i + 1) >> _S63)
            xs[r, i] = bit
            counts[r] += bit
        for i in range(k, xs.shape[1]):
            xs[r, i] = 0
    up = np.empty(k)  # exp(beta w_i)
    down = np.empty(k)  # exp(-beta w_i)
    grow = np.empty(k + 2)  # exp(-beta A (2n - 1)), n = 0..k+1
    shrink = np.zeros(k + 2)  # 1 / grow[n - 1] = exp(beta A (2n - 3)), n = 1..k+1
    top = 0.0
    for i in range(k):
        top = max(top, abs(weights[i]))
    for s in range(betas.shape[0]):
        beta = betas[s]
        tabled = beta * (top + a * (2 * k + 1)) < table_limit
        if tabled:
            _sweep_tables(weights, k, a, beta, up, down, grow, shrink)
        if tabled:  # the common case, kept free of branches inside the attempt loop
            for step in range(k):
                t = k + 1 + s * k + step
                for r in range(num_reads):  # accept/reject is unpredictable: no branches
                    bits = _draw(chains[r], t)
                    i = _spin(bits, k, step, random_order)
                    old = xs[r, i]
                    n = counts[r]
                    ratio = down[i] * shrink[n] if old else up[i] * grow[n]
                    take = _take(ratio, _uniform(bits >> _S32), gibbs)
                    xs[r, i] = old ^ np.int8(take)
                    counts[r] = n + np.int64(take) * (1 - 2 * np.int64(old))
        else:
            for step in range(k):
                t = k + 1 + s * k + step
                for r in range(num_reads):
                    bits = _draw(chains[r], t)
                    i = _spin(bits, k, step, random_order)
                    old = xs[r, i]
                    n = counts[r]
                    delta = weights[i] - a * (2 * n - 3) if old else a * (2 * n - 1) - weights[i]
                    take = _take_exact(delta, beta, _uniform(bits >> _S32), gibbs)
                    xs[r, i] = old ^ np.int8(take)
                    counts[r] = n + np.int64(take) * (1 - 2 * np.int64(old))
    for r in range(num_reads):
        n = counts[r]
        e = a * (n - 1) * (n - 1)
        for i in range(k):
            if xs[r, i]:
                e -= weights[i]
        energies[r] = e


@njit(inline="always", cache=True)
def _onehot_body(weights, penalty, sizes, keys, betas, num_reads, gibbs, random_order,
                 table_limit, states, energies):
    """One-hot model. weights float64 [B, K], penalty float64 [B], sizes int64 [B], keys uint64
    [B], betas float64 [B, S]; writes states int8 [B, R, K] and energies float64 [B, R].
    Threads run over problems (`anneal_onehot_row`)."""
    for b in prange(weights.shape[0]):
        anneal_onehot_row(weights[b], penalty[b], sizes[b], keys[b], betas[b], num_reads, gibbs,
                          random_order, table_limit, states[b], energies[b])


@njit(parallel=True, cache=True)
def anneal_dense(linear, quadratic, offset, sizes, keys, betas, num_reads, gibbs, random_order,
                 states, energies):
    """Dense model. linear float64 [B, K], quadratic float64 [B, K, K] (symmetric, zero
    diagonal), offset float64 [B], sizes int64 [B], keys uint64 [B], betas float64 [B, S]; writes
    states int8 [B, R, K] and energies float64 [B, R]."""
    batch, width = linear.shape
    for c in prange(batch * num_reads):
        b = c // num_reads
        r = c % num_reads
        k = sizes[b]
        chain = _chain(keys[b], r)
        x = states[b, r]
        for i in range(width):
            x[i] = np.int8(_draw(chain, i + 1) >> _S63) if i < k else 0
        field = np.empty(k)
        for i in range(k):
            f = linear[b, i]
            for j in range(k):
                if x[j]:
                    f += 2.0 * quadratic[b, i, j]
            field[i] = f
        for s in range(betas.shape[1]):
            beta = betas[b, s]
            for step in range(k):
                bits = _draw(chain, k + 1 + s * k + step)
                i = _spin(bits, k, step, random_order)
                change = 1 - 2 * x[i]  # +1 for 0 -> 1, -1 for 1 -> 0
                if _take_exact(change * field[i], beta, _uniform(bits >> _S32), gibbs):
                    x[i] += change
                    for j in range(k):  # J is symmetric: read row i, not column i
                        field[j] += 2.0 * change * quadratic[b, i, j]
        e = offset[b]
        for i in range(k):
            if x[i]:
                e += linear[b, i]
                for j in range(k):
                    if x[j]:
                        e += quadratic[b, i, j]
        energies[b, r] = e


@njit(parallel=True, cache=True)
def anneal_sparse(linear, starts, indptr, indices, data, offset, keys, betas, num_reads, gibbs,
                  random_order, states, energies):
    """Sparse model, the dense model's dynamics and draws on compressed rows: problem b's
    variables are positions starts[b] .. starts[b + 1] - 1 of linear float64 [N]; the couplings
    of variable v are data[p] (J_vu, both directions, columns sorted) for u = indices[p],
    p in indptr[v] .. indptr[v + 1] - 1 (global positions); offset float64 [B], keys uint64
    [B], betas float64 [B, S]; writes states int8 [R, N] and energies float64 [B, R]. Sums run
    in the dense kernel's order, so both give the same reads on the same problem."""
    batch = keys.shape[0]
    for c in prange(batch * num_reads):
        b = c // num_reads
        r = c % num_reads
        lo = starts[b]
        k = starts[b + 1] - lo
        chain = _chain(keys[b], r)
        x = states[r, lo:lo + k]
        for i in range(k):
            x[i] = np.int8(_draw(chain, i + 1) >> _S63)
        field = np.empty(k)
        for i in range(k):
            f = linear[lo + i]
            for p in range(indptr[lo + i], indptr[lo + i + 1]):
                if x[indices[p] - lo]:
                    f += 2.0 * data[p]
            field[i] = f
        for s in range(betas.shape[1]):
            beta = betas[b, s]
            for step in range(k):
                bits = _draw(chain, k + 1 + s * k + step)
                i = _spin(bits, k, step, random_order)
                change = 1 - 2 * x[i]
                if _take_exact(change * field[i], beta, _uniform(bits >> _S32), gibbs):
                    x[i] += change
                    for p in range(indptr[lo + i], indptr[lo + i + 1]):
                        field[indices[p] - lo] += 2.0 * change * data[p]
        e = offset[b]
        for i in range(k):
            if x[i]:
                e += linear[lo + i]
                for p in range(indptr[lo + i], indptr[lo + i + 1]):
                    if x[indices[p] - lo]:
                        e += data[p]
        energies[b, r] = e


@njit(parallel=True, cache=True)
def anneal_coupled(weights, penalty, sizes, keys, betas, num_reads, gibbs, random_order,
                   members, starts, slots, strength, table_limit, occupancy, states, energies):
    """One-hot rows coupled in groups: E(x) = sum_b E_b(x_b) + sum_g lambda_g sum_slots
    C(n_slot, 2), n_slot the rows of group g on one token (`qsample.problems.SiblingCoupling`).

    Arrays as `_onehot_body`, plus: members int64 [B], the rows ordered part by part (a group's
    rows together, every other row alone); starts int64 [P + 1], part p's rows are
    members[starts[p]:starts[p + 1]]; slots int64 [B, K], candidate (b, i)'s slot (-1: none);
    strength float64 [P], lambda of each part (0 for a lone row); occupancy int64
    [num_slots, R] zeros, the rows on each slot per read (scratch).

    Threads run over parts; a part's reads advance together. Each row keeps its chains,
    draws and attempt order of `_onehot_body` (a lone row is annealed exactly as there); a flip
    of x_bi also pays lambda per sibling on its slot: d = -w_i + A (2n - 1) + lambda o
    (0 -> 1) or w_i - A (2n - 3) - lambda o (1 -> 0), o the siblings on the slot other than b.
    Acceptance ratios come from per-sweep tables, coupling factors exp(-+beta lambda o) for
    o = 0..n included, exactly as `_onehot_body` (per-attempt exponentials past
    ``table_limit``).
    """
    for p in prange(starts.shape[0] - 1):
        lo = starts[p]
        size = starts[p + 1] - lo
        lam = strength[p]
        width = states.shape[2]
        chains = np.empty((size, num_reads), dtype=np.uint64)
        counts = np.zeros((size, num_reads), dtype=np.int64)
        for m in range(size):
            b = members[lo + m]
            k = sizes[b]
            for r in range(num_reads):
                chains[m, r] = _chain(keys[b], r)
                for i in range(k):
                    bit = np.int8(_draw(chains[m, r], i + 1) >> _S63)
                    states[b, r, i] = bit
                    counts[m, r] += bit
                    if slots[b, i] >= 0:
                        occupancy[slots[b, i], r] += bit
                for i in range(k, width):
                    states[b, r, i] = 0
        up = np.empty(width)
        down = np.empty(width)
        grow = np.empty(width + 2)
        shrink = np.zeros(width + 2)
        join = np.empty(size + 1)  # exp(-beta lambda o): 0 -> 1 next to o siblings
        leave = np.empty(size + 1)  # exp(beta lambda (o - 1)) = 1 / join[o - 1]: 1 -> 0
        for s in range(betas.shape[1]):
            for m in range(size):
                b = members[lo + m]
                k = sizes[b]
                a = penalty[b]
                beta = betas[b, s]
                top = 0.0
                for i in range(k):
                    top = max(top, abs(weights[b, i]))
                tabled = beta * (top + a * (2 * k + 1) + lam * size) < table_limit
                if tabled:
                    _sweep_tables(weights[b], k, a, beta, up, down, grow, shrink)
                    step_factor = math.exp(-beta * lam)
                    j = 1.0
                    for o in range(size + 1):
                        join[o] = j
                        leave[o] = 1.0 / join[o - 1] if o > 0 else 0.0
                        j *= step_factor
                for step in range(k):
                    t = k + 1 + s * k + step
                    for r in range(num_reads):
                        bits = _draw(chains[m, r], t)
                        i = _spin(bits, k, step, random_order)
                        old = states[b, r, i]
                        n = counts[m, r]
                        slot = slots[b, i]
                        o = occupancy[slot, r] - old if slot >= 0 else 0
                        u = _uniform(bits >> _S32)
                        if tabled:
                            if old:
                                ratio = down[i] * shrink[n] * leave[o + 1]
                            else:
                                ratio = up[i] * grow[n] * join[o]
                            take = _take(ratio, u, gibbs)
                        else:
                            if old:
                                delta = weights[b, i] - a * (2 * n - 3) - lam * o
                            else:
                                delta = a * (2 * n - 1) - weights[b, i] + lam * o
                            take = _take_exact(delta, beta, u, gibbs)
                        if take:
                            change = 1 - 2 * np.int64(old)
                            states[b, r, i] = old ^ np.int8(1)
                            counts[m, r] = n + change
                            if slot >= 0:
                                occupancy[slot, r] += change
        for m in range(size):
            b = members[lo + m]
            for r in range(num_reads):
                n = counts[m, r]
                e = penalty[b] * (n - 1) * (n - 1)
                for i in range(sizes[b]):
                    if states[b, r, i]:
                        e -= weights[b, i]
                energies[b, r] = e


# One compiled kernel per (acceptance, order), the flags inlined as constants (a flag tested
# inside the attempt loop costs about a third of the kernel's time).
@njit(parallel=True, cache=True)
def _onehot_metropolis_sequential(weights, penalty, sizes, keys, betas, num_reads, table_limit,
                                  states, energies):
    _onehot_body(weights, penalty, sizes, keys, betas, num_reads, False, False,
                 table_limit, states, energies)


@njit(parallel=True, cache=True)
def _onehot_metropolis_random(weights, penalty, sizes, keys, betas, num_reads, table_limit,
                              states, energies):
    _onehot_body(weights, penalty, sizes, keys, betas, num_reads, False, True,
                 table_limit, states, energies)


@njit(parallel=True, cache=True)
def _onehot_gibbs_sequential(weights, penalty, sizes, keys, betas, num_reads, table_limit,
                             states, energies):
    _onehot_body(weights, penalty, sizes, keys, betas, num_reads, True, False,
                 table_limit, states, energies)


@njit(parallel=True, cache=True)
def _onehot_gibbs_random(weights, penalty, sizes, keys, betas, num_reads, table_limit,
                         states, energies):
    _onehot_body(weights, penalty, sizes, keys, betas, num_reads, True, True,
                 table_limit, states, energies)


ONEHOT_KERNELS = {
    (False, False): _onehot_metropolis_sequential,
    (False, True): _onehot_metropolis_random,
    (True, False): _onehot_gibbs_sequential,
    (True, True): _onehot_gibbs_random,
}


def anneal_onehot(weights, penalty, sizes, keys, betas, num_reads, gibbs, random_order, states,
                  energies, table_limit: float = EXP_LIMIT) -> None:
    """Runs the one-hot kernel specialised for (gibbs, random_order)."""
    ONEHOT_KERNELS[bool(gibbs), bool(random_order)](weights, penalty, sizes, keys, betas,
                                                     num_reads, table_limit, states, energies)


@njit(parallel=True, cache=True)
def best_reads(states, energies, out_states, out_energies):
    """The lowest-energy read of each problem (first on ties): out [B, 1, K] and [B, 1]."""
    for b in prange(states.shape[0]):
        best = 0
        for r in range(1, states.shape[1]):
            if energies[b, r] < energies[b, best]:
                best = r
        out_states[b, 0] = states[b, best]
        out_energies[b, 0] = energies[b, best]

