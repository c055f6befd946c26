"""vLLM throughput with and without opted-in requests, in one run on one engine.

Arms per batch size B: ``plain`` (no request opts in), ``qsample MODE/BACKEND`` (every request
opts in) and ``mixed`` (half of them). Every arm generates exactly ``new_tokens`` per request
(``min_tokens``) at the same temperature and top-k; tokens/s is the median over repeats and the
ratio is against ``plain``.

With ``tp`` > 1 the engine runs that many tensor-parallel ranks; the processors' counters are
then read from every rank (``LLM.collective_rpc``), and each row also gives the token
broadcast's cost per sampled step: rank 0's time to send (the broadcast's own cost, on the
step's critical path) and the other ranks' time from entering it to receiving the tokens
(their wait for rank 0's sampling, spent idle instead of sampling themselves).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qsample.tools.bench import MS_PER_S, timed_median, write_report

from ..transformers.benchmark import PROMPTS

#: Share of the requests that opt in, in the ``mixed`` arms.
MIXED_SHARE = 0.5


def run_vllm_bench(model: str, *, batches: Sequence[int] = (8, 32),
                   combos: Sequence[tuple[str, str]] = (("gumbel", "batched-sa"),
                                                        ("gumbel", "neal")),
                   new_tokens: int = 64, repeats: int = 3, top_k: int = 64,
                   temperature: float = 0.8, max_model_len: int = 512, tp: int = 1,
                   log: Callable[[str], Any] = print) -> list[dict[str, Any]]:
    """One row per arm and batch size: median seconds of a batch, tokens/s, the ratio to
    ``plain``, the sampler's share of the time (mean sampler seconds / median) and, with
    ``tp`` > 1, the broadcast's cost per step (see the module docstring)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    if tp > 1:  # collective_rpc sends a function to the workers of this process's own engine
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, enforce_eager=True, max_model_len=max_model_len, seed=0,
              tensor_parallel_size=tp)

    def counters() -> np.ndarray:
        """[ranks, COUNTERS] of the processors' stats, rank 0 first."""
        if tp == 1:
            return np.array([_rank_counters(None)])
        return np.array(llm.collective_rpc(_rank_counters))

    def timed(prompts: list[str], params: list[SamplingParams]) -> tuple[float, np.ndarray]:
        """(median seconds of one batch, mean counters per batch), after a warm-up."""
        deltas: list[np.ndarray] = []  # per call: the warm-up's, then each repeat's

        def generate() -> None:
            before = counters()
            llm.generate(prompts, params, use_tqdm=False)
            deltas.append(counters() - before)

        median_ms, _ = timed_median(generate, repeats)
        return median_ms / MS_PER_S, np.mean(deltas[1:], axis=0)

    rows: list[dict[str, Any]] = []
    for batch in batches:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]

        def requests(xargs, share=1.0, batch=batch):
            return [SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens,
                                   temperature=temperature, top_k=top_k, seed=i,
                                   extra_args=xargs if i < share * batch else None)
                    for i in range(batch)]

        arms = [("plain", requests(None))]
        for mode, backend in combos:
            xargs = {"qsample_mode": mode, "qsample_backend": backend}
            arms.append((f"qsample {mode}/{backend}", requests(xargs)))
            arms.append((f"mixed {MIXED_SHARE:.0%} {mode}/{backend}",
                         requests(xargs, MIXED_SHARE)))
        plain = None
        for name, params in arms:
            median, counted = timed(prompts, params)
            tps = batch * new_tokens / median
            plain = tps if name == "plain" else plain
            steps = max(counted[0, STEPS], 1.0)
            row = {"arm": name, "batch": batch, "new_tokens": new_tokens, "tp": tp,
                   "median_s": median, "tokens_per_s": tps, "ratio_vs_plain": tps / plain,
                   "sampler_share": counted[0, SAMPLER_SECONDS] / median,
                   "sampled_steps": counted[0, STEPS],
                   "broadcast_send_ms_per_step": MS_PER_S * counted[0, BROADCAST_SECONDS] / steps,
                   "broadcast_wait_ms_per_step": (MS_PER_S * counted[1:, BROADCAST_SECONDS].mean()
                                                  / steps if tp > 1 else 0.0),
                   "repeats": repeats}
            rows.append(row)
            log(f"{name:28s} {tp:2d} {batch:3d} {median:9.2f} {tps:9.1f} {tps / plain:8.3f} "
                f"{100 * row['sampler_share']:7.1f}% {row['broadcast_send_ms_per_step']:8.3f} "
                f"{row['broadcast_wait_ms_per_step']:8.3f}")
    if tp > 1:
        primitives = broadcast_primitives(llm)
        for entry in primitives:
            log(f"broadcast of {entry['rows']:3d} rows, median us at rank {entry['rank']}: "
                + ", ".join(f"{name} {entry[name]:.1f}" for name in PRIMITIVES))
        rows.extend(primitives)
    return rows

