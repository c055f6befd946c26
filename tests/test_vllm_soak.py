"""Soak: a real vLLM OpenAI server (tiny Llama, 127.0.0.1) WITHOUT qsample's admission
middleware, under a bounded concurrent mix of plain, opted-in, streamed, n > 1, chat and hostile
requests. Checks: no 5xx, hostile values refused (HTTP 400, or for streams HTTP 200 and then an
error event, which the openai client raises as a plain `openai.APIError` while iterating), the
server alive afterwards, plain seeded rows bit-identical to the same requests sent alone before
the soak, and one log line (no traceback) per refused streamed request."""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.xdist_group("vllm-soak")  # one worker: one server or engine at a time
openai = pytest.importorskip("openai")

from test_vllm_server import http_get, metric, running_server, scrape  # noqa: E402

THREADS = 8
SOAK_SECONDS = 150  # the whole soak, all requests
PROMPTS = ["Once upon a time", "The annealer cooled", "What is two plus", "She opened the door"]
STREAM_REFUSAL_LINE = "qsample refused a streamed request"


@dataclass(frozen=True)
class Job:
    name: str
    kind: str  # "completion" or "chat"
    prompt: str = PROMPTS[0]
    xargs: dict[str, Any] | None = None
    stream: bool = False
    hostile: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    job: Job
    texts: list[str] | None = None  # by choice index
    error: str | None = None  # bad_request, stream_error, server_error, ...
    detail: Any = None
    seconds: float = 0.0


def run_job(client, job: Job) -> Outcome:
    start = time.monotonic()
    extra = {"vllm_xargs": job.xargs} if job.xargs is not None else None
    common = {"model": "tiny", "max_tokens": 8, "temperature": 1.0, "extra_body": extra,
              "stream": job.stream, **job.options}
    try:
        if job.kind == "chat":
            response = client.chat.completions.create(
                messages=[{"role": "user", "content": job.prompt}], **common)
        else:
            response = client.completions.create(prompt=job.prompt, **common)
        texts: dict[int, str] = {}
        if job.stream:
            for chunk in response:
                for choice in chunk.choices:
                    piece = choice.delta.content if job.kind == "chat" else choice.text
                    texts[choice.index] = texts.get(choice.index, "") + (piece or "")
        else:
            for choice in response.choices:
                texts[choice.index] = (choice.message.content if job.kind == "chat"
                                       else choice.text)
        outcome = Outcome(job, texts=[texts[i] for i in sorted(texts)])
    except openai.InternalServerError as exc:
        outcome = Outcome(job, error="server_error", detail=(exc.status_code, exc.message))
    except openai.BadRequestError as exc:
        outcome = Outcome(job, error="bad_request", detail=exc.message)
    except openai.APIStatusError as exc:
        outcome = Outcome(job, error=f"http_{exc.status_code}", detail=exc.message)
    except openai.APIError as exc:  # an error event inside a stream that began with HTTP 200
        outcome = Outcome(job, error="stream_error", detail=exc.body)
    except Exception as exc:  # timeouts, connection errors: reported, never hidden
        outcome = Outcome(job, error=type(exc).__name__, detail=repr(exc))
    outcome.seconds = time.monotonic() - start
    return outcome


def plain_jobs() -> list[Job]:
    """Seeded plain requests (no qsample key): what the soak must leave bit-identical."""
    jobs = [Job(f"plain-{i}", "completion", prompt, options={"seed": 100 + i})
            for i, prompt in enumerate(PROMPTS)]
    jobs += [Job("plain-chat", "chat", "Tell me a story", options={"seed": 7})]
    return jobs


def opted_in_jobs() -> list[Job]:
    return [Job("gumbel", "completion", PROMPTS[1], {"qsample_mode": "gumbel", "qsample_seed": 3}),
            Job("boltzmann", "completion", PROMPTS[2],
                {"qsample_mode": "boltzmann", "qsample_seed": 4, "qsample_top_k": 16}),
            Job("chat-opt-in", "chat", "Tell me a story", {"qsample": 1, "qsample_seed": 5})]


