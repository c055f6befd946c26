"""The batched annealer's entry points: many dense BQMs (or one-hot problems) in one call.

Inputs are numpy arrays or torch tensors. numpy and CPU tensors run the numba kernels
(`qsample.annealer.cpu`); CUDA tensors run the Triton kernels (`qsample.annealer.triton_kernels`)
and never leave their device; ``engine="triton"`` with CPU tensors runs the Triton kernels under
Triton's interpreter (slow; for tests). Results come back in the inputs' kind and device.

Example:
    >>> import numpy as np
    >>> from qsample.annealer import anneal_dense, beta_schedule
    >>> h = np.random.default_rng(0).normal(size=(256, 16))          # 256 problems, K = 16
    >>> J = np.zeros((256, 16, 16))
    >>> out = anneal_dense(h, J, num_reads=10, betas=beta_schedule(100, "geometric", (0.1, 10)),
    ...                    seed=1, keep_best=True)
    >>> out.states.shape, out.energies.shape
    ((256, 1, 16), (256, 1))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import rng
from ..errors import ConfigError

ACCEPTANCE = ("metropolis", "gibbs")
ORDERS = ("sequential", "random")
SCHEDULES = ("geometric", "linear", "fixed")
ENGINES = ("auto", "numba", "triton")
RAMP_CACHE_SIZE = 256  # distinct (sweeps, schedule, range) ramps kept


@functools.lru_cache(maxsize=RAMP_CACHE_SIZE)
def ramp(num_sweeps: int, schedule: str, hot: float, cold: float) -> np.ndarray:
    """``num_sweeps`` betas from ``hot`` to ``cold``, geometric or linear; cached, read-only."""
    betas = (np.geomspace if schedule == "geometric" else np.linspace)(hot, cold, num_sweeps)
    betas.setflags(write=False)  # shared between calls
    return betas


def beta_schedule(num_sweeps: int, schedule: str | Any = "geometric",
                  beta_range: tuple[float, float] | None = None, beta: float | None = None
                  ) -> np.ndarray:
    """Inverse temperatures, one per sweep, float64 [num_sweeps].

    ``geometric``: beta_s = b0 (b1 / b0)^(s / (S - 1)) over ``beta_range`` = (b0, b1), as
    dwave-neal; ``linear``: b0 + (b1 - b0) s / (S - 1); ``fixed``: beta_s = ``beta`` (thermal
    sampling at one temperature); an array: used as given (its length sets S).
    """
    if not isinstance(schedule, str):
        betas = np.asarray(schedule, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0 or not np.isfinite(betas).all() or (betas < 0).any():
            raise ConfigError("beta_schedule", schedule,
                              "a non-empty 1-D array of finite inverse temperatures >= 0")
        return betas
    if schedule not in SCHEDULES:
        raise ConfigError("beta_schedule", schedule,
                          "one of " + ", ".join(map(repr, SCHEDULES)) + " or an array")
    if not isinstance(num_sweeps, (int, np.integer)) or num_sweeps < 1:
        raise ConfigError("num_sweeps", num_sweeps, "an integer >= 1")
    if schedule == "fixed":
        if beta is None or not np.isfinite(beta) or beta < 0:
            raise ConfigError("beta", beta, "a finite inverse temperature >= 0")
        return np.full(num_sweeps, float(beta))
    if beta_range is None or len(beta_range) != 2:
        raise ConfigError("beta_range", beta_range, "(hot, cold) with 0 < hot <= cold")
    hot, cold = map(float, beta_range)
    if not (0 < hot <= cold < np.inf):
        raise ConfigError("beta_range", beta_range, "(hot, cold) with 0 < hot <= cold")
    return ramp(int(num_sweeps), schedule, hot, cold)


@dataclass
class AnnealResult:
    """Reads of a batch.

    Attributes:
        states: int8 [B, R, K] binary states (R = 1 with ``keep_best``); 0 past each size.
        energies: [B, R] energies of the states.
    """

    states: Any
    energies: Any


def problem_keys(seed: int | None, batch: int) -> np.ndarray:
    """uint64 [B] keys hash(seed, b): problem b's reads depend only on (seed, b, read)."""
    if seed is None:
        seed = rng.fresh_seed()
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError("seed", seed, "a non-negative integer or None")
    return rng.combine(seed, np.arange(batch, dtype=np.uint64))