#: Rows per broadcast and calls per primitive in `broadcast_primitives`.
PRIMITIVE_ROWS = (1, 16, 256)
PRIMITIVE_CALLS = 300
PRIMITIVES = ("broadcast_gloo_us", "broadcast_object_shm_us", "all_gather_shm_float32_us")


def broadcast_primitives(llm: Any) -> list[dict[str, Any]]:
    """Rows (arm ``"broadcast primitives"``) of the median microseconds per call of the TP
    group's broadcast primitives on the CPU, per rank and token-vector size (`PRIMITIVE_ROWS`):
    ``broadcast`` (gloo), ``broadcast_object`` (the shared-memory message queue, what
    `parallel.TokenBroadcast` uses on the CPU) and ``all_gather`` (shared memory, float32
    only)."""
    return [{"arm": "broadcast primitives", "rows": rows, **rank}
            for rows in PRIMITIVE_ROWS
            for rank in llm.collective_rpc(_time_primitives, args=(rows,))]


def _time_primitives(worker: Any, rows: int) -> dict[str, float]:
    """Run in each worker by ``LLM.collective_rpc`` (see `broadcast_primitives`)."""
    import time

    import torch
    from vllm.distributed import parallel_state

    group = parallel_state.get_tp_group()
    tokens = torch.arange(rows, dtype=torch.int64)
    floats = tokens.to(torch.float32)
    sender = group.rank_in_group == 0
    calls = dict(zip(PRIMITIVES, (
        lambda: group.broadcast(tokens, src=0),
        lambda: group.broadcast_object(tokens.numpy() if sender else None),
        lambda: group.all_gather(floats, dim=0)), strict=True))
    out = {"rank": group.rank_in_group}
    for name, call in calls.items():
        seconds = []
        for _ in range(PRIMITIVE_CALLS):
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)
        out[name] = float(np.median(seconds)) * 1e6
    return out


#: Columns of `_rank_counters`.
STEPS, SAMPLER_SECONDS, BROADCAST_SECONDS = range(3)


def _rank_counters(worker: Any) -> list[float]:
    """This process's processors' counters (`STEPS`, `SAMPLER_SECONDS`,
    `BROADCAST_SECONDS`), summed; run in each worker by ``LLM.collective_rpc``."""
    from . import RowSamplingCore

    stats = [p.stats for p in RowSamplingCore.instances]
    return [sum(s.steps for s in stats), sum(s.sampler_seconds for s in stats),
            sum(s.broadcast_seconds for s in stats)]


HEADER = (f"{'arm':28s} {'TP':>2s} {'B':>3s} {'median s':>9s} {'tokens/s':>9s} {'vs plain':>8s} "
          f"{'sampler':>8s} {'bc ms':>8s} {'wait ms':>8s}")


def write_json(rows: Sequence[dict[str, Any]], path: str | Path, **meta: Any) -> None:
    write_report(path, "vLLM tokens/s with and without qsample requests", rows, **meta)
