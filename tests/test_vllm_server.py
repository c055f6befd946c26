"""The OpenAI-compatible vLLM server with the plugin loaded by its entry points (no processor
flag): a real server on 127.0.0.1, started and stopped by the test, every wait bounded.

This module's server runs with ``--middleware qsample.plugins.vllm.admission_middleware`` and an
operator config allowing every local backend and ``dwave`` (without a token), so that the
refusals of a backend that cannot run a request are checked end to end. The server without the
middleware (streamed refusals after HTTP 200) is covered in test_vllm_soak.py."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from conftest import record_fidelity

from qsample.tools.stats import chi_square

pytest.importorskip("vllm")
pytestmark = pytest.mark.xdist_group("vllm-server")  # one worker: one server or engine at a time
openai = pytest.importorskip("openai")
from qsample.plugins.vllm.serve_check import openai_server, scrape  # noqa: E402

REQUEST_SECONDS = 60
MIDDLEWARE = "qsample.plugins.vllm.admission_middleware"
NEEDS_PYQPANDA3 = pytest.mark.skipif(importlib.util.find_spec("pyqpanda3") is None,
                                     reason="pyqpanda3 (qsample[origin]) is not installed")
NEEDS_QISKIT = pytest.mark.skipif(importlib.util.find_spec("qiskit_aer") is None,
                                  reason="qiskit-aer (qsample[qiskit]) is not installed")
ALLOWED_BACKENDS = ["batched-sa", "neal", "tree", "exact", "tabu", "dwave", "qpanda-sim", "originq",
                    "qiskit"]


class Server(NamedTuple):
    client: Any  # openai.OpenAI
    log_path: Path
    base_url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    config_path: Path | None


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


@contextlib.contextmanager
def running_server(tmp_path_factory, *, middleware: bool,
                   operator: dict | None = None) -> Iterator[Server]:
    """A vLLM OpenAI server with the tiny Llama (`serve_check.openai_server`), in an environment
    without D-Wave credentials or qsample settings of the caller's. ``operator``: the
    QSAMPLE_VLLM_CONFIG file's contents."""
    from tiny_llama import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny-server"))
    log_path = tmp_path_factory.mktemp("server-log") / "server.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DWAVE_", "QSAMPLE_VLLM_", "QSAMPLE_METRICS_",
                                "PROMETHEUS_MULTIPROC"))}
    env.update({"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                "OMP_NUM_THREADS": "1",
                "VLLM_CACHE_ROOT": str(tmp_path_factory.mktemp("vcache"))})
    config_path = None
    if operator is not None:
        config_path = tmp_path_factory.mktemp("operator") / "qsample-vllm.json"
        config_path.write_text(json.dumps(operator))
        env["QSAMPLE_VLLM_CONFIG"] = str(config_path)
    extra = ("--dtype", "float32", *(("--middleware", MIDDLEWARE) if middleware else ()))
    with openai_server(str(folder), log_path, max_model_len=128, extra_args=extra, env=env,
                       name="tiny") as running:
        client = openai.OpenAI(base_url=f"{running.base_url}/v1", api_key="none",
                               timeout=REQUEST_SECONDS, max_retries=0)
        yield Server(client, log_path, running.base_url, running.process, config_path)


def metric(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory, middleware=True,
                        operator={"allowed_backends": ALLOWED_BACKENDS}) as handle:
        yield handle


def complete(client, xargs=None, **kwargs):
    extra = {"vllm_xargs": xargs} if xargs else None
    kwargs.setdefault("max_tokens", 8)
    kwargs.setdefault("temperature", 1.0)
    return client.completions.create(model="tiny", prompt="Once upon a time",
                                     extra_body=extra, **kwargs)


def chat(client, xargs=None, **kwargs):
    extra = {"vllm_xargs": xargs} if xargs else None
    return client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Tell me a story"}], max_tokens=6,
        extra_body=extra, **kwargs)


def test_entry_points_load_the_plugin_without_a_flag(server):
    log = server.log_path.read_text()
    assert "qsample logits processor loaded" in log
    assert f"operator config from {server.config_path}" in log  # the engine's line


def test_general_plugin_logs_the_operator_config_in_the_api_server(server):
    assert f"qsample: operator config from {server.config_path}" in server.log_path.read_text()


