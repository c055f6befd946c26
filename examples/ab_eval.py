"""The A/B harness from Python (the same engine as `qsample ab --config examples/ab.toml`).

Runs the config, writes samples.jsonl, metrics.json, report.md and plots to ab-results/, and
prints each arm's fidelity verdict and its differences from the baseline.
"""

import sys

from qsample.evaluation.config import load_config
from qsample.evaluation.report import compute, write_report
from qsample.evaluation.runner import run_ab
from qsample.plugins.transformers.ab_engine import TransformersEngine
from qsample.plugins.transformers.models import load_model


def main(config_path: str = "examples/ab.toml", out: str = "ab-results") -> None:
    config = load_config(config_path)
    model, tokenizer = load_model(config.model)  # None: the embedded default model
    engine = TransformersEngine(model, tokenizer, chat=config.chat)
    records = run_ab(config, engine, out)
    metrics = compute(records, config, engine.resampler, engine.features)
    write_report(metrics, config, out, records)
    for name, arm in metrics["arms"].items():
        print(f"{name:24s} KS p = {arm['fidelity']['ks_p']:.3g}   "
              f"tokens/s = {arm['cost']['tokens_per_second']:.1f}")
    for c in metrics["comparisons"]:
        if c["significant"]:
            print(f"{c['arm']} differs from {metrics['baseline']} in {c['metric']}: "
                  f"{c['difference']:+.3g} [{c['low']:+.3g}, {c['high']:+.3g}]")
    print(f"report: {out}/report.md")


if __name__ == "__main__":
    main(*sys.argv[1:])