HUGE_SEED = 2**70
#: Hostile qsample values, refused by the plugin (HTTP 400 naming the key).
HOSTILE = [{"qsample_top_k": 0}, {"qsample_top_k": "abc"}, {"qsample_top_k": -1},
           {"qsample_top_k": 10**6}, {"qsample_backend": "nope"}, {"qsample_foo": 1},
           {"qsample_mode": "None"}, {"qsample_mode": "null"}, {"qsample_mode": ""},
           {"qsample_seed": str(HUGE_SEED)}]
HOSTILE_STREAMED = [("completion", {"qsample_top_k": 0}),
                    ("completion", {"qsample_backend": "nope"}),
                    ("completion", {"qsample_seed": str(HUGE_SEED)}),
                    ("chat", {"qsample_foo": 1})]
#: A JSON integer outside [-2^63, 2^64) never reaches the plugin: vLLM's own request check
#: refuses it (HTTP 400 "extra_args integers must be between ...", parameter extra_args), streamed
#: or not, before any stream starts.
VLLM_REFUSED = [("completion", False, {"qsample_seed": HUGE_SEED}),
                ("completion", True, {"qsample_seed": HUGE_SEED})]


def soak_jobs() -> list[Job]:
    jobs = plain_jobs() * 2  # 10
    jobs += opted_in_jobs()  # 3
    jobs += [Job("gumbel-2", "completion", PROMPTS[3], {"qsample_seed": 11}),
             Job("boltzmann-2", "completion", PROMPTS[0],
                 {"qsample_mode": "boltzmann", "qsample_seed": 12})]
    jobs += [Job(f"{job.name}-streamed", job.kind, job.prompt, job.xargs, stream=True,
                 options=job.options) for job in plain_jobs()[:3]]  # 3
    jobs += [Job(f"{job.name}-streamed", job.kind, job.prompt, job.xargs, stream=True)
             for job in opted_in_jobs()]  # 3
    jobs += [Job(f"n2-{seed}", "completion", PROMPTS[1], {"qsample_seed": seed},
                 options={"n": 2}) for seed in (21, 22)]  # 2
    jobs += [Job(f"hostile-{i}", "completion", PROMPTS[i % 4], xargs, hostile=True)
             for i, xargs in enumerate(HOSTILE)]  # 10
    jobs += [Job(f"hostile-streamed-{i}", kind, PROMPTS[0], xargs, stream=True, hostile=True)
             for i, (kind, xargs) in enumerate(HOSTILE_STREAMED)]  # 4
    jobs += [Job(f"vllm-refused-{i}", kind, PROMPTS[0], xargs, stream=stream, hostile=True)
             for i, (kind, stream, xargs) in enumerate(VLLM_REFUSED)]  # 2
    return jobs  # 39, interleaved below


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    with running_server(tmp_path_factory, middleware=False) as server:
        before = scrape(server.base_url)
        # baseline: each reference request alone, sequentially, before any concurrency
        baseline = {job.name: run_job(server.client, job)
                    for job in plain_jobs() + opted_in_jobs()}
        jobs = soak_jobs()
        jobs = jobs[::2] + jobs[1::2]  # kinds mixed across the threads
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(run_job, server.client, job) for job in jobs]
            _, pending = concurrent.futures.wait(futures, timeout=SOAK_SECONDS)
            for future in pending:
                future.cancel()
        seconds = time.monotonic() - start
        assert not pending, f"{len(pending)} requests still running after {SOAK_SECONDS} s"
        outcomes = [future.result() for future in futures]
        health = http_get(f"{server.base_url}/health")[0]
        alive = server.process.poll() is None
        after = scrape(server.base_url)
        yield {"server": server, "baseline": baseline, "outcomes": outcomes, "seconds": seconds,
               "health": health, "alive": alive, "before": before, "after": after}


