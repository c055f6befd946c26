"""Where an opted-in decoding step's time goes inside vLLM's engine: a cProfile of the in-process
engine (V1 runner, the default model), 16 opted-in requests of 64 tokens each, and the
cumulative time per engine step of the qsample functions on the step's path.

    .venv/bin/python scripts/profile_step.py --json docs/bench/profile_step.json

Prints one row per function (ms per step, cumulative, under cProfile, whose overhead inflates
every figure alike) and writes them as JSON. The same command on an older commit gives the
"before" column of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
from pathlib import Path

#: (label, file suffix, function name) of the functions reported, in step order.
FUNCTIONS = (
    ("processor apply (all qsample work)", "plugins/vllm/processor.py", "apply"),
    ("  sampler call (QuantumSampler.sample)", "qsample/sampler.py", "sample"),
    ("    candidates (top-k / top-p)", "qsample/candidates.py", "screen_candidates"),
    ("    the step strategy (fused: one kernel call)", "qsample/pipeline.py", "run"),
    ("  penalties (V1)", "plugins/vllm/processor.py", "penalise"),
    ("  coupling groups", "plugins/vllm/processor.py", "_groups"),
    ("  metrics publish", "plugins/vllm/metrics.py", "publish"),
    ("  force rows", "plugins/vllm/parallel.py", "force_rows"),
    ("  telemetry accounting", "plugins/vllm/processor.py", "account"),
)
PROMPTS = ("Once upon a time", "The old lighthouse keeper", "In the year 3000",
           "She opened the letter", "The robot looked at", "Deep in the forest",
           "The scientist announced", "On the last day of summer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    from vllm import LLM, SamplingParams

    from qsample.plugins.transformers.models import resolve_model

    llm = LLM(model=resolve_model(None), enforce_eager=True, max_model_len=256, seed=0)
    params = SamplingParams(temperature=0.8, top_k=64, max_tokens=args.tokens,
                            min_tokens=args.tokens,
                            extra_args={"qsample_mode": "gumbel", "qsample_backend": "batched-sa"})
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
    llm.generate(prompts, params, use_tqdm=False)  # warm-up: compiled kernels, caches
    profile = cProfile.Profile()
    profile.enable()
    llm.generate(prompts, params, use_tqdm=False)
    profile.disable()
    stats = pstats.Stats(profile).stats
    steps = args.tokens
    rows = []
    for label, suffix, name in FUNCTIONS:
        total = sum(value[3] for (path, _, func), value in stats.items()
                    if func == name and path.endswith(suffix))
        calls = sum(value[1] for (path, _, func), value in stats.items()
                    if func == name and path.endswith(suffix))
        rows.append({"function": label.strip(), "ms_per_step": 1e3 * total / steps,
                     "calls": calls})
        print(f"{label:44s} {1e3 * total / steps:8.3f} ms/step  ({calls} calls)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"commit": commit, "requests": args.requests,
                                         "steps": steps, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
