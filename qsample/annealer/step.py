"""A whole sampling step in one kernel call: top-k logits -> token, for uncoupled one-hot steps.

The specification of a step is the numpy code of the staged path (`qsample.pipeline.StagedStep`:
`qsample.candidates.select_candidates`, the mode's weights in `qsample.modes`, the anneal, the
decoding and the fallback draw of `qsample.pipeline.FallbackComposite`). This module and
`triton_kernels.sample_step_kernel` are compiled forms of it for one row per thread or program,
so a step costs the top-k, one kernel call and a few allocations instead of ~0.4 ms of numpy
stages at B = 1; tests/test_fused_step.py holds the numba kernel to the staged path row by row
(tokens, ranks, statuses, probabilities) and tests/test_annealer_triton.py the Triton kernel.
What a kernel reads of the mode is data (`KernelMode`), not a copy of the mode table.

Per row, in the specification's order: candidates (+inf rows, tempering in float32, top-p,
min-p, -inf dropped); weights (``perturb``: x + Gumbel noise of the row key's
`rng.STREAM_GUMBEL` uniforms, shifted to max 0; else log softmax(x)); the anneal
(`cpu.anneal_onehot_row`, the one-hot kernel's own row, with the row key); decoding (a read is
valid when one-hot; ``keep_lowest`` keeps the lowest-energy valid read, else the first); no
valid read: status `STATUS_NO_VALID_READ` and the exact draw by inverse CDF with the row key's
`rng.STREAM_FALLBACK` uniform (`rng.categorical`). Rows with NaN or no finite logit are returned
with status `STATUS_NAN` / `STATUS_EMPTY` and their substitute token
(`qsample.candidates.BadRows`): what the policy does with them is the pipeline's
(`qsample.pipeline`).

The integer work (keys, counters, draws) is bit-identical to numpy; numpy's vectorised log and
exp may differ from the kernel's libm ones in the last bit, so a token differs only where two
candidates' perturbed weights tie to within rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

from .. import rng
from . import status
from .cpu import EXP_LIMIT, _mix64, anneal_onehot_row
from .gpu import device_betas, launch_step

STATUS_OK, STATUS_NO_VALID_READ = status.OK, status.NO_VALID_READ
STATUS_NAN, STATUS_EMPTY = status.NAN, status.EMPTY
_GOLDEN = rng.SPLITMIX_GOLDEN
_STREAM_GUMBEL = np.uint64(rng.STREAM_GUMBEL)
_STREAM_FALLBACK = np.uint64(rng.STREAM_FALLBACK)
_S53 = np.uint64(64 - 53)  # a float64 uniform takes the top 53 bits of a draw
_INV53 = 1.0 / 2**53
# int columns of `_step_body`'s output
_TOKEN, _RANK, _SIZE, _VALID, _STATUS = range(5)
# float columns
_PROB, _ENTROPY, _ENERGY = range(3)


@dataclass(frozen=True)
class KernelMode:
    """What the fused kernels read of a mode (`qsample.modes.Mode.kernel`), as data.

    Attributes:
        perturb: weights w = x + g - max(x + g), g the row key's Gumbel noise
            (`rng.STREAM_GUMBEL`); else w = log softmax(x).
        keep_lowest: keep the lowest-energy valid read; else the first valid read.
    """

    perturb: bool
    keep_lowest: bool


@dataclass(frozen=True)
class StepOutput:
    """One step's rows (numpy arrays [B], or tensors on the logits' device).

    Attributes:
        token: chosen vocabulary id (where ``status`` is `STATUS_NAN` or `STATUS_EMPTY`, the
            row's substitute token, `qsample.candidates.BadRows`).
        rank: the chosen candidate's index (0 = most likely).
        size: candidates kept (K_b).
        valid: valid (one-hot) reads.
        status: a ``STATUS_*`` code.
        target_prob: p of the chosen candidate.
        entropy: of the candidate distribution, in nats.
        energy: the kept read's energy (NaN where no read was kept).
    """

    token: Any
    rank: Any
    size: Any
    valid: Any
    status: Any
    target_prob: Any
    entropy: Any
    energy: Any
    raw: tuple[Any, Any]  # the kernel's int [B, 5] and float [B, 3] outputs, viewed above

    @classmethod
    def of(cls, out_i: Any, out_f: Any) -> StepOutput:
        """The columns of a step kernel's int [B, 5] and float [B, 3] outputs."""
        return cls(token=out_i[:, _TOKEN], rank=out_i[:, _RANK], size=out_i[:, _SIZE],
                   valid=out_i[:, _VALID], status=out_i[:, _STATUS],
                   target_prob=out_f[:, _PROB], entropy=out_f[:, _ENTROPY],
                   energy=out_f[:, _ENERGY], raw=(out_i, out_f))


@njit(inline="always", cache=True)
def _uniform53(key, stream, index):
    """`rng.uniform`(key, stream, n)[index - 1]: u in (0, 1) at 53 bits."""
    base = _mix64(_mix64(rng.COMBINE_START ^ (key + _GOLDEN)) ^ (stream + _GOLDEN))
    bits = _mix64(base + np.uint64(index) * _GOLDEN) >> _S53
    return (np.float64(bits) + 0.5) * _INV53


@njit(inline="always", cache=True)
def _candidates(v, temperature, top_p, min_p, x):
    """Tempered candidates x (float64, -inf past the size) of one row of top-k values v; the
    size (0: no finite value). Arithmetic in float32, as `select_candidates`."""
    k = v.shape[0]
    first = v[0]
    posinf = first == np.inf
    top = np.float32(0.0) if posinf or not np.isfinite(first) else first
    xs = np.empty(k, dtype=np.float32)
    size = 0
    for i in range(k):
        vi = v[i]
        if posinf:
            vi = np.float32(0.0) if vi == np.inf else np.float32(-np.inf)
        elif np.isnan(vi):
            vi = np.float32(-np.inf)
        xs[i] = (vi - top) / temperature
        if np.isfinite(xs[i]):
            size = i + 1  # finite values come first: sorted descending
    if size and (top_p < 1.0 or min_p > 0.0):
        total = np.float32(0.0)
        peak = xs[0]
        for i in range(size):
            total += np.exp(xs[i] - peak)
        mass = 0.0  # torch's CPU cumsum accumulates float32 in double
        first_p = np.float32(np.exp(xs[0] - peak) / total)
        kept = 0
        for i in range(size):
            p = np.float32(np.exp(xs[i] - peak) / total)
            mass += p
            if np.float32(np.float32(mass) - p) >= top_p or p < min_p * first_p:
                break
            kept = i + 1
        size = kept
    for i in range(k):
        x[i] = np.float64(xs[i]) if i < size else -np.inf
    return size


@njit(inline="always", cache=True)
def _substitute(v):
    """The index of a bad row's substitute token (`qsample.candidates.BadRows`): its largest
    value, NaN counting as -inf, the first on ties (0 where every value is NaN or -inf)."""
    best = 0
    top = -np.inf if np.isnan(v[0]) else v[0]
    for i in range(1, v.shape[0]):
        if v[i] > top:  # False for NaN
            best = i
            top = v[i]
    return best


@njit(inline="always", cache=True)
def _step_row(v, ids, key, temperature, top_p, min_p, perturb, keep_lowest, penalty, betas,
              num_reads, gibbs, random_order, xs, energies, out_i, out_f):
    """One row: candidates, weights, anneal, decoding (module docstring)."""
    k = v.shape[0]
    out_i[_TOKEN] = -1
    out_i[_RANK] = 0
    out_i[_VALID] = 0
    out_f[_PROB] = np.nan
    out_f[_ENTROPY] = np.nan
    out_f[_ENERGY] = np.nan
    if np.isnan(v[0]):
        out_i[_SIZE] = 0
        out_i[_STATUS] = STATUS_NAN
        out_i[_TOKEN] = ids[_substitute(v)]
        return
    x = np.empty(k)
    size = _candidates(v, temperature, top_p, min_p, x)
    out_i[_SIZE] = size
    if size == 0:
        out_i[_STATUS] = STATUS_EMPTY
        out_i[_TOKEN] = ids[_substitute(v)]
        return
    # e_i = exp(x_i - x_0) and their sum: the boltzmann weights, the target p (telemetry and the
    # fallback's draw)
    e = np.empty(size)
    total = 0.0
    for i in range(size):
        e[i] = math.exp(x[i] - x[0])
        total += e[i]
    w = np.empty(size)
    if perturb:
        peak = -np.inf
        for i in range(size):
            w[i] = x[i] - math.log(-math.log(_uniform53(key, _STREAM_GUMBEL, i + 1)))
            peak = max(peak, w[i])
        for i in range(size):
            w[i] -= peak
    else:
        shift = x[0] + math.log(total)
        for i in range(size):
            w[i] = x[i] - shift
    anneal_onehot_row(w, penalty, size, key, betas, num_reads, gibbs, random_order, EXP_LIMIT,
                      xs, energies)
    pick = -1
    valid = 0
    for r in range(num_reads):
        ones = 0
        for i in range(size):
            ones += xs[r, i]
        if ones == 1:
            valid += 1
            if pick < 0 or (keep_lowest and energies[r] < energies[pick]):
                pick = r
    out_i[_VALID] = valid
    if pick >= 0:
        choice = 0
        for i in range(size):
            if xs[pick, i]:
                choice = i
        out_i[_STATUS] = STATUS_OK
        out_f[_ENERGY] = energies[pick]
    else:  # rng.categorical: the count of cdf <= u, at most the last positive candidate
        u = _uniform53(key, _STREAM_FALLBACK, 1)
        cdf = 0.0
        choice = 0
        last = 0
        for i in range(size):
            p = e[i] / total
            cdf += p
            if cdf <= u:
                choice += 1
            if p > 0:
                last = i
        choice = min(choice, last)
        out_i[_STATUS] = STATUS_NO_VALID_READ
    entropy = 0.0
    for i in range(size):
        p = e[i] / total
        if p > 0:
            entropy -= p * math.log(p)
    out_i[_RANK] = choice
    out_i[_TOKEN] = ids[choice]
    out_f[_PROB] = e[choice] / total
    out_f[_ENTROPY] = entropy


@njit(inline="always", cache=True)
def _step_body(values, ids, keys, temperature, top_p, min_p, perturb, keep_lowest, penalty,
               betas, num_reads, gibbs, random_order, states, energies, out_i, out_f):
    for b in prange(values.shape[0]):
        _step_row(values[b], ids[b], keys[b], temperature, top_p, min_p, perturb, keep_lowest,
                  penalty, betas, num_reads, gibbs, random_order, states[b], energies[b],
                  out_i[b], out_f[b])


# One compiled kernel per (acceptance, order), as `cpu.ONEHOT_KERNELS`.
@njit(parallel=True, cache=True)
def _step_metropolis_sequential(values, ids, keys, temperature, top_p, min_p, perturb, keep_lowest,
                                penalty, betas, num_reads, states, energies, out_i, out_f):
    _step_body(values, ids, keys, temperature, top_p, min_p, perturb, keep_lowest, penalty,
               betas, num_reads, False, False, states, energies, out_i, out_f)


@njit(parallel=True, cache=True)
def _step_metropolis_random(values, ids, keys, temperature, top_p, min_p, perturb, keep_lowest,
                            penalty, betas, num_reads, states, energies, out_i, out_f):
    _step_body(values, ids, keys, temperature, top_p, min_p, perturb, keep_lowest, penalty,
               betas, num_reads, False, True, states, energies, out_i, out_f)


@njit(parallel=True, cache=True)
def _step_gibbs_sequential(values, ids, keys, temperature, top_p, min_p, perturb, keep_lowest,
                           penalty, betas, num_reads, states, energies, out_i, out_f):
    _step_body(values, ids, keys, temperature, top_p, min_p, perturb, keep_lowest, penalty,
               betas, num_reads, True, False, states, energies, out_i, out_f)


@njit(parallel=True, cache=True)
def _step_gibbs_random(values, ids, keys, temperature, top_p, min_p, perturb, keep_lowest, penalty,
                       betas, num_reads, states, energies, out_i, out_f):
    _step_body(values, ids, keys, temperature, top_p, min_p, perturb, keep_lowest, penalty,
               betas, num_reads, True, True, states, energies, out_i, out_f)


STEP_KERNELS = {
    (False, False): _step_metropolis_sequential,
    (False, True): _step_metropolis_random,
    (True, False): _step_gibbs_sequential,
    (True, True): _step_gibbs_random,
}


def sample_step(values: Any, ids: Any, keys: Any, *, temperature: float, top_p: float,
                min_p: float, mode: KernelMode, penalty: float, betas: np.ndarray,
                num_reads: int, acceptance: str, order: str) -> StepOutput:
    """One fused step (module docstring): numpy arrays on the CPU kernel, torch tensors on the
    Triton kernel (CUDA, or Triton's interpreter on CPU tensors for tests), whose outputs stay
    on the device with no host synchronisation.

    Args:
        values: float32 [B, k] top-k logits per row, sorted descending (torch.topk's).
        ids: int64 [B, k] their vocabulary ids.
        keys: uint64 [B] row keys (numpy), or their bits as int64 [B] on the tensors' device.
        temperature, top_p, min_p: the candidate filters (temperature > 0).
        mode: the mode's `KernelMode` (`qsample.modes.Mode.kernel`).
        penalty: the one-hot penalty A > 0.
        betas: float64 [S] inverse temperature per sweep.
        num_reads, acceptance, order: the anneal's (`anneal_onehot`).
    """
    gibbs, random_order = acceptance == "gibbs", order == "random"
    if not isinstance(values, np.ndarray):
        return StepOutput.of(*launch_step(
            values, ids, keys, device_betas(betas, values.device), temperature=temperature,
            top_p=top_p, min_p=min_p, perturb=mode.perturb, keep_lowest=mode.keep_lowest,
            penalty=penalty, num_reads=num_reads, gibbs=gibbs, random_order=random_order))
    batch, k = values.shape
    states = np.empty((batch, num_reads, k), dtype=np.int8)
    energies = np.empty((batch, num_reads))
    out_i = np.empty((batch, 5), dtype=np.int64)
    out_f = np.empty((batch, 3))
    STEP_KERNELS[gibbs, random_order](
        values, ids, keys, np.float32(temperature), np.float32(top_p), np.float32(min_p),
        mode.perturb, mode.keep_lowest, float(penalty), betas, num_reads, states, energies,
        out_i, out_f)
    return StepOutput.of(out_i, out_f)