def test_completions_opt_in_per_request_and_are_reproducible(server):
    xargs = {"qsample_mode": "gumbel", "qsample_seed": 21, "qsample_top_k": 16}
    first = complete(server.client, xargs).choices[0].text
    second = complete(server.client, xargs).choices[0].text
    assert first == second and first  # the annealer's seed decides the text
    other = complete(server.client, {**xargs, "qsample_seed": 22}).choices[0].text
    assert other != first


@pytest.mark.parametrize("backend", [pytest.param("qpanda-sim", marks=NEEDS_PYQPANDA3),
                                     pytest.param("qiskit", marks=NEEDS_QISKIT)])
def test_gate_model_simulator_serves_reproducible_requests(server, backend):
    """A gate-model simulator inside the engine: the ideal simulator's reads are drawn from the
    row keys, so a seed decides the text."""
    xargs = {"qsample_backend": backend, "qsample_mode": "boltzmann", "qsample_top_k": 8,
             "qsample_seed": 3}
    first, second = (complete(server.client, xargs).choices[0].text for _ in range(2))
    assert first == second and first


def test_chat_completions_opt_in(server):
    answers = [chat(server.client, {"qsample": 1, "qsample_seed": 5}).choices[0].message.content
               for _ in range(2)]
    assert answers[0] == answers[1]


def test_bad_values_get_http_400_naming_the_key(server):
    with pytest.raises(openai.BadRequestError, match="qsample_top_k=0"):
        complete(server.client, {"qsample_top_k": 0})
    with pytest.raises(openai.BadRequestError, match="'sqa' is not allowed on this server"):
        complete(server.client, {"qsample_backend": "sqa"})
    assert complete(server.client).choices[0].text is not None  # the server is still serving


@pytest.mark.parametrize(("xargs", "key", "words"), [
    ({"qsample_backend": "tree", "qsample_top_k": 64}, "qsample_top_k", "at most 25"),
    ({"qsample_backend": "exact", "qsample_top_k": 30}, "qsample_top_k", "at most 20"),
    ({"qsample_backend": "tabu", "qsample_mode": "boltzmann"}, "qsample_backend", "only ground"),
    ({"qsample_backend": "dwave"}, "qsample_backend", "DWAVE_API_TOKEN"),
    pytest.param({"qsample_backend": "qpanda-sim", "qsample_top_k": 8}, "qsample_backend",
                 "only thermal", marks=NEEDS_PYQPANDA3),
    # an explicit K over the W state's limit (without one, qpanda-sim's default K 16 runs)
    pytest.param({"qsample_backend": "qpanda-sim", "qsample_mode": "boltzmann",
                  "qsample_top_k": 64}, "qsample_top_k", "at most 20", marks=NEEDS_PYQPANDA3),
    ({"qsample_backend": "originq", "qsample_mode": "boltzmann"}, "qsample_backend",
     "ORIGINQ_API_KEY"),
    pytest.param({"qsample_backend": "qiskit", "qsample_mode": "gumbel"}, "qsample_backend",
                 "only thermal", marks=NEEDS_QISKIT),
    pytest.param({"qsample_backend": "qiskit", "qsample_mode": "boltzmann",
                  "qsample_top_k": 32}, "qsample_top_k", "at most 20", marks=NEEDS_QISKIT),
], ids=["tree-top-k", "exact-top-k", "tabu-boltzmann", "dwave-no-token", "qpanda-sim-gumbel",
        "qpanda-sim-top-k", "originq-no-key", "qiskit-gumbel", "qiskit-top-k"])
def test_an_allowed_backend_that_cannot_run_the_request_gets_http_400(server, xargs, key, words):
    with pytest.raises(openai.BadRequestError) as caught:
        complete(server.client, xargs)
    assert caught.value.status_code == 400
    assert key in caught.value.message and words in caught.value.message


@pytest.mark.parametrize("xargs", [
    {"qsample_backend": "batched-sa", "qsample_num_reads": 32, "qsample_num_sweeps": 2000,
     "qsample_top_k": 256},  # 16.4M > 1M
    {"qsample_backend": "neal", "qsample_num_reads": 32, "qsample_num_sweeps": 1000,
     "qsample_top_k": 64},  # 2.0M > 500k
], ids=["batched-sa", "neal"])
def test_annealing_cost_over_the_cap_gets_http_400(server, xargs):
    with pytest.raises(openai.BadRequestError) as caught:
        complete(server.client, xargs)
    assert caught.value.status_code == 400
    assert "qsample_num_sweeps" in caught.value.message
    assert "exceeds this server's cap" in caught.value.message


