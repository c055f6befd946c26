"""Runs qsample in a real vLLM engine with tensor parallelism and writes what the tests check
to WORK_DIR/result.json (`tests/test_vllm_parallel.py` runs it).

    python tests/vllm_tp_check.py MODEL_DIR WORK_DIR [--tp 2] [--tokens 8]

WORK_DIR receives the operator config, the engine's metrics snapshots (QSAMPLE_METRICS_DIR), the
test backends' call log and the result (``result.json``). Scenarios, one engine, requests sent
one batch at a time:

- ``seeded``: four prompts with ``qsample_seed`` (batched-sa): their tokens;
- ``coupled``: an ``n = 4`` request with ``qsample_coupling="distinct"`` and a seed;
- ``unseeded``: four prompts without any seed, with the log-probabilities vLLM reports while
  generating and those of a clean re-scoring of prompt + output (``prompt_logprobs``), which
  differ when the ranks forced different tokens;
- ``random``: two requests, one at a time, on ``rank-random`` (a random token per call, from
  OS entropy), their re-scoring and the backend's calls;
- ``raises``: one request on ``rank-raises`` (every call raises): the fallback's tokens;
- per rank, the processor's counters (``collective_rpc``), and the metrics snapshots summed as
  the API server's ``/metrics`` sums them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPTS = ["Once upon a time", "The annealer cooled", "Quantum computers", "She opened the door"]
OPERATOR = {"allowed_backends": ["batched-sa", "rank-random", "rank-raises"],
            "backend_modules": ["vllm_rank_backends"], "fallback": "exact",
            "defaults": {"top_k": 16}}


def environment(work: Path) -> None:
    """The engine's environment, inherited by its workers."""
    (work / "metrics").mkdir(parents=True, exist_ok=True)
    (work / "operator.json").write_text(json.dumps(OPERATOR))
    os.environ.update({
        "QSAMPLE_VLLM_CONFIG": str(work / "operator.json"),
        "QSAMPLE_METRICS_DIR": str(work / "metrics"),
        "QSAMPLE_TEST_CALL_LOG": str(work / "calls.log"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "OMP_NUM_THREADS": "1",
        "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",  # collective_rpc with a function
    })
    os.environ.setdefault("VLLM_CACHE_ROOT", str(work / "vllm-cache"))
    sys.path.insert(0, str(HERE))


def rank_stats(worker) -> dict:
    """Run in each worker (`LLM.collective_rpc`): its rank and its processors' counters."""
    from dataclasses import asdict

    from qsample.plugins.vllm import RowSamplingCore

    processors = list(RowSamplingCore.instances)
    return {"pid": os.getpid(), "rank": worker.rank,
            "ranks": [p.ranks.describe() for p in processors],
            "stats": [asdict(p.stats) for p in processors]}


def calls(work: Path) -> list[list[int]]:
    path = work / "calls.log"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    path.unlink()
    return [[int(part) for part in line.split()] for line in lines]


def generate(llm, prompts, extra, tokens, n=1, logprobs=None) -> list:
    from vllm import SamplingParams

    params = SamplingParams(temperature=1.0, max_tokens=tokens, ignore_eos=True, n=n,
                            logprobs=logprobs, extra_args=dict(extra))
    return llm.generate(prompts, params, use_tqdm=False)


def rescored(llm, output) -> dict:
    """The output's tokens, the log-probabilities vLLM reported while generating them, and
    those of a clean re-scoring of prompt + output (a plain request, not opted in)."""
    from vllm import SamplingParams

    completion = output.outputs[0]
    ids = list(completion.token_ids)
    reported = [entry[token].logprob for entry, token in zip(completion.logprobs, ids,
                                                                 strict=True)]
    prompt = list(output.prompt_token_ids)
    score = llm.generate([{"prompt_token_ids": prompt + ids}],
                         SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
    clean = [score.prompt_logprobs[len(prompt) + i][token].logprob
             for i, token in enumerate(ids)]
    return {"tokens": ids, "reported": reported, "clean": clean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("work", type=Path)
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--pp", type=int, default=1, help="pipeline stages")
    parser.add_argument("--tokens", type=int, default=8)
    args = parser.parse_args()
    environment(args.work)
    import vllm

    from qsample.plugins.vllm.metrics import SnapshotCollector
    from qsample.plugins.vllm.serve_check import SCRAPE_SETTLE_SECONDS

    start = time.perf_counter()
    llm = vllm.LLM(model=args.model, enforce_eager=True, dtype="float32", max_model_len=128,
                   seed=0, tensor_parallel_size=args.tp, pipeline_parallel_size=args.pp,
                   max_num_seqs=8)
    out: dict = {"start_seconds": time.perf_counter() - start}
    tokens = args.tokens
    seeded = generate(llm, PROMPTS, {"qsample": 1, "qsample_seed": 7}, tokens)
    out["seeded"] = [list(o.outputs[0].token_ids) for o in seeded]
    coupled = generate(llm, PROMPTS[:1], {"qsample_coupling": "distinct", "qsample_seed": 11},
                       tokens, n=4)
    out["coupled"] = [list(c.token_ids) for c in coupled[0].outputs]
    out["unseeded"] = [rescored(llm, o)
                       for o in generate(llm, PROMPTS, {"qsample": 1}, tokens, logprobs=0)]
    calls(args.work)
    out["random"] = []
    for prompt in PROMPTS[:2]:  # one request at a time: one row per step
        [output] = generate(llm, [prompt], {"qsample_backend": "rank-random"}, tokens,
                            logprobs=0)
        out["random"].append({**rescored(llm, output), "calls": calls(args.work)})
    [output] = generate(llm, PROMPTS[:1], {"qsample_backend": "rank-raises", "qsample_seed": 3},
                        tokens)
    out["raises"] = {"tokens": list(output.outputs[0].token_ids), "calls": calls(args.work)}
    out["opted_in_rows"] = tokens * (len(PROMPTS) * 2 + 4 + 2 + 1)
    out["ranks"] = llm.collective_rpc(rank_stats)
    time.sleep(SCRAPE_SETTLE_SECONDS)  # the snapshot follows the steps within the interval
    out["metrics"] = {sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
                      for family in SnapshotCollector(args.work / "metrics").collect()
                      for sample in family.samples}
    out["engine_pids"] = sorted(path.stem for path in (args.work / "metrics").glob("*.prom"))
    (args.work / "result.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
