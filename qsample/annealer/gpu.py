"""Launches the Triton kernels on torch tensors: compiled for CUDA tensors, or run by Triton's
interpreter on CPU tensors when the process set ``TRITON_INTERPRET=1`` before importing triton
(how the tests check the GPU code without a GPU)."""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np
import torch

from ..errors import ConfigError

MAX_TILE_STATES = 4096  # BLOCK_R x BLOCK_K states of one program, kept on chip
MAX_STEP_TILE_STATES = 16384  # a fused step keeps all reads of its row in one program
STEP_INT_COLUMNS, STEP_FLOAT_COLUMNS = 5, 3  # token, rank, size, valid, status; p, H, energy
_BETAS: dict[tuple[bytes, str], torch.Tensor] = {}  # `device_betas`: a few schedules per process
MIN_BLOCK_K = 16  # the narrowest tile: a power of two, as tl.arange needs


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1`` in the environment
    when triton was first imported; Triton fixes the mode then, for the whole process)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def kernels() -> ModuleType:
    from . import triton_kernels

    return triton_kernels


def _blocks(num_reads: int, width: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_K): powers of two, at most `MAX_TILE_STATES` states per program."""
    block_r, block_k = _step_blocks(num_reads, width)
    block_r = min(block_r, max(1, MAX_TILE_STATES // block_k))
    return block_r, block_k


def launch(model: str, tensors: dict[str, torch.Tensor], keys: torch.Tensor, betas: torch.Tensor,
           num_reads: int, gibbs: bool, random_order: bool, keep_best: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` ("onehot" or "dense") on ``tensors`` (all on one device); returns states
    int8 [B, R', K] and energies [B, R'] on that device (R' = 1 when ``keep_best``)."""
    first = next(iter(tensors.values()))
    device = first.device
    batch, width = first.shape[0], first.shape[1]
    if device.type != "cuda" and not interpreting():
        raise ConfigError("engine", "triton",
                          "CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set before "
                          "triton is first imported (Triton's interpreter, for tests)")
    module = kernels()
    block_r, block_k = _blocks(num_reads, width)
    in_kernel_best = keep_best and block_r >= num_reads  # else reduced on the device after
    reads_out = 1 if in_kernel_best else num_reads
    states = torch.empty((batch, reads_out, width), dtype=torch.int8, device=device)
    energies = torch.empty((batch, reads_out), dtype=first.dtype, device=device)
    grid = (batch, -(-num_reads // block_r))
    flags = dict(GIBBS=gibbs, RANDOM=random_order, KEEP_BEST=in_kernel_best,
                 BLOCK_R=block_r, BLOCK_K=block_k)
    _launch(module, model, grid, tensors, keys, betas, states, energies, num_reads, width, flags)
    if keep_best and not in_kernel_best:
        best = energies.argmin(dim=1)
        rows = torch.arange(batch, device=device)
        states, energies = states[rows, best][:, None], energies[rows, best][:, None]
    return states, energies


def _launch(module, model, grid, tensors, keys, betas, states, energies, num_reads, width, flags
            ) -> None:
    if model == "onehot":
        module.anneal_onehot_kernel[grid](
            tensors["weights"], tensors["penalty"], tensors["sizes"], keys, betas, states,
            energies, betas.shape[1], num_reads, width, **flags)
    else:
        module.anneal_dense_kernel[grid](
            tensors["linear"], tensors["quadratic"], tensors["offset"], tensors["sizes"], keys,
            betas, states, energies, betas.shape[1], num_reads, width, **flags)


def runs_resident(device: torch.device) -> bool:
    """Whether a fused step on tensors of ``device`` runs on the tensors themselves (the Triton
    kernel, `qsample.pipeline.ResidentStep`): CUDA tensors, and CPU tensors in a process that
    runs Triton's interpreter (`interpreting`: how the tests run the GPU path without a GPU)."""
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


def step_fits(num_reads: int, width: int) -> bool:
    """Whether a fused step of ``num_reads`` reads over ``width`` candidates fits one program."""
    block_r, block_k = _step_blocks(num_reads, width)
    return block_r * block_k <= MAX_STEP_TILE_STATES


def device_betas(betas: np.ndarray, device: torch.device) -> torch.Tensor:
    """``betas`` as float32 on ``device``, copied once per (schedule, device): a step's launch
    then makes no host-to-device copy of them."""
    key = (betas.tobytes(), str(device))
    if key not in _BETAS:
        _BETAS[key] = torch.as_tensor(betas, dtype=torch.float32).to(device)
    return _BETAS[key]


def _step_blocks(num_reads: int, width: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_K) holding every read and candidate of a row: powers of two, BLOCK_K at
    least `MIN_BLOCK_K` (`_blocks` caps BLOCK_R further for the anneal kernels)."""
    return _pow2(num_reads), max(MIN_BLOCK_K, _pow2(width))


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def launch_step(values: torch.Tensor, ids: torch.Tensor, keys: torch.Tensor,
                betas: torch.Tensor, *, temperature: float, top_p: float, min_p: float,
                perturb: bool, keep_lowest: bool, penalty: float, num_reads: int, gibbs: bool,
                random_order: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`sample_step_kernel` over the rows of ``values`` [B, k] (float32, on one device): int64
    [B, 5] and float32 [B, 3] outputs on that device, launched without a host synchronisation.
    ``keys``: the row keys' bits as int64 [B], ``betas`` float32 [S], on the same device."""
    if values.device.type != "cuda" and not interpreting():
        raise ConfigError("engine", "triton", "CUDA tensors, or TRITON_INTERPRET=1 (tests)")
    batch, width = values.shape
    out_i = torch.empty((batch, STEP_INT_COLUMNS), dtype=torch.int64, device=values.device)
    out_f = torch.empty((batch, STEP_FLOAT_COLUMNS), dtype=torch.float32, device=values.device)
    block_r, block_k = _step_blocks(num_reads, width)
    kernels().sample_step_kernel[(batch,)](
        values, ids, keys, betas, out_i, out_f, temperature, top_p, min_p, penalty,
        betas.shape[0], num_reads, width, PERTURB=perturb, KEEP_LOWEST=keep_lowest,
        FILTER=top_p < 1.0 or min_p > 0.0, GIBBS=gibbs, RANDOM=random_order, BLOCK_R=block_r,
        BLOCK_K=block_k)
    return out_i, out_f
