"""The ``qsample`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import DEFAULT_COMBOS, format_table, run_bench, write_json

    torch.set_num_threads(args.threads)
    combos = DEFAULT_COMBOS
    if args.combos:
        combos = tuple(tuple(c.split("/", 1)) for c in args.combos)
    if args.quick:
        args.batch, args.k, args.repeats = [1, 8], [16], 3
    print(f"qsample bench: V={args.vocab}, repeats={args.repeats}, torch threads={args.threads}",
          file=sys.stderr)
    rows = run_bench(args.batch, args.k, combos, args.vocab, args.repeats,
                     log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(rows))
    write_json(rows, args.json, vocab=args.vocab, command=" ".join(sys.argv))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from .config import SamplerConfig
    from .fidelity import measure, reference_logits

    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'mode':10s} {'backend':8s} {'shape':7s} {'K':>4s} {'draws':>6s} {'dof':>4s} "
          f"{'p':>9s} {'TV':>7s} {'valid':>6s} {'ms/token':>9s}")
    for mode in args.mode:
        for backend in args.backend:
            for k in args.k:
                for shape in args.shape:
                    config = SamplerConfig.from_dict(
                        {"mode": mode, "backend": backend, "top_k": k, "seed": args.seed,
                         "temperature": args.temperature, **dict(args.set or [])})
                    result = measure(config, reference_logits(shape, k), args.draws)
                    row = {"mode": mode, "backend": backend, "shape": shape, "k": k,
                           "config": config.to_dict(), **result.to_dict()}
                    rows.append(row)
                    fit = result.fit
                    valid = result.telemetry["valid_read_rate"] or 0.0
                    print(f"{mode:10s} {backend:8s} {shape:7s} {k:4d} {fit.draws:6d} "
                          f"{fit.dof:4d} {fit.p_value:9.2e} {fit.tv:7.4f} {valid:6.3f} "
                          f"{1e3 * result.seconds / fit.draws:9.3f}", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows},
                                              indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qsample", description=__doc__)
    parser.add_argument("--version", action="version", version=f"qsample {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="sampler step time vs the classical floor")
    bench.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64], help="batch sizes B")
    bench.add_argument("--k", type=int, nargs="+", default=[16, 64], help="candidate counts K")
    bench.add_argument("--vocab", type=int, default=49152, help="vocabulary size V")
    bench.add_argument("--combos", nargs="+", metavar="MODE/BACKEND",
                       help="mode/backend pairs (default: gumbel/neal boltzmann/neal gumbel/tabu "
                            "gumbel/tree boltzmann/tree)")
    bench.add_argument("--repeats", type=int, default=5, help="timed repeats per cell (median)")
    bench.add_argument("--threads", type=int, default=1, help="torch threads")
    bench.add_argument("--json", default="bench-results/sampler_step.json", help="JSON output")
    bench.add_argument("--quick", action="store_true", help="B in {1, 8}, K = 16, 3 repeats")
    bench.set_defaults(func=_bench)

    fid = sub.add_parser("fidelity", help="chi-square / TV of sampled tokens vs the exact target")
    fid.add_argument("--mode", nargs="+", default=["gumbel", "boltzmann"])
    fid.add_argument("--backend", nargs="+", default=["neal"])
    fid.add_argument("--k", type=int, nargs="+", default=[16, 64], help="candidate counts K")
    fid.add_argument("--shape", nargs="+", default=["flat", "peaked"], help="flat and/or peaked")
    fid.add_argument("--draws", type=int, default=20_000)
    fid.add_argument("--temperature", type=float, default=0.8)
    fid.add_argument("--seed", type=int, default=2024)
    fid.add_argument("--set", type=_key_value, nargs="*", metavar="FIELD=VALUE",
                     help="other SamplerConfig fields, e.g. penalty=2 num_sweeps=50")
    fid.add_argument("--threads", type=int, default=1, help="torch threads")
    fid.add_argument("--json", help="write the rows as JSON here")
    fid.set_defaults(func=_fidelity)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # configuration errors name the field
        print(f"qsample: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
