"""`qsample bench-serve`: a real vLLM OpenAI server's throughput with and without qsample.

One server (`serve_check.openai_server`, with the admission middleware) serves every round.
A round is ``requests`` completions sent by ``clients`` concurrent threads with the official
``openai`` client, each generating exactly ``new_tokens`` tokens (``min_tokens`` =
``max_tokens``) at the same temperature and top-k, prompts cycling through the benchmarks' story
openings. Arms: ``plain`` (no qsample keys) and one ``qsample MODE/BACKEND`` arm per combo (every
request opted in with ``qsample_mode``, ``qsample_backend`` and ``qsample_top_k``).

After one warm-up round of every arm, the arms run in interleaved groups (plain, qsample, ...,
plain, qsample, ...) ``repeats`` times, so drift hits every arm alike. Tokens are the
``usage.completion_tokens`` the server returns; a group's ratio is an arm's tokens/s over the
plain round's in the same group, reported as the median over groups with its min and max.
After each round the server's ``/metrics`` give the qsample sampler seconds, rows and fallback
or error rows of that round, and ``other_cpu_s`` is the CPU time that neither the server's
processes nor this one used during the round (other work on the machine: a round with much of
it is not a clean measurement).
"""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qsample.tools.bench import interleaved_summary

from ..transformers.benchmark import PROMPTS
from .serve_check import MIDDLEWARE_ARGS, openai_server, scrape

#: The throughput target of the qsample arms against plain at 16 concurrent clients.
TARGET_RATIO = 0.97
#: One request's limit: a round of 64 requests x 64 tokens takes about 20 s on 2 idle cores, and
#: minutes when other work shares them.
REQUEST_TIMEOUT_SECONDS = 600
PLAIN = "plain"
#: /metrics series summed per round (over labels): {report key: sample name}.
ROUND_SERIES = {"sampler_seconds": "qsample_sampler_seconds_sum",
                "sampler_calls": "qsample_sampler_calls_total",
                "qsample_rows": "qsample_rows_total",
                "fallback_rows": "qsample_fallback_rows_total",
                "error_rows": "qsample_error_rows_total",
                "admitted": "qsample_requests_admitted_total",
                "refused": "qsample_requests_refused_total",
                "preemptions": "vllm:num_preemptions_total"}


def arm_name(mode: str, backend: str) -> str:
    return f"qsample {mode}/{backend}"


def xargs_for(mode: str, backend: str, top_k: int) -> dict[str, Any]:
    """The ``vllm_xargs`` of an opted-in request."""
    return {"qsample_mode": mode, "qsample_backend": backend, "qsample_top_k": top_k}


def series_totals(base_url: str) -> dict[str, float]:
    """`ROUND_SERIES` from the server's /metrics, each summed over its labels."""
    samples = scrape(base_url)
    return {key: sum(v for (name, _), v in samples.items() if name == sample)
            for key, sample in ROUND_SERIES.items()}


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    import psutil

    t = psutil.cpu_times()
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))


