"""`qsample serve-check`: a real vLLM OpenAI server with the plugin, measured as a user sees it.

It starts ``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 with the admission
middleware, then, with the official ``openai`` client:

1. **Neighbour slowdown at the caps.** A plain request (``new_tokens`` tokens, seeded) is timed
   alone, next to a plain request (what batching two requests costs by itself), and next to
   one opted-in request at the operator's cost cap for each arm (the neighbour starts first
   and generates longer, so it overlaps the whole plain request); medians over ``repeats``,
   ratio = with / alone. Whether the plain text stayed the same is recorded.
2. **A streamed bad value** gets HTTP 400 before the stream starts.
3. **n > 1** with ``qsample_seed``: distinct children, the same again on a second request.
4. **/metrics**: the ``qsample_`` series after all of the above.

Every request is bounded in count and time, and traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client.parser import text_string_to_metric_families

from .admission import DEFAULT_FIELD_CAPS, DEFAULT_MAX_COST
from .metrics import PUBLISH_INTERVAL_SECONDS

STARTUP_SECONDS = 300
REQUEST_TIMEOUT_SECONDS = 120
#: A scrape waits this long for the engine's snapshot to catch up (`metrics.SnapshotWriter`).
SCRAPE_SETTLE_SECONDS = PUBLISH_INTERVAL_SECONDS + 0.5
HEALTH_TIMEOUT_SECONDS = 2  # one /health probe while the server starts, polled every second
POLL_SECONDS = 1
SCRAPE_TIMEOUT_SECONDS = 10
TERMINATE_SECONDS = 30  # then killed, and waited for KILL_SECONDS
KILL_SECONDS = 10
LOG_TAIL_CHARS = 3000  # of the server log, in start-up errors
#: The server's environment defaults: vLLM's CPU KV cache (GiB), no thread pinning.
CPU_SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                  "OMP_NUM_THREADS": "1"}
#: The server flag that loads qsample's admission middleware (HTTP 400 before a stream starts).
MIDDLEWARE_ARGS = ("--middleware", "qsample.plugins.vllm.admission_middleware")
PROMPT = "Once upon a time, in a small village by the sea,"
TEMPERATURE = 0.8
#: The opted-in neighbour generates this many times the plain request's tokens, starting this
#: long before it, so that it overlaps the whole plain request.
NEIGHBOUR_LENGTH_FACTOR = 3
NEIGHBOUR_HEAD_START_SECONDS = 0.5
#: The ``n > 1`` check: children and tokens per child.
CHILDREN = 3
CHILD_TOKENS = 12
#: Arms at their backend's default cost cap: (mode, backend, top_k, num_reads, num_sweeps),
#: top_k and num_reads at their default field caps.
CAP_TOP_K, CAP_READS = DEFAULT_FIELD_CAPS["top_k"], DEFAULT_FIELD_CAPS["num_reads"]
CAP_ARMS = tuple(
    (mode, backend, CAP_TOP_K, CAP_READS, DEFAULT_MAX_COST[backend] // (CAP_TOP_K * CAP_READS))
    for mode, backend in (("gumbel", "batched-sa"), ("boltzmann", "batched-sa"),
                          ("gumbel", "neal")))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer(NamedTuple):
    base_url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen


@contextmanager
def openai_server(model: str, log_path: Path, *, max_model_len: int = 1024,
                  extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                  name: str = "model") -> Iterator[RunningServer]:
    """A vLLM OpenAI server on a free port of 127.0.0.1 for the ``with`` block, its output in
    ``log_path``; terminated (then killed) on exit. ``env``: the server's whole environment
    (default: this process's, with the fast CPU settings). Raises `RuntimeError` with the log's
    tail when it exits or is not ready within `STARTUP_SECONDS`."""
    port = free_port()
    if env is None:
        env = {**CPU_SERVER_ENV, **os.environ}
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
               "--max-model-len", str(max_model_len), "--served-model-name", name, *extra_args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError("server exited:\n" + log_path.read_text()[-LOG_TAIL_CHARS:])
            try:
                with urllib.request.urlopen(base + "/health", timeout=HEALTH_TIMEOUT_SECONDS):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("server not ready in time:\n"
                                       + log_path.read_text()[-LOG_TAIL_CHARS:]) from None
                time.sleep(POLL_SECONDS)
        yield RunningServer(base, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=TERMINATE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=KILL_SECONDS)


def scrape(base_url: str) -> dict[tuple[str, frozenset], float]:
    """The server's /metrics: {(sample name, labels): value}, read once the engine's snapshot
    has caught up with the steps before the call (`SCRAPE_SETTLE_SECONDS`)."""
    time.sleep(SCRAPE_SETTLE_SECONDS)
    with urllib.request.urlopen(base_url + "/metrics", timeout=SCRAPE_TIMEOUT_SECONDS) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def run_serve_check(model: str, *, new_tokens: int = 32, repeats: int = 3,
                    log=print) -> dict[str, Any]:
    import openai

    folder = Path(tempfile.mkdtemp(prefix="qsample-serve-check-"))
    log_path = folder / "server.log"
    result: dict[str, Any] = {"model": model, "new_tokens": new_tokens, "repeats": repeats,
                              "server_log": str(log_path)}
    with openai_server(model, log_path, extra_args=MIDDLEWARE_ARGS) as server:
        base = server.base_url
        client = openai.OpenAI(base_url=base + "/v1", api_key="none",
                               timeout=REQUEST_TIMEOUT_SECONDS, max_retries=0)

        def plain() -> tuple[float, str]:
            start = time.perf_counter()
            text = client.completions.create(model="model", prompt=PROMPT, max_tokens=new_tokens,
                                             temperature=TEMPERATURE, seed=1).choices[0].text
            return time.perf_counter() - start, text

        def neighbour(xargs: dict[str, Any] | None) -> str:
            return client.completions.create(
                model="model", prompt=PROMPT, max_tokens=NEIGHBOUR_LENGTH_FACTOR * new_tokens,
                temperature=TEMPERATURE,
                extra_body={"vllm_xargs": xargs} if xargs else None).choices[0].text

        plain()  # warm-up
        alone = [plain() for _ in range(repeats)]
        alone_s = statistics.median(t for t, _ in alone)
        rows = [{"arm": "plain alone", "median_s": alone_s, "ratio": 1.0}]
        log(f"{'arm':44s} {'median s':>9s} {'vs alone':>9s}")
        log(f"{'plain alone':44s} {alone_s:9.2f} {1.0:9.2f}")
        neighbour({"qsample_mode": "gumbel", "qsample_seed": 1})  # warm-up of the annealer
        for mode, backend, top_k, reads, sweeps in ((None, "plain", 0, 0, 0), *CAP_ARMS):
            xargs = mode and {"qsample_mode": mode, "qsample_backend": backend,
                              "qsample_top_k": top_k, "qsample_num_reads": reads,
                              "qsample_num_sweeps": sweeps, "qsample_seed": 2}
            times, same = [], True
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                for _ in range(repeats):
                    busy = pool.submit(neighbour, xargs)
                    time.sleep(NEIGHBOUR_HEAD_START_SECONDS)  # the neighbour is decoding
                    seconds, text = plain()
                    busy.result(timeout=REQUEST_TIMEOUT_SECONDS)
                    times.append(seconds)
                    same &= text == alone[0][1]
            median = statistics.median(times)
            name = (f"plain next to {mode}/{backend} K{top_k} R{reads} S{sweeps}" if mode
                    else "plain next to a plain request")
            rows.append({"arm": name, "mode": mode, "backend": backend, "top_k": top_k,
                         "num_reads": reads, "num_sweeps": sweeps,
                         "cost": top_k * reads * sweeps, "median_s": median,
                         "ratio": median / alone_s, "plain_text_unchanged": same})
            log(f"{name:44s} {median:9.2f} {median / alone_s:9.2f}"
                + ("" if same else "  (plain text changed!)"))
        result["neighbour"] = rows

        try:
            stream = client.completions.create(model="model", prompt=PROMPT, max_tokens=4,
                                               stream=True,
                                               extra_body={"vllm_xargs": {"qsample_top_k": 0}})
            list(stream)
            result["streamed_bad_value"] = "accepted (no HTTP 400)"
        except openai.BadRequestError as exc:
            result["streamed_bad_value"] = f"HTTP {exc.status_code}: {exc.message}"
        log(f"streamed qsample_top_k=0: {result['streamed_bad_value']}")

        def children() -> list[str]:
            out = client.completions.create(
                model="model", prompt=PROMPT, max_tokens=CHILD_TOKENS, temperature=TEMPERATURE,
                n=CHILDREN,
                extra_body={"vllm_xargs": {"qsample": 1, "qsample_seed": 7}})
            return [c.text for c in sorted(out.choices, key=lambda c: c.index)]

        first, second = children(), children()
        result["n3"] = {"texts": first, "distinct": len(set(first)),
                        "reproducible": first == second}
        log(f"n=3 with qsample_seed: {len(set(first))} distinct, reproducible: {first == second}")

        result["metrics"] = {
            name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}"
                    if labels else ""): value
            for (name, labels), value in scrape(base).items()
            if name.startswith("qsample_") and not name.endswith(("_created", "_bucket"))}
        log("metrics:")
        for name, value in result["metrics"].items():
            log(f"  {name} {value:g}")
    result["operator_config_logged"] = "qsample: operator config from" in log_path.read_text()
    return result
