"""A real vLLM OpenAI server at tensor (or data) parallelism N with qsample, used as a client
would.

    .venv/bin/python scripts/tp_server_check.py MODEL_DIR [--tp 2] [--dp 1] [--json OUT.json]

Starts ``python -m vllm.entrypoints.openai.api_server --tensor-parallel-size N
--data-parallel-size M`` on 127.0.0.1
(with the admission middleware), then, with the official ``openai`` client, sends unseeded
opted-in completions (streamed and not, with ``logprobs``) and re-scores each output with a
plain request's ``prompt_logprobs``: if the ranks forced different tokens, the log-probabilities
vLLM reported while generating differ from the re-scoring. It then sends `SEEDED_REQUESTS`
identical seeded opted-in requests at once (under data parallelism they spread over the
replicas): their texts must be one. Finally it reads ``/metrics``: ``qsample_rows_total`` must
equal the tokens generated (each row counted once, not once per rank), and vLLM's own
``vllm:generation_tokens_total`` per engine shows which replicas served. Prints one JSON object
and writes it to ``--json``. Every request is bounded in time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import tempfile
import time
from pathlib import Path

import openai

from qsample.cache import write_json
from qsample.plugins.vllm.serve_check import (
    CPU_SERVER_ENV,
    MIDDLEWARE_ARGS,
    REQUEST_TIMEOUT_SECONDS,
    openai_server,
    scrape,
)

PROMPTS = ("Once upon a time", "The annealer cooled", "Quantum computers", "She opened the door")
ROUNDS = 2  # each prompt, streamed and not, this many times
NEW_TOKENS = 12
SEEDED_REQUESTS = 8
KV_CACHE_GIB = "1"  # per rank


def completion(client: openai.OpenAI, prompt: str, stream: bool
               ) -> tuple[list[int], list[int], list[float]]:
    """(prompt token ids, output token ids, reported logprobs) of one unseeded opted-in
    completion."""
    kwargs = {"model": "model", "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 1.0,
              "logprobs": 0, "extra_body": {"vllm_xargs": {"qsample": 1}, "ignore_eos": True,
                                            "return_token_ids": True}}
    if not stream:
        choice = client.completions.create(**kwargs).choices[0]
        extra = choice.model_extra
        return extra["prompt_token_ids"], extra["token_ids"], choice.logprobs.token_logprobs
    prompt_ids: list[int] = []
    ids: list[int] = []
    reported: list[float] = []
    for chunk in client.completions.create(stream=True, **kwargs):
        if not chunk.choices:
            continue
        extra = chunk.choices[0].model_extra or {}
        prompt_ids = prompt_ids or extra.get("prompt_token_ids") or []
        ids += extra.get("token_ids") or []
        if chunk.choices[0].logprobs:
            reported += chunk.choices[0].logprobs.token_logprobs
    return prompt_ids, ids, reported


def rescored(client: openai.OpenAI, prompt_ids: list[int], ids: list[int]) -> list[float]:
    """The log-probabilities of ``ids`` after ``prompt_ids``, from a plain request."""
    score = client.completions.create(model="model", prompt=[*prompt_ids, *ids], max_tokens=1,
                                      temperature=0.0, extra_body={"prompt_logprobs": 0})
    entries = score.choices[0].model_extra["prompt_logprobs"][len(prompt_ids):]
    return [entry[str(token)]["logprob"] for entry, token in zip(entries, ids, strict=True)]


def seeded_text(client: openai.OpenAI) -> str:
    """One seeded opted-in completion's text."""
    return client.completions.create(
        model="model", prompt=PROMPTS[0], max_tokens=NEW_TOKENS, temperature=1.0,
        extra_body={"vllm_xargs": {"qsample": 1, "qsample_seed": 5}, "ignore_eos": True},
    ).choices[0].text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--tp", type=int, default=2, help="--tensor-parallel-size")
    parser.add_argument("--dp", type=int, default=1, help="--data-parallel-size")
    parser.add_argument("--json", default="bench-results/tp_server_check.json")
    args = parser.parse_args()
    env = {**CPU_SERVER_ENV, **os.environ, "VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GIB}
    log_path = Path(tempfile.mkdtemp(prefix="qsample-tp-server-")) / "server.log"
    start = time.perf_counter()
    with openai_server(args.model, log_path, max_model_len=128, env=env,
                       extra_args=(*MIDDLEWARE_ARGS, "--tensor-parallel-size", str(args.tp),
                                   "--data-parallel-size", str(args.dp))
                       ) as server:
        ready = time.perf_counter() - start
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none",
                               timeout=REQUEST_TIMEOUT_SECONDS, max_retries=0)
        requests, generated = [], 0
        for _ in range(ROUNDS):
            for prompt in PROMPTS:
                for stream in (False, True):
                    prompt_ids, ids, reported = completion(client, prompt, stream)
                    clean = rescored(client, prompt_ids, ids)
                    gap = max(abs(a - b) for a, b in zip(reported, clean, strict=True))
                    requests.append({"prompt": prompt, "stream": stream, "tokens": ids,
                                     "max_logprob_gap": gap})
                    generated += len(ids)
        with concurrent.futures.ThreadPoolExecutor(SEEDED_REQUESTS) as pool:
            seeded = list(pool.map(lambda _: seeded_text(client), range(SEEDED_REQUESTS)))
        generated += SEEDED_REQUESTS * NEW_TOKENS
        metrics = scrape(server.base_url)
    per_engine = {dict(labels).get("engine", "?"): value
                  for (name, labels), value in metrics.items()
                  if name == "vllm:generation_tokens_total"}
    result = {"model": args.model, "tp": args.tp, "dp": args.dp, "ready_seconds": ready,
              "requests": requests, "seeded_texts": seeded,
              "seeded_distinct_texts": len(set(seeded)), "tokens_generated": generated,
              "metrics_qsample_rows_total": metrics.get(("qsample_rows_total", frozenset()), 0.0),
              "vllm_generation_tokens_per_engine": per_engine,
              "max_logprob_gap": max(r["max_logprob_gap"] for r in requests)}
    write_json(args.json, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("requests", "seeded_texts")}))


if __name__ == "__main__":
    main()