def process_cpu_seconds(pid: int, *, descendants: bool) -> float:
    """CPU seconds used so far by a process, and its live descendants if asked."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in (root, *(root.children(recursive=True) if descendants else ())):
            times = proc.cpu_times()
            total += times.user + times.system
    except psutil.Error:  # a process that exited meanwhile
        pass
    return total


HEADER = (f"{'arm':28s} {'clients':>7s} {'requests':>8s} {'tokens':>6s} {'median s':>9s} "
          f"{'tokens/s':>9s} {'vs plain':>8s} {'min-max over pairs':>18s}")


def format_row(row: dict[str, Any]) -> str:
    spread = f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f}"
    return (f"{row['arm']:28s} {row['clients']:7d} {row['requests']:8d} {row['new_tokens']:6d} "
            f"{row['median_s']:9.2f} {row['tokens_per_s']:9.1f} {row['ratio_vs_plain']:8.3f} "
            f"{spread:>18s}")


def run_serve_bench(model: str, *, clients: int = 16, requests: int = 64, new_tokens: int = 64,
                    repeats: int = 3,
                    combos: Sequence[tuple[str, str]] = (("gumbel", "batched-sa"),),
                    top_k: int = 64, temperature: float = 0.8,
                    log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Start the server, run the warm-up and the interleaved rounds; returns the summary rows
    (`interleaved_summary`, with the settings) under ``rows``, every round under ``rounds`` and the
    server log's path."""
    import openai

    log_path = Path(tempfile.mkdtemp(prefix="qsample-bench-serve-")) / "server.log"
    arms: dict[str, dict[str, Any] | None] = {PLAIN: None}
    arms.update({arm_name(m, b): xargs_for(m, b, top_k) for m, b in combos})
    settings = {"clients": clients, "requests": requests, "new_tokens": new_tokens}
    log(f"qsample bench-serve: {model}, {clients} clients, {requests} requests x {new_tokens} "
        f"tokens, T={temperature}, top_k={top_k}, {repeats} interleaved groups; server log "
        f"{log_path}")
    with openai_server(model, log_path, extra_args=MIDDLEWARE_ARGS) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none",
                               timeout=REQUEST_TIMEOUT_SECONDS, max_retries=0)

        def ours() -> float:  # the server's processes, and this one (not its children: the server)
            return (process_cpu_seconds(server.process.pid, descendants=True)
                    + process_cpu_seconds(os.getpid(), descendants=False))

        def one(index: int, xargs: dict[str, Any] | None) -> int:
            extra: dict[str, Any] = {"top_k": top_k, "min_tokens": new_tokens}
            if xargs:
                extra["vllm_xargs"] = xargs
            out = client.completions.create(model="model", prompt=PROMPTS[index % len(PROMPTS)],
                                            max_tokens=new_tokens, temperature=temperature,
                                            extra_body=extra)
            return out.usage.completion_tokens

        def round_(arm: str, group: int | None) -> dict[str, Any]:
            before = series_totals(server.base_url)
            cpu_before = busy_cpu_seconds() - ours()
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                start = time.perf_counter()
                counts = list(pool.map(lambda i: one(i, arms[arm]), range(requests)))
                seconds = time.perf_counter() - start
            other_cpu = busy_cpu_seconds() - ours() - cpu_before
            after = series_totals(server.base_url)
            result = {"arm": arm, "group": group, "seconds": seconds, "tokens": sum(counts),
                      "short_requests": sum(c != new_tokens for c in counts),
                      "other_cpu_s": other_cpu,
                      **{key: after[key] - before[key] for key in ROUND_SERIES}}
            log(f"  {arm:28s} {seconds:7.2f} s {sum(counts) / seconds:8.1f} tokens/s  sampler "
                f"{result['sampler_seconds']:.2f} s, fallback rows {result['fallback_rows']:g}, "
                f"error rows {result['error_rows']:g}, other CPU {other_cpu:.1f} s")
            return result

        log("warm-up:")
        warm_up = [round_(arm, None) for arm in arms]
        rounds: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for group in range(repeats):
            log(f"group {group + 1} of {repeats}:")
            for arm in arms:
                rounds[arm].append(round_(arm, group))
    rows = [{**row, **settings, "sampler_share": statistics.median(
                r["sampler_seconds"] / r["seconds"] for r in rounds[row["arm"]]),
             "fallback_rows": sum(r["fallback_rows"] for r in rounds[row["arm"]]),
             "error_rows": sum(r["error_rows"] for r in rounds[row["arm"]]),
             "short_requests": sum(r["short_requests"] for r in rounds[row["arm"]]),
             "other_cpu_s_max": max(r["other_cpu_s"] for r in rounds[row["arm"]])}
            for row in interleaved_summary(rounds, PLAIN)]
    return {"rows": rows, "rounds": [rounds[arm][g] for g in range(repeats) for arm in arms],
            "warm_up": warm_up, "server_log": str(log_path), "top_k": top_k,
            "temperature": temperature, "repeats": repeats}
