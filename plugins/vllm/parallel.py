"""qsample under vLLM's parallelism: which rank samples a row, and how the others learn its token.

vLLM runs the logits processors on every tensor-parallel (TP) rank of the last pipeline stage,
each over the full logits, and every rank keeps the token its own sampler draws: only TP rank 0's
reaches the user, and the ranks stay in step only because their draws agree. A backend called
on every rank would be called TP times per step (TP x the QPU bill and the latency), and a
backend whose reads are not a function of the row's key (a QPU) would make the ranks disagree,
so that their KV caches hold different histories. Hence (`Ranks`):

- **TP rank 0 samples every opted-in row**; the chosen token ids go to the other ranks in one
  broadcast over vLLM's TP group (`TokenBroadcast`): an int64 vector with one entry per opted-in
  row of the step, `LEFT_TO_VLLM` where rank 0 leaves the row to vLLM's own sampler. Every rank
  then forces the same rows to the same tokens (`force_rows`). Rank 0 reaches the broadcast
  whatever happens in its step (a backend that raises or times out takes the fallback; a defect
  leaves the rows to vLLM), so no rank waits for vLLM's execute-model timeout. The other ranks
  never build a sampler, so no configuration can call a backend once per rank.
- **Model Runner V2's batch-sharded sampling** (``enable_batch_sharded_sampling``): vLLM gives
  each rank only the requests it owns (slot mod TP) and all-gathers the sampled tokens itself;
  each rank samples its own rows and nothing is broadcast. The children of a coupled ``n > 1``
  request may be owned by different ranks: they are coupled only with the siblings on the same
  rank (a warning at start-up says so).
- **Pipeline parallelism**: only the last stage computes logits and runs processors, and its TP
  group is the one used. **Data parallelism**: each replica is an engine of its own, with its
  own TP group; a request's stream seed is fixed at admission (`admission.check_request`), in
  the API server, so it does not depend on the replica or the rank.

The broadcast (`TokenBroadcast.over_tp_group`) is the cheapest the TP group offers for the
logits' device: on the CPU, ``GroupCoordinator.broadcast_object``, the group's shared-memory
message queue (11-18 us a call for 1-256 rows at TP = 2 on 2 cores, where ``broadcast`` over
gloo takes 190-240 us: docs/scaling.md); on a GPU, ``GroupCoordinator.broadcast`` of the device
tensor (NCCL, enqueued on the current stream, so the device-resident step stays free of host
synchronisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from vllm.distributed import parallel_state

#: The entry of a row that rank 0 left to vLLM's own sampler (fallback ``"error"``, logits
#: that cannot be sampled, or a defect of the step).
LEFT_TO_VLLM = -1
#: The sampling rank of a TP group (the one whose output vLLM returns).
SAMPLING_RANK = 0


@dataclass(frozen=True)
class Ranks:
    """Where this processor stands in vLLM's TP group of its pipeline stage.

    Attributes:
        rank: this process's rank in the group.
        world_size: ranks in the group (1: no tensor parallelism).
        sharded: batch-sharded sampling (MRV2): each rank gets only the rows it owns.
    """

    rank: int = SAMPLING_RANK
    world_size: int = 1
    sharded: bool = False

    @property
    def samples(self) -> bool:
        """This rank calls the sampler for the rows it is given."""
        return self.sharded or self.rank == SAMPLING_RANK

    @property
    def broadcasts(self) -> bool:
        """The chosen tokens go from rank 0 to the others every step."""
        return self.world_size > 1 and not self.sharded

    def describe(self) -> str:
        """One phrase for the start-up log line."""
        if self.world_size == 1:
            return "one rank"
        if self.sharded:
            return (f"TP rank {self.rank} of {self.world_size}, batch-sharded sampling: samples "
                    "the rows it owns; coupled siblings owned by other ranks are not coupled")
        role = ("samples and broadcasts the tokens" if self.samples
                else f"applies rank {SAMPLING_RANK}'s tokens")
        return f"TP rank {self.rank} of {self.world_size}: {role}"


#: A processor without tensor parallelism.
ONE_RANK = Ranks()


def engine_ranks(vllm_config: Any) -> Ranks:
    """The `Ranks` of a processor built in a vLLM worker (one rank where vLLM's model-parallel
    groups are not set up: a processor built outside an engine)."""
    if not parallel_state.model_parallel_is_initialized():
        return ONE_RANK
    group = parallel_state.get_tp_group()
    parallel = getattr(vllm_config, "parallel_config", None)
    sharded = bool(getattr(parallel, "enable_batch_sharded_sampling", False))
    return Ranks(group.rank_in_group, group.world_size, sharded and group.world_size > 1)


def engine_parallelism(vllm_config: Any, device: torch.device
                       ) -> tuple[Ranks, TokenBroadcast | None]:
    """A worker's `Ranks` and, where it broadcasts, its `TokenBroadcast`."""
    ranks = engine_ranks(vllm_config)
    return ranks, TokenBroadcast.over_tp_group(device) if ranks.broadcasts else None


