"""How many rows of one decoding step a D-Wave QPU call holds, on Advantage2's Zephyr Z(12, 4)
and Advantage's Pegasus P16 (the stand-ins' full graphs), and the chain lengths of the clique
embeddings qsample packs.

    .venv/bin/python scripts/qpu_packing.py --json docs/bench/qpu_packing.json

Prints one row per (topology, K) and writes them as JSON. The packing is qsample's own
(`qsample.backends.dwave.EmbeddingPacking`: disjoint busclique embeddings, greedily), so the
figures are what `qsample generate --backend dwave-mock --dry-run` reports."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from qsample.backends.dwave import TOPOLOGIES
from qsample.backends.dwave_mock import MockDWaveBackend

KS = (8, 16, 32, 64)
MANY_ROWS = 100_000  # more rows than any call holds: the call is full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-k", type=int, nargs="+", default=list(KS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for topology in TOPOLOGIES:
            backend = MockDWaveBackend(topology=topology, embedding_folder=folder)
            qubits = len(backend.sampler.to_networkx_graph())
            for k in args.top_k:
                start = time.perf_counter()
                cliques = backend.packing.cliques(k, MANY_ROWS)
                chains = np.array([len(chain) for clique in cliques for chain in clique.values()])
                row = {"topology": backend.topology, "qubits": qubits, "k": k,
                       "rows_per_call": len(cliques), "chain_mean": float(chains.mean()),
                       "chain_max": int(chains.max()),
                       "qubits_used": int(chains.sum()),
                       "search_seconds": time.perf_counter() - start}
                rows.append(row)
                print(f"{row['topology']:15s} K={k:3d}  rows/call {row['rows_per_call']:4d}  "
                      f"chain mean {row['chain_mean']:.2f} max {row['chain_max']:2d}  "
                      f"qubits used {row['qubits_used']:5d}/{qubits}  "
                      f"({row['search_seconds']:.1f} s to pack)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
