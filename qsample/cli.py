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