class TokenBroadcast:
    """Rank 0's token vector to every rank of the TP group, in place (see the module docstring).

    Args:
        send: ``send(tensor, src)`` broadcasting ``tensor`` from rank ``src`` to the group, in
            place (vLLM's ``get_tp_group().broadcast``; tests pass their own).
    """

    def __init__(self, send: Callable[[torch.Tensor, int], Any]) -> None:
        self.send = send

    @classmethod
    def over_tp_group(cls, device: torch.device) -> TokenBroadcast:
        """Over vLLM's TP group, for token vectors on ``device`` (see the module docstring)."""
        group = parallel_state.get_tp_group()
        if device.type == "cpu":
            return cls(lambda tensor, src: _broadcast_object(group, tensor, src))
        return cls(lambda tensor, src: group.broadcast(tensor, src=src))

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.send(tokens, SAMPLING_RANK)
        return tokens


def _broadcast_object(group: Any, tensor: torch.Tensor, src: int) -> None:
    """``tensor`` from rank ``src`` to the group's other ranks, in place, through the group's
    shared-memory message queue (``GroupCoordinator.broadcast_object``)."""
    sent = group.broadcast_object(tensor.numpy() if group.rank_in_group == src else None,
                                  src=src)
    if group.rank_in_group != src:
        tensor.copy_(torch.from_numpy(sent))


def force_rows(logits: torch.Tensor, index: torch.Tensor, tokens: torch.Tensor) -> None:
    """Row ``index[i]`` of ``logits`` becomes 0 at ``tokens[i]`` and -inf elsewhere, in place;
    rows whose entry is `LEFT_TO_VLLM` are left as they are. Host tokens: written in place
    (`force_rows_in_place`); device tokens: device ops only, no host sync
    (`force_rows_on_device`)."""
    if index.numel() == 0:
        return
    if tokens.device.type == "cpu":
        force_rows_in_place(logits, index, tokens)
    else:
        force_rows_on_device(logits, index, tokens)


def force_rows_in_place(logits: torch.Tensor, index: torch.Tensor,
                        tokens: torch.Tensor) -> None:
    """`force_rows` for tokens on the host: the forced rows are picked on the host and written
    in place (one pass over them, nothing of their size allocated)."""
    forced = tokens != LEFT_TO_VLLM
    rows = index[forced]
    logits.index_fill_(0, rows, float("-inf"))
    logits[rows, tokens[forced].to(rows.device)] = 0.0


def force_rows_on_device(logits: torch.Tensor, index: torch.Tensor,
                         tokens: torch.Tensor) -> None:
    """`force_rows` without reading ``tokens`` on the host: every listed row is rebuilt, those
    marked `LEFT_TO_VLLM` from their own values."""
    forced = torch.full((index.numel(), logits.shape[1]), float("-inf"), dtype=logits.dtype,
                        device=logits.device)
    forced.scatter_(1, tokens.clamp(min=0)[:, None], 0.0)
    kept = (tokens == LEFT_TO_VLLM)[:, None]
    logits.index_copy_(0, index, torch.where(kept, logits.index_select(0, index), forced))