def test_no_server_errors_and_every_benign_request_succeeds(soak):
    outcomes = soak["outcomes"]
    assert len(outcomes) >= 35
    server_errors = [(o.job.name, o.error, o.detail) for o in outcomes
                     if o.error == "server_error" or (o.error == "stream_error"
                                                      and (o.detail or {}).get("code", 0) >= 500)]
    assert not server_errors
    failed = [(o.job.name, o.error, o.detail) for o in outcomes if not o.job.hostile and o.error]
    assert not failed
    for outcome in outcomes:
        if not outcome.job.hostile:
            expected = outcome.job.options.get("n", 1)
            assert len(outcome.texts) == expected and all(outcome.texts), outcome
    n2 = [o for o in outcomes if o.job.name.startswith("n2-")]
    assert all(len(set(o.texts)) == 2 for o in n2), [o.texts for o in n2]


def test_hostile_values_are_refused_with_400(soak):
    hostile = [o for o in soak["outcomes"] if o.job.hostile]
    assert len(hostile) == len(HOSTILE) + len(HOSTILE_STREAMED) + len(VLLM_REFUSED)
    for outcome in hostile:
        job = outcome.job
        key = next(iter(job.xargs))
        if job.name.startswith("vllm-refused"):
            assert outcome.error == "bad_request" and "extra_args" in outcome.detail, outcome
        elif not job.stream:
            assert outcome.error == "bad_request", outcome
            assert key in outcome.detail, outcome
        else:
            # no middleware: HTTP 200, then an error event; the openai client raises a plain
            # openai.APIError (not an APIStatusError) while iterating, body = the event's error
            assert outcome.error == "stream_error", outcome
            assert outcome.detail["code"] == 400 and key in outcome.detail["message"], outcome


def test_server_is_alive_and_healthy_after_the_soak(soak):
    assert soak["alive"] and soak["health"] == 200
    assert soak["seconds"] < SOAK_SECONDS


def test_plain_seeded_requests_are_bit_identical_to_the_baseline(soak):
    baseline = soak["baseline"]
    mismatches = []
    for outcome in soak["outcomes"]:
        name = outcome.job.name.removesuffix("-streamed")
        if name.startswith("plain") and outcome.texts != baseline[name].texts:
            mismatches.append((outcome.job.name, outcome.texts, baseline[name].texts))
    assert all(baseline[job.name].texts for job in plain_jobs())
    assert not mismatches


def test_opted_in_seeded_requests_do_not_depend_on_batch_neighbours(soak):
    baseline = soak["baseline"]
    mismatches = []
    for outcome in soak["outcomes"]:
        name = outcome.job.name.removesuffix("-streamed")
        if name in {job.name for job in opted_in_jobs()} and outcome.texts != baseline[name].texts:
            mismatches.append((outcome.job.name, outcome.texts, baseline[name].texts))
    assert not mismatches


def test_each_refused_stream_logs_one_line_and_no_traceback(soak):
    log = soak["server"].log_path.read_text()
    lines = [line for line in log.splitlines() if STREAM_REFUSAL_LINE in line]
    assert len(lines) == len(HOSTILE_STREAMED), lines
    for _, xargs in HOSTILE_STREAMED:
        assert sum(next(iter(xargs)) in line for line in lines) >= 1, (xargs, lines)
    assert "Traceback" not in log


def test_refusals_are_counted_by_key(soak):
    def delta(name, **labels):
        return metric(soak["after"], name, **labels) - metric(soak["before"], name, **labels)

    hostile = HOSTILE + [xargs for _, xargs in HOSTILE_STREAMED]
    for key in {next(iter(xargs)) for xargs in hostile}:
        expected = sum(next(iter(xargs)) == key for xargs in hostile)
        assert delta("qsample_requests_refused_total", key=key) == expected, key
    assert delta("qsample_rows_total") > 0