def anneal_onehot(weights: Any, penalty: Any, sizes: Any = None, *, betas: Any,
                  num_reads: int = 1, acceptance: str = "metropolis", order: str = "sequential",
                  keys: Any = None, seed: int | None = None, keep_best: bool = False,
                  engine: str = "auto") -> AnnealResult:
    """Anneal B one-hot problems E_b(x) = -sum_i w_bi x_i + A_b (sum_i x_i - 1)^2.

    Args:
        weights: w [B, K] float; entries past ``sizes`` are ignored.
        penalty: A [B] (or a scalar) > 0.
        sizes: K_b [B] int (default: K for every row).
        betas: inverse temperature per sweep, [S] for all problems or [B, S] (`beta_schedule`).
        num_reads: independent chains per problem.
        acceptance: ``"metropolis"`` or ``"gibbs"``.
        order: ``"sequential"`` (spins 0..K_b-1 each sweep) or ``"random"`` (K_b uniform picks).
        keys: uint64 [B] per-problem random keys (qsample passes its row keys); else from seed.
        seed: used when ``keys`` is None (`problem_keys`).
        keep_best: return only the lowest-energy read of each problem.
        engine: ``"auto"``, ``"numba"`` (CPU) or ``"triton"``.
    """
    return _run("onehot", {"weights": weights, "penalty": penalty}, sizes, betas, num_reads,
                acceptance, order, keys, seed, keep_best, engine)


def anneal_coupled(weights: Any, penalty: Any, sizes: Any = None, *, groups: Any, slots: Any,
                   strength: Any, betas: Any, num_reads: int = 1,
                   acceptance: str = "metropolis", order: str = "sequential", keys: Any = None,
                   seed: int | None = None) -> AnnealResult:
    """Anneal one-hot problems whose rows are coupled in groups (CPU):

        E(x) = sum_b E_b(x_b) + sum_g lambda_g sum_{b<b' in g} sum_{i,j: slot(b,i) = slot(b',j)}
               x_bi x_b'j,

    E_b as `anneal_onehot`. The reads of a group are joint: read r of each of its rows comes
    from one chain of the whole group; a row in no group is annealed exactly as
    `anneal_onehot` would (same keys, same draws).

    Args:
        weights, penalty, sizes, betas, num_reads, acceptance, order, keys, seed: as
            `anneal_onehot`.
        groups: int [B], each row's group 0..G-1, or -1.
        slots: int [B, K], candidate (b, i)'s slot: rows of one group interact exactly where
            they share a slot (e.g. list the same token); -1 for none.
        strength: lambda_g >= 0 [G].
    """
    batch, width = _run_checks("weights", weights, num_reads, acceptance, order, "auto")
    if _is_torch(weights) and weights.is_cuda:
        raise ConfigError("engine", "triton", "CPU inputs: coupled problems run on the numba "
                          "kernel only")
    host = _host_arrays("onehot", {"weights": weights, "penalty": penalty}, sizes, batch, width)
    group = _kernel_array(np.asarray(groups), np.int64)
    slot = _kernel_array(np.asarray(slots), np.int64)
    lam = np.asarray(strength, dtype=np.float64)
    num_groups = int(group.max(initial=-1)) + 1
    if (group.shape != (batch,) or slot.shape != (batch, width) or lam.shape != (num_groups,)
            or (group < -1).any() or not np.isfinite(lam).all() or (lam < 0).any()):
        raise ConfigError("groups", "groups, slots, strength",
                          f"groups [{batch}] in -1..G-1, slots [{batch}, {width}], "
                          "strength [G] finite and >= 0")
    part = np.where(group >= 0, group, num_groups + np.arange(batch))  # lone rows: their own
    order_rows = np.argsort(part, kind="stable")
    part = part[order_rows]
    starts = np.r_[0, np.flatnonzero(np.diff(part)) + 1, batch].astype(np.int64)
    part_strength = np.r_[lam, np.zeros(batch)][part[starts[:-1]]]
    keys = problem_keys(seed, batch) if keys is None else _keys(keys, batch)
    states = np.empty((batch, num_reads, width), dtype=np.int8)
    energies = np.empty((batch, num_reads), dtype=np.float64)
    occupancy = np.zeros((int(slot.max(initial=-1)) + 1, num_reads), dtype=np.int64)
    from . import cpu

    cpu.anneal_coupled(host["weights"], host["penalty"], host["sizes"], keys,
                       _betas(betas, batch), num_reads, acceptance == "gibbs", order == "random",
                       _kernel_array(order_rows, np.int64), starts,
                       slot, _kernel_array(part_strength, np.float64), cpu.EXP_LIMIT,
                       occupancy, states, energies)
    if _is_torch(weights):
        import torch

        return AnnealResult(torch.from_numpy(states), torch.from_numpy(energies))
    return AnnealResult(states, energies)


