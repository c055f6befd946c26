"""How faithful is boltzmann sampling on today's IBM devices? The `qiskit` backend on fake IBM
devices (qiskit-ibm-runtime's snapshots of real devices: coupling map, native gates, T1/T2, gate
and read-out errors), transpiled onto each device and simulated by Aer under its noise.

    .venv/bin/python scripts/qiskit_noise.py --json docs/bench/qiskit_noise.json

For each (device, encoding, K): `qsample calibrate`'s measurement (flat and peaked logits at
T = 0.8, ``--draws`` tokens each, ``--wide-draws`` for noisy rows of more than 8 qubits,
``--num-reads`` reads per row): TV before and after the
temperature correction, the valid-read rate, β_eff with its 95% interval; and the compiled
circuit's depth and two-qubit gates after transpilation onto the device. ``aer`` (the ideal
simulator, not transpiled) is the reference row. Prints a table and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from qsample.backends import make_backend
from qsample.backends.gate_model import ENCODINGS
from qsample.tools.calibration import calibrate

DEVICES = ("aer", "fake_kingston", "fake_torino", "fake_sherbrooke")
KS = (4, 8, 16)
WIDE_QUBITS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=list(DEVICES))
    parser.add_argument("--encodings", nargs="+", default=list(ENCODINGS))
    parser.add_argument("--top-k", type=int, nargs="+", default=list(KS))
    parser.add_argument("--draws", type=int, default=1000, help="tokens per logits shape")
    parser.add_argument("--wide-draws", type=int, default=250,
                        help=f"tokens per logits shape for rows of more than {WIDE_QUBITS} qubits "
                        "on a noisy device (a noisy shot of 16 qubits takes ~0.1 s)")
    parser.add_argument("--num-reads", type=int, default=4, help="reads (shots) per row")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    print(f"{'device':16s} {'encoding':8s} {'K':>3s} {'depth':>6s} {'2q':>4s} {'TV':>6s} "
          f"{'TV corr':>7s} {'valid':>6s} {'beta_eff [95%]':>22s} {'s':>6s}")
    for device in args.devices:
        for enc in args.encodings:
            for k in args.top_k:
                params = {"device": device, "encoding": enc}
                backend = make_backend("qiskit", params)
                plan = backend.estimate(1, k, args.num_reads, 1, params=params)
                wide = device != "aer" and plan["qubits_per_row"] > WIDE_QUBITS
                draws = args.wide_draws if wide else args.draws
                start = time.perf_counter()
                result, _ = calibrate(backend, k=k, draws=draws,
                                      config={"backend_params": params,
                                              "num_reads": args.num_reads})
                row = {"device": device, "encoding": enc, "k": k,
                       "depth": plan["transpiled_depth"],
                       "two_qubit_gates": plan["two_qubit_gates"],
                       "tv": result.tv_before, "tv_corrected": result.tv_after,
                       "valid_read_rate": result.valid_read_rate, "beta_eff": result.beta_eff,
                       "beta_low": result.beta_low, "beta_high": result.beta_high,
                       "draws": result.draws, "reads": args.num_reads,
                       "seconds": time.perf_counter() - start}
                rows.append(row)
                print(f"{device:16s} {enc:8s} {k:3d} {row['depth']:6.0f} "
                      f"{row['two_qubit_gates']:4.0f} {row['tv']:6.3f} {row['tv_corrected']:7.3f}"
                      f" {row['valid_read_rate']:6.3f} {row['beta_eff']:6.3f} "
                      f"[{row['beta_low']:.3f}, {row['beta_high']:.3f}] {row['seconds']:6.0f}",
                      flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": "scripts/qiskit_noise.py", "rows": rows},
                                        indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