def test_streamed_bad_values_get_http_400_with_the_middleware(server):
    with pytest.raises(openai.BadRequestError, match="qsample_top_k") as caught:
        complete(server.client, {"qsample_top_k": "abc"}, stream=True)
    assert caught.value.status_code == 400
    with pytest.raises(openai.BadRequestError, match="qsample_mode") as caught:
        chat(server.client, {"qsample_mode": "nope"}, stream=True)
    assert caught.value.status_code == 400
    # a good streamed request still streams, and its text is the non-streamed one's
    xargs = {"qsample_seed": 9}
    streamed = "".join(chunk.choices[0].text
                       for chunk in complete(server.client, xargs, stream=True) if chunk.choices)
    assert streamed == complete(server.client, xargs).choices[0].text


def test_json_booleans_get_http_400_naming_the_key(server):
    # without the middleware vLLM's request model would turn `true` into 1 (greedy)
    with pytest.raises(openai.BadRequestError, match="qsample_top_k=true") as caught:
        complete(server.client, {"qsample_top_k": True})
    assert caught.value.status_code == 400
    with pytest.raises(openai.BadRequestError, match="qsample_seed=false"):
        chat(server.client, {"qsample_seed": False})


def test_n_children_get_distinct_reproducible_streams(server):
    def texts():
        response = complete(server.client, {"qsample_seed": 7}, n=3)
        return [choice.text for choice in sorted(response.choices, key=lambda c: c.index)]

    first = texts()
    assert len(first) == 3 and len(set(first)) == 3, first
    assert texts() == first


def test_metrics_count_admissions_refusals_and_rows(server):
    before = scrape(server.base_url)
    tokens = 0
    for seed in (31, 32):
        tokens += complete(server.client, {"qsample_seed": seed}).usage.completion_tokens
    complete(server.client, seed=3)  # plain: neither admitted nor sampled by qsample
    with pytest.raises(openai.BadRequestError):
        complete(server.client, {"qsample_top_k": 0})
    with pytest.raises(openai.BadRequestError):
        complete(server.client, {"qsample_backend": "sqa"})  # not allowed on this server
    after = scrape(server.base_url)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("qsample_requests_admitted_total") == 2
    assert delta("qsample_requests_refused_total", key="qsample_top_k") == 1
    assert tokens > 0 and delta("qsample_rows_total") >= tokens
    assert delta("qsample_sampler_calls_total") >= 1
    assert delta("qsample_sampler_seconds_count") >= 1
    assert delta("qsample_sampler_seconds_bucket", le="+Inf") >= 1
    assert delta("qsample_backend_calls_total", backend="batched-sa") >= 1
    # this test's own refusals: xdist may run the module's tests on a restarted server
    assert delta("qsample_requests_refused_total", key="qsample_backend") == 1
    assert metric(after, "qsample_rows_total") >= metric(after, "qsample_sampler_calls_total") > 0


def test_a_seed_given_as_a_string_is_the_same_integer(server):
    # 2^53 + 1: a seed parsed through float() would become 2^53, another request's stream
    seed = 2**53 + 1
    as_int = complete(server.client, {"qsample_seed": seed}).choices[0].text
    as_string = complete(server.client, {"qsample_seed": str(seed)}).choices[0].text
    neighbour = complete(server.client, {"qsample_seed": seed - 1}).choices[0].text
    assert as_int != neighbour  # the test can tell the two seeds apart
    assert as_string == as_int


# -- n > 1 "distinct" through the OpenAI server, whatever the order the children arrive in ----

DISTINCT_N = 4
DISTINCT_K = 6  # candidates: C(6, 4) = 15 first-token sets
DISTINCT_T = 0.6  # peaked enough that independent children repeat a first token
DISTINCT_PROMPT = "The quantum annealer said"
CONCURRENT, ONE_BY_ONE = 24, 8  # requests of each kind, streamed and not: 64 in all
ALPHA = 1e-3


def first_token(choice_tokens: list[str]) -> int:
    """The id of the first token (``return_tokens_as_token_ids``: "token_id:N")."""
    return int(choice_tokens[0].split(":")[1])