def anneal_dense(linear: Any, quadratic: Any, offset: Any = None, sizes: Any = None, *,
                 betas: Any, num_reads: int = 1, acceptance: str = "metropolis",
                 order: str = "sequential", keys: Any = None, seed: int | None = None,
                 keep_best: bool = False, engine: str = "auto") -> AnnealResult:
    """Anneal B dense binary problems E_b(x) = c_b + sum_i h_bi x_i + sum_{i != j} J_bij x_i x_j.

    Args:
        linear: h [B, K].
        quadratic: J [B, K, K], symmetric with zero diagonal (a pair's bias is 2 J_ij).
        offset: c [B] (default 0).
        sizes: K_b [B] (default K); variables past a row's size stay 0.
        Other arguments as `anneal_onehot`.
    """
    return _run("dense", {"linear": linear, "quadratic": quadratic, "offset": offset}, sizes,
                betas, num_reads, acceptance, order, keys, seed, keep_best, engine)


def anneal_sparse(linear: Any, starts: Any, indptr: Any, indices: Any, data: Any,
                  offset: Any = None, *, betas: Any, num_reads: int = 1,
                  acceptance: str = "metropolis", order: str = "sequential", keys: Any = None,
                  seed: int | None = None) -> AnnealResult:
    """Anneal B sparse binary problems of any sizes, without padding, on CPU (numba):
    E_b(x) = c_b + sum_i h_i x_i + sum_{i != j} J_ij x_i x_j over problem b's variables.

    The dense model's dynamics and random draws on compressed rows: the same problem and keys
    give `anneal_dense`'s reads, at O(degree) instead of O(K) per accepted flip and O(nnz)
    memory instead of O(B K^2).

    Args:
        linear: h [N], every problem's variables back to back.
        starts: int [B + 1], problem b's variables are starts[b] .. starts[b + 1] - 1 (each
            problem at least one variable).
        indptr, indices, data: J in compressed sparse rows over the N variables: variable v's
            couplings are data[p] = J_vu for u = indices[p], p in indptr[v] .. indptr[v + 1] - 1,
            both directions (J symmetric), columns sorted, within v's problem.
        offset: c [B] (default 0).
        Other arguments as `anneal_dense` (``betas``: [S] or [B, S]).

    Returns:
        `AnnealResult` with states int8 [R, N] (read r of every problem in one row) and
        energies float64 [B, R].
    """
    from . import cpu

    linear = _kernel_array(np.asarray(linear), np.float64)
    starts = _kernel_array(np.asarray(starts), np.int64)
    batch = starts.shape[0] - 1
    if linear.ndim != 1 or batch < 1 or starts[0] != 0 or starts[-1] != linear.shape[0] or (
            np.diff(starts) < 1).any():
        raise ConfigError("starts", starts.tolist() if starts.size < 16 else starts.shape,
                          "B + 1 increasing offsets from 0 to len(linear), each problem at "
                          "least one variable")
    _run_checks("linear", linear[None], num_reads, acceptance, order, "numba")
    offset = np.zeros(batch) if offset is None else _kernel_array(
        np.broadcast_to(np.asarray(offset, np.float64), (batch,)), np.float64)
    keys = problem_keys(seed, batch) if keys is None else _keys(keys, batch)
    states = np.empty((num_reads, linear.shape[0]), dtype=np.int8)
    energies = np.empty((batch, num_reads), dtype=np.float64)
    cpu.anneal_sparse(linear, starts, _kernel_array(np.asarray(indptr), np.int64),
                      _kernel_array(np.asarray(indices), np.int64),
                      _kernel_array(np.asarray(data), np.float64), offset, keys,
                      _betas(betas, batch), num_reads, acceptance == "gibbs", order == "random",
                      states, energies)
    return AnnealResult(states, energies)


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch")


