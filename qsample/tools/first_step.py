"""First-step benchmark: what a new process pays before and at its first sampler step.

Each (mode, backend) runs in a fresh Python process (`CHILD`), which reports, in seconds:

- ``import``: ``import qsample`` (torch already imported, as in any LLM process);
- ``warm_up``: building the `QuantumSampler` (backend set-up, and for local backends the probe
  that loads the annealer's compiled kernels from numba's cache: `qsample warm-up` fills it);
- ``first_step``: its first ``sample`` call on logits [B, V];
- ``step``: the median of the next ``repeats`` calls.

Target: the first step within `FIRST_STEP_TARGET_MS` of a later one; the one-time load is
reported as warm-up, not as sampler time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

FIRST_STEP_TARGET_MS = 150.0
DEFAULT_COMBOS = (("gumbel", "batched-sa"), ("boltzmann", "batched-sa"), ("gumbel", "neal"))
VOCAB = 49152  # the default model's vocabulary
LOGIT_SCALE = 3.0  # logits ~ N(0, 3^2): peaked like a model's


CHILD = """
import json, statistics, sys, time
import torch
torch.set_num_threads(1)
mode, backend, batch, k, repeats, vocab = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
scale = float(sys.argv[7])
start = time.perf_counter()
from qsample import QuantumSampler, SamplerConfig
imported = time.perf_counter()
sampler = QuantumSampler(SamplerConfig(mode=mode, backend=backend, top_k=k, seed=0,
                                       temperature=0.8), telemetry=False)
built = time.perf_counter()
logits = torch.randn(batch, vocab, generator=torch.Generator().manual_seed(0)) * scale
sampler.sample(logits)
first = time.perf_counter()
later = []
for _ in range(repeats):
    begin = time.perf_counter()
    sampler.sample(logits)
    later.append(time.perf_counter() - begin)
print(json.dumps({"import": imported - start, "warm_up": built - imported,
                  "first_step": first - built, "step": statistics.median(later)}))
"""


def run_first_step(combos: Sequence[tuple[str, str]] = DEFAULT_COMBOS, batch: int = 1,
                   k: int = 64, repeats: int = 5, log: Callable[[str], None] = print
                   ) -> list[dict[str, Any]]:
    """One fresh process per combo; rows with seconds converted to milliseconds."""
    rows = []
    log(HEADER)
    for mode, backend in combos:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, mode, backend, str(batch), str(k), str(repeats),
             str(VOCAB), str(LOGIT_SCALE)],
            capture_output=True, text=True, check=True)
        seconds = json.loads(out.stdout.strip().splitlines()[-1])
        row = {"mode": mode, "backend": backend, "batch": batch, "k": k,
               **{f"{name}_ms": 1e3 * value for name, value in seconds.items()}}
        row["first_step_within_target"] = (row["first_step_ms"] - row["step_ms"]
                                           <= FIRST_STEP_TARGET_MS)
        rows.append(row)
        log(format_row(row))
    return rows


HEADER = (f"{'mode':10s} {'backend':10s} {'B':>3s} {'K':>4s} {'import ms':>10s} "
          f"{'warm-up ms':>10s} {'1st step ms':>11s} {'step ms':>8s}")


def format_row(row: dict[str, Any]) -> str:
    return (f"{row['mode']:10s} {row['backend']:10s} {row['batch']:3d} {row['k']:4d} "
            f"{row['import_ms']:10.1f} {row['warm_up_ms']:10.1f} {row['first_step_ms']:11.2f} "
            f"{row['step_ms']:8.2f}")