def distinct_request(client, *, stream: bool, xargs: dict | None) -> list[int]:
    """One n = 4 request's first tokens, in child order."""
    response = client.completions.create(
        model="tiny", prompt=DISTINCT_PROMPT, n=DISTINCT_N, max_tokens=1,
        temperature=DISTINCT_T, logprobs=0, stream=stream,
        extra_body={"return_tokens_as_token_ids": True, "top_k": DISTINCT_K,
                    **({"vllm_xargs": xargs} if xargs else {})})
    chosen: dict[int, int] = {}
    for part in (response if stream else [response]):
        for choice in part.choices:
            if choice.logprobs and choice.logprobs.tokens and choice.index not in chosen:
                chosen[choice.index] = first_token(choice.logprobs.tokens)
    return [chosen[i] for i in range(DISTINCT_N)]


def first_token_law(client) -> tuple[np.ndarray, np.ndarray]:
    """The K candidates of the prompt's first token and their target probabilities
    softmax(logprob / T) over them, from vLLM's own raw logprobs."""
    response = client.completions.create(
        model="tiny", prompt=DISTINCT_PROMPT, max_tokens=1, temperature=0.0, logprobs=20,
        extra_body={"return_tokens_as_token_ids": True})
    top = response.choices[0].logprobs.top_logprobs[0]
    best = sorted(top.items(), key=lambda item: -item[1])[:DISTINCT_K]
    tokens = np.array([first_token([name]) for name, _ in best])
    values = np.array([value for _, value in best]) / DISTINCT_T
    probs = np.exp(values - values.max())
    return tokens, probs / probs.sum()


def set_law(probs: np.ndarray, n: int) -> dict[frozenset, float]:
    """P(set of n candidates) under n ordered draws without replacement."""
    law: dict[frozenset, float] = {}
    for order in itertools.permutations(range(probs.size), n):
        chance, left = 1.0, 1.0
        for i in order:
            chance *= probs[i] / left
            left -= probs[i]
        key = frozenset(order)
        law[key] = law.get(key, 0.0) + chance
    return law


def set_fit(draws: list[list[int]], tokens: np.ndarray, probs: np.ndarray):
    """Chi-square of the drawn first-token sets against `set_law` (a draw with a repeat, or a
    token outside the candidates, falls in a bin of probability 0: rejected)."""
    law = set_law(probs, DISTINCT_N)
    cells = list(law)
    index = {token: i for i, token in enumerate(tokens.tolist())}
    counts = np.zeros(len(cells) + 1)
    for draw in draws:
        key = frozenset(index.get(t, -1) for t in draw)
        counts[cells.index(key) if key in law else len(cells)] += 1
    return chi_square(counts, np.array([*law.values(), 0.0]))


def test_distinct_children_are_distinct_and_sample_without_replacement(server):
    """64 n = 4 "distinct" requests through the OpenAI server (24 concurrent and 8 one by one,
    each streamed and not): vLLM adds the children to the engine one at a time, and every
    request's 4 first tokens are distinct; the sets follow sampling without replacement from
    the prompt's target (chi-square against the exact set probabilities from vLLM's own
    logprobs); plain n = 4 requests (independent children) fail the same test."""
    tokens, probs = first_token_law(server.client)
    xargs = {"qsample_mode": "gumbel", "qsample_coupling": "distinct"}
    jobs = [(stream, together) for stream in (False, True) for together in (True, False)
            for _ in range(CONCURRENT if together else ONE_BY_ONE)]
    draws = [distinct_request(server.client, stream=stream, xargs=xargs)
             for stream, together in jobs if not together]
    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        draws += list(pool.map(lambda job: distinct_request(server.client, stream=job[0],
                                                            xargs=xargs),
                               [job for job in jobs if job[1]]))
    assert len(draws) == 2 * (CONCURRENT + ONE_BY_ONE)
    repeated = [draw for draw in draws if len(set(draw)) < DISTINCT_N]
    assert not repeated, repeated
    fit = set_fit(draws, tokens, probs)
    record_fidelity({"case": "server n=4 distinct first-token sets", "draws": len(draws),
                     "dof": fit.dof, "p": fit.p_value, "tv": fit.tv})
    assert fit.p_value >= ALPHA, fit
    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        plain = list(pool.map(lambda _: distinct_request(server.client, stream=False,
                                                         xargs=None), range(CONCURRENT)))
    assert set_fit(plain, tokens, probs).p_value < ALPHA