def _run_checks(first_name: str, first: Any, num_reads: Any, acceptance: str, order: str,
                engine: str) -> tuple[int, int]:
    """Check the arguments every entry point shares; (B, K) of the first array."""
    if acceptance not in ACCEPTANCE:
        raise ConfigError("acceptance", acceptance, "one of " + ", ".join(map(repr, ACCEPTANCE)))
    if order not in ORDERS:
        raise ConfigError("order", order, "one of " + ", ".join(map(repr, ORDERS)))
    if engine not in ENGINES:
        raise ConfigError("engine", engine, "one of " + ", ".join(map(repr, ENGINES)))
    if not isinstance(num_reads, (int, np.integer)) or num_reads < 1:
        raise ConfigError("num_reads", num_reads, "an integer >= 1")
    if len(first.shape) != 2:
        raise ConfigError(first_name, tuple(first.shape), "a [B, K] array")
    batch, width = int(first.shape[0]), int(first.shape[1])
    if width < 1:
        raise ConfigError(first_name, tuple(first.shape), "at least one variable per problem")
    return batch, width


def _run(model, arrays, sizes, betas, num_reads, acceptance, order, keys, seed, keep_best,
         engine) -> AnnealResult:
    first_name = next(iter(arrays))
    first = arrays[first_name]
    batch, width = _run_checks(first_name, first, num_reads, acceptance, order, engine)
    torch_in = _is_torch(first)
    cuda = torch_in and first.device.type == "cuda"
    use_triton = engine == "triton" or (engine == "auto" and cuda)
    if cuda and not use_triton:
        raise ConfigError("engine", engine, "'auto' or 'triton' for CUDA tensors")

    betas = _betas(betas, batch)
    host = _host_arrays(model, arrays, sizes, batch, width)
    keys = problem_keys(seed, batch) if keys is None else _keys(keys, batch)
    if use_triton:
        return _run_triton(model, arrays, host, sizes, keys, betas, num_reads, acceptance,
                           order, keep_best, first)
    states = np.empty((batch, num_reads, width), dtype=np.int8)
    energies = np.empty((batch, num_reads), dtype=np.float64)
    from . import cpu

    gibbs, random_order = acceptance == "gibbs", order == "random"
    if model == "onehot":
        cpu.anneal_onehot(host["weights"], host["penalty"], host["sizes"], keys, betas,
                          num_reads, gibbs, random_order, states, energies)
    else:
        cpu.anneal_dense(host["linear"], host["quadratic"], host["offset"], host["sizes"], keys,
                         betas, num_reads, gibbs, random_order, states, energies)
    if keep_best and num_reads > 1:
        best_states = np.empty((batch, 1, width), dtype=np.int8)
        best_energies = np.empty((batch, 1), dtype=np.float64)
        cpu.best_reads(states, energies, best_states, best_energies)
        states, energies = best_states, best_energies
    if torch_in:
        import torch

        return AnnealResult(torch.from_numpy(states), torch.from_numpy(energies))
    return AnnealResult(states, energies)


def _betas(betas: Any, batch: int) -> np.ndarray:
    """[B, S] float64: one schedule for all problems ([S]) or one per problem ([B, S])."""
    if isinstance(betas, str) or betas is None:
        raise ConfigError("betas", betas, "an array of inverse temperatures (beta_schedule(...))")
    a = np.asarray(betas, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] not in (1, batch) or a.shape[1] == 0:
        raise ConfigError("betas", a.shape, f"[S] or [{batch}, S] inverse temperatures")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ConfigError("betas", betas, "finite inverse temperatures >= 0")
    return _kernel_array(np.broadcast_to(a, (batch, a.shape[1])), np.float64)


