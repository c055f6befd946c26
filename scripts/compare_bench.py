"""Before/after step benchmarks of two qsample checkouts, measured in one run.

    .venv/bin/python scripts/compare_bench.py --before OLD_CHECKOUT \\
        --json docs/bench/pipeline_compare.json

- ``qsample bench``'s cells (B in {1, 8, 64}, K in {16, 64}, V = 49,152, T = 0.8, seed 0,
  gumbel/batched-sa, boltzmann/batched-sa, gumbel/neal): both versions in this one process (the
  old package imported as ``qsample_before`` from OLD_CHECKOUT/qsample), each cell timed in
  ``--rounds`` rounds, each round timing ``--calls`` calls of one version right after the other's
  (which goes first alternates), on the same logits. A round's ratio is the median after-call
  over the median before-call; the cell's ratio is the median over rounds, so a slow spell of the
  machine, which touches both halves of a round alike, cancels out.
- ``qsample bench-first-step``: the command of each checkout (``--before-python``, default
  OLD_CHECKOUT/.venv/bin/python, and this interpreter), one right after the other (which goes
  first alternates) in each of ``--first-rounds`` rounds; each field's ratio is the median of
  the rounds' ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

import qsample

BATCHES, KS = (1, 8, 64), (16, 64)
COMBOS = (("gumbel", "batched-sa"), ("boltzmann", "batched-sa"), ("gumbel", "neal"))
VOCAB, TEMPERATURE, LOGIT_SCALE = 49152, 0.8, 3.0  # as `qsample bench`
FIRST_FIELDS = ("import_ms", "warm_up_ms", "first_step_ms", "step_ms")
MS_PER_S = 1e3


def _load(checkout: Path, name: str) -> ModuleType:
    """The package ``checkout``/qsample, imported as ``name`` (its imports are relative)."""
    folder = checkout / "qsample"
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _calls(sampler, logits: torch.Tensor, calls: int) -> float:
    """The median seconds of ``calls`` calls."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        sampler.sample(logits)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_rows(before: ModuleType, rounds: int, calls: int) -> list[dict]:
    rows = []
    for k in KS:
        for batch in BATCHES:
            logits = torch.randn(batch, VOCAB, generator=torch.Generator().manual_seed(batch))
            logits *= LOGIT_SCALE
            for mode, backend in COMBOS:
                samplers = []
                for package in (before, qsample):
                    config = package.SamplerConfig(mode=mode, backend=backend, top_k=k,
                                                   temperature=TEMPERATURE, seed=0)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        samplers.append(package.QuantumSampler(config))
                for sampler in samplers:
                    _calls(sampler, logits, 3)  # caches, first-call costs
                times: list[list[float]] = [[], []]
                for index in range(rounds):
                    order = (0, 1) if index % 2 == 0 else (1, 0)
                    for side in order:
                        times[side].append(_calls(samplers[side], logits, calls))
                ratios = [a / b for b, a in zip(*times, strict=True)]
                row = {"mode": mode, "backend": backend, "batch": batch, "k": k,
                       "before_ms": MS_PER_S * statistics.median(times[0]),
                       "after_ms": MS_PER_S * statistics.median(times[1]),
                       "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                       "ratio_max": max(ratios)}
                rows.append(row)
                print(f"{mode + '/' + backend:22} {batch:>3} {k:>3} {row['before_ms']:>10.3f} "
                      f"{row['after_ms']:>9.3f} {row['ratio']:>6.3f} "
                      f"[{row['ratio_min']:.2f}, {row['ratio_max']:.2f}]", flush=True)
    return rows


def first_step_rows(pythons: dict[str, str], rounds: int) -> list[dict]:
    runs: dict[str, list[list[dict]]] = {side: [] for side in pythons}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(rounds):
            sides = ("before", "after") if index % 2 == 0 else ("after", "before")
            for side in sides:
                python = pythons[side]
                path = Path(tmp) / f"{side}{index}.json"
                subprocess.run([python, "-m", "qsample.cli", "bench-first-step", "--json",
                                str(path)], check=True, capture_output=True)
                runs[side].append(json.loads(path.read_text())["rows"])
    rows = []
    for cell in range(len(runs["before"][0])):
        first = runs["before"][0][cell]
        for field in FIRST_FIELDS:
            before, after = ([rows_[cell][field] for rows_ in runs[side]]
                             for side in ("before", "after"))
            ratio = statistics.median(a / b for b, a in zip(before, after, strict=True))
            rows.append({"mode": first["mode"], "backend": first["backend"], "field": field,
                         "before_ms": statistics.median(before),
                         "after_ms": statistics.median(after), "ratio": ratio})
            print(f"{first['mode'] + '/' + first['backend']:22} {field:>13} "
                  f"{rows[-1]['before_ms']:>10.3f} {rows[-1]['after_ms']:>9.3f} {ratio:>6.3f}",
                  flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the old checkout")
    parser.add_argument("--before-python", help="its interpreter (default: its .venv's)")
    parser.add_argument("--rounds", type=int, default=15, help="A/B rounds per step cell")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per half-round")
    parser.add_argument("--first-rounds", type=int, default=8, help="first-step A/B rounds")
    parser.add_argument("--json", default="bench-results/compare.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as `qsample bench`
    before = _load(args.before, "qsample_before")
    print(f"{'mode/backend':22} {'B':>3} {'K':>3} {'before ms':>10} {'after ms':>9} "
          f"{'ratio':>6} [min, max over rounds]")
    steps = step_rows(before, args.rounds, args.calls)
    print(f"\n{'mode/backend':22} {'field':>13} {'before ms':>10} {'after ms':>9} {'ratio':>6}")
    pythons = {"before": args.before_python or str(args.before / ".venv/bin/python"),
               "after": sys.executable}
    first = first_step_rows(pythons, args.first_rounds)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "before": str(args.before), "rounds": args.rounds, "calls": args.calls,
        "first_rounds": args.first_rounds, "torch_threads": 1, "bench": steps,
        "bench_first_step": first}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
