"""Before/after step benchmarks of two qsample checkouts, measured in one run.

Runs ``qsample bench`` and ``qsample bench-first-step`` with each interpreter in turn (A B A B
...: both sides see the same machine state), takes each cell's median over the rounds, and prints
and writes the after/before ratios:

    python scripts/compare_bench.py --before OLD/.venv/bin/python --after .venv/bin/python \\
        --json docs/bench/pipeline_compare.json

Each interpreter imports the qsample it has installed (an editable install of its checkout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

STEP_ARGS = ["bench", "--batch", "1", "8", "64", "--top-k", "16", "64", "--combos",
             "gumbel/batched-sa", "boltzmann/batched-sa", "gumbel/neal", "--repeats", "25"]
FIRST_ARGS = ["bench-first-step", "--repeats", "15"]
STEP_KEY = ("mode", "backend", "batch", "k")
FIRST_KEY = ("mode", "backend")
FIRST_FIELDS = ("import_ms", "warm_up_ms", "first_step_ms", "step_ms")


def _run(python: str, args: list[str], folder: Path, name: str) -> list[dict]:
    path = folder / f"{name}.json"
    subprocess.run([python, "-m", "qsample.cli", *args, "--json", str(path)], check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads(path.read_text())["rows"]


def _medians(runs: list[list[dict]], key: tuple[str, ...], fields: tuple[str, ...]) -> dict:
    """Each cell's median of ``fields`` over the rounds ``runs``."""
    cells: dict[tuple, dict[str, list[float]]] = {}
    for rows in runs:
        for row in rows:
            cell = cells.setdefault(tuple(row[k] for k in key), {f: [] for f in fields})
            for f in fields:
                cell[f].append(float(row[f]))
    return {cell: {f: statistics.median(v) for f, v in values.items()}
            for cell, values in cells.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the old checkout's python")
    parser.add_argument("--after", required=True, help="the new checkout's python")
    parser.add_argument("--rounds", type=int, default=6, help="A/B rounds (median over them)")
    parser.add_argument("--json", default="bench-results/compare.json")
    args = parser.parse_args()
    sides = {"before": args.before, "after": args.after}
    runs: dict[str, dict[str, list]] = {side: {"step": [], "first": []} for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            for side, python in sides.items():
                runs[side]["step"].append(_run(python, STEP_ARGS, Path(tmp), f"s{side}{index}"))
                runs[side]["first"].append(_run(python, FIRST_ARGS, Path(tmp), f"f{side}{index}"))
    step = {side: _medians(runs[side]["step"], STEP_KEY, ("median_ms",)) for side in sides}
    first = {side: _medians(runs[side]["first"], FIRST_KEY, FIRST_FIELDS) for side in sides}
    rows = []
    print(f"{'mode/backend':24} {'B':>3} {'K':>3} {'before ms':>10} {'after ms':>9} {'ratio':>6}")
    for cell, before in step["before"].items():
        after = step["after"][cell]["median_ms"]
        ratio = after / before["median_ms"]
        rows.append({"benchmark": "bench", **dict(zip(STEP_KEY, cell, strict=True)),
                     "before_ms": before["median_ms"], "after_ms": after, "ratio": ratio})
        print(f"{cell[0] + '/' + cell[1]:24} {cell[2]:>3} {cell[3]:>3} "
              f"{before['median_ms']:>10.3f} {after:>9.3f} {ratio:>6.2f}")
    print(f"\n{'mode/backend':24} {'field':>13} {'before ms':>10} {'after ms':>9} {'ratio':>6}")
    for cell, before in first["before"].items():
        for field in FIRST_FIELDS:
            after = first["after"][cell][field]
            ratio = after / before[field] if before[field] else float("nan")
            rows.append({"benchmark": "bench-first-step", "mode": cell[0], "backend": cell[1],
                         "field": field, "before_ms": before[field], "after_ms": after,
                         "ratio": ratio})
            print(f"{cell[0] + '/' + cell[1]:24} {field:>13} {before[field]:>10.3f} "
                  f"{after:>9.3f} {ratio:>6.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rounds": args.rounds, "step_args": STEP_ARGS,
                                           "first_step_args": FIRST_ARGS, "rows": rows,
                                           "runs": runs}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