def _kernel_array(a: np.ndarray, dtype: type) -> np.ndarray:
    """``a`` as a C-contiguous, writeable array of ``dtype`` (copied only when needed). numba
    compiles one kernel per array type, read-only and non-contiguous arrays included: canonical
    inputs keep every caller on the signatures `qsample.annealer.warmup` compiles."""
    return np.require(a, dtype=dtype, requirements=("C", "W"))


def _keys(keys: Any, batch: int) -> np.ndarray:
    if _is_torch(keys):
        keys = keys.detach().cpu().numpy()
    keys = np.asarray(keys)
    if keys.shape != (batch,) or keys.dtype.kind not in "iu":
        raise ConfigError("keys", keys, f"{batch} integer keys, one per problem")
    return keys.astype(np.uint64)


def _host_arrays(model: str, arrays: dict, sizes: Any, batch: int, width: int) -> dict:
    """Checked float64/int64 numpy views of the inputs. CUDA inputs are not copied to the host:
    only their shapes are checked (values such as penalty > 0 or a symmetric J are the caller's
    responsibility there)."""
    out: dict[str, np.ndarray] = {}
    first = next(iter(arrays.values()))
    cuda = _is_torch(first) and first.is_cuda
    if sizes is None or (cuda and _is_torch(sizes) and sizes.is_cuda):
        out["sizes"] = np.full(batch, width, dtype=np.int64)
    else:
        s = sizes.detach().cpu().numpy() if _is_torch(sizes) else np.asarray(sizes)
        if s.shape != (batch,) or s.dtype.kind not in "iu" or (s < 1).any() or (s > width).any():
            raise ConfigError("sizes", sizes, f"{batch} integers in [1, {width}]")
        out["sizes"] = s.astype(np.int64)
    shapes = {"weights": (batch, width), "linear": (batch, width),
              "quadratic": (batch, width, width), "penalty": (batch,), "offset": (batch,)}
    for name, value in arrays.items():
        if value is None:
            value = np.zeros(batch)
        if cuda:
            if tuple(value.shape) != shapes[name] and not (name == "penalty" and value.dim() == 0):
                raise ConfigError(name, tuple(value.shape), f"shape {shapes[name]}")
            continue
        a = value.detach().cpu().numpy() if _is_torch(value) else np.asarray(value)
        a = _kernel_array(np.broadcast_to(a, shapes[name]) if a.ndim == 0 else a, np.float64)
        if a.shape != shapes[name]:
            raise ConfigError(name, a.shape, f"shape {shapes[name]}")
        if name == "penalty" and not (a > 0).all():
            raise ConfigError("penalty", value, "values > 0")
        if name == "quadratic" and not (np.array_equal(a, a.transpose(0, 2, 1))
                                        and not np.diagonal(a, axis1=1, axis2=2).any()):
            raise ConfigError("quadratic", f"array of shape {a.shape}",
                              "J symmetric with a zero diagonal (put x_i x_i terms in linear)")
        out[name] = a
    return out


def _run_triton(model, arrays, host, sizes, keys, betas, num_reads, acceptance, order, keep_best,
                first) -> AnnealResult:
    import torch

    from .gpu import launch

    device = first.device if _is_torch(first) else torch.device("cpu")
    dtype = torch.float32

    def on_device(name: str) -> torch.Tensor:
        value = arrays.get(name)
        if value is None or not (_is_torch(value) and value.is_cuda):
            value = torch.as_tensor(host[name])
        else:
            value = value.expand(first.shape[0]) if value.dim() == 0 else value
        return value.to(device=device, dtype=dtype).contiguous()

    names = ("weights", "penalty") if model == "onehot" else ("linear", "quadratic", "offset")
    tensors = {name: on_device(name) for name in names}
    if _is_torch(sizes) and sizes.is_cuda:
        tensors["sizes"] = sizes.to(torch.int64)
    else:
        tensors["sizes"] = torch.as_tensor(host["sizes"]).to(device)
    key_tensor = torch.from_numpy(keys.view(np.int64)).to(device)
    beta_tensor = torch.tensor(betas, dtype=dtype, device=device)
    states, energies = launch(model, tensors, key_tensor, beta_tensor, num_reads,
                              acceptance == "gibbs", order == "random", keep_best)
    if not _is_torch(first):
        return AnnealResult(states.numpy(), energies.double().numpy())
    return AnnealResult(states, energies)
