"""Use any dimod sampler as the backend, and read the telemetry.

Run inside the set-up environment: `python examples/custom_sampler.py`.

qsample passes a user sampler the parameters it declares in ``sampler.parameters``
(``num_reads``, ``seed``, ``num_sweeps``, ``beta_range``; for boltzmann also ``beta``) and one BQM
per row (``batching="union"`` sends the whole step as one disjoint union instead). Here the
sampler is dwave-samplers' simulated annealer used directly, with Metropolis acceptance and a
linear schedule passed through ``backend_params``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from dwave.samplers import SimulatedAnnealingSampler

from qsample import QuantumSampler, SamplerConfig

torch.set_num_threads(1)


def main() -> None:
    config = SamplerConfig(
        mode="gumbel",
        backend=SimulatedAnnealingSampler(),
        batching="union",
        top_k=32,
        temperature=0.7,
        num_reads=5,
        num_sweeps=40,
        beta_range=(0.1, 10.0),
        backend_params={"beta_schedule_type": "linear",
                        "proposal_acceptance_criteria": "Metropolis"},
        seed=0,
    )
    sampler = QuantumSampler(config)
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(1)) * 3
    for _ in range(5):  # five decoding steps of a batch of four
        print("tokens:", sampler.sample(logits).tolist())

    trace = Path(tempfile.mkdtemp()) / "trace.jsonl"
    lines = sampler.telemetry.write_jsonl(trace)
    first = json.loads(trace.read_text().splitlines()[0])
    print(f"wrote {lines} records to {trace}; the first one:")
    print(json.dumps(first, indent=2))
    print("summary:", json.dumps(sampler.telemetry.summary(), indent=2))


if __name__ == "__main__":
    main()
