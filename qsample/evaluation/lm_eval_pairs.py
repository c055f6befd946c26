"""Paired comparison of two lm-evaluation-harness runs from their per-sample logs.

lm-eval's ``--log_samples`` writes, per task, ``samples_<task>_<time>.jsonl``: one line per
document with its ``doc_id`` and a value per metric (e.g. ``exact_match``). Two runs of the same
task (plain sampling and qsample, say) are paired by ``doc_id`` and compared with the statistics
of ``qsample ab`` (`qsample.tools.stats.paired_comparison`: mean difference, bootstrap 95% CI,
sign-flip permutation p, Holm across metrics). qsample's per-sample telemetry
(``qsample_telemetry``, `qsample.plugins.lm_eval`) is summed beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..tools.stats import holm, paired_comparison
from .report import ALPHA, comparison_table

#: Fields of a sample line that are not metric values.
NOT_METRICS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter",
               "metrics", "doc_hash", "prompt_hash", "target_hash"}


def read_samples(path: str | Path) -> dict[int, dict[str, float]]:
    """{doc_id: {metric: value}} of an lm-eval samples file (numeric metric values only)."""
    out: dict[int, dict[str, float]] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            out[int(record["doc_id"])] = {
                key: float(value) for key, value in record.items()
                if key not in NOT_METRICS and isinstance(value, (int, float))}
    return out


def read_telemetry(path: str | Path) -> dict[str, float]:
    """Totals of a ``qsample_telemetry`` file: samples, tokens, fallbacks, sampler seconds, and
    samples whose telemetry could not be matched."""
    totals = {"samples": 0, "tokens": 0, "fallbacks": 0, "sampler_seconds": 0.0, "unmatched": 0}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            stats = json.loads(line)["qsample"]
            totals["samples"] += 1
            if stats is None:
                totals["unmatched"] += 1
                continue
            for key in ("tokens", "fallbacks", "sampler_seconds"):
                totals[key] += stats[key]
    return totals


def compare_runs(baseline: str | Path, arm: str | Path, *, arm_name: str = "qsample",
                 telemetry: str | Path | None = None) -> dict[str, Any]:
    """Each metric both logs have, arm minus baseline over the documents both scored."""
    base, other = read_samples(baseline), read_samples(arm)
    docs = sorted(set(base) & set(other))
    if not docs:
        raise ValueError(f"no doc_id in common between {baseline} and {arm}")
    metrics = sorted(set.intersection(*(set(base[d]) & set(other[d]) for d in docs)))
    rows = []
    for metric in metrics:
        a = np.array([other[d][metric] for d in docs])
        b = np.array([base[d][metric] for d in docs])
        rows.append({"arm": arm_name, "metric": metric, "baseline_mean": float(b.mean()),
                     "arm_mean": float(a.mean()),
                     **paired_comparison(a, b, seed=len(rows)).__dict__})
    for row, p in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        row["p_adjusted"] = float(p)
        row["significant"] = bool(np.isfinite(p) and p < ALPHA)
    return {"baseline": str(baseline), "arm": str(arm), "documents": len(docs),
            "only_baseline": len(set(base) - set(other)), "only_arm": len(set(other) - set(base)),
            "comparisons": rows,
            "telemetry": read_telemetry(telemetry) if telemetry else None}


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as markdown: means, the paired table, and qsample's telemetry."""
    lines = [f"{result['documents']} documents paired by doc_id "
             f"({result['only_baseline']} only in the baseline, {result['only_arm']} only in "
             "the arm)", ""]
    lines += [f"- {r['metric']}: baseline {r['baseline_mean']:.4f}, "
              f"{r['arm']} {r['arm_mean']:.4f}" for r in result["comparisons"]]
    lines += ["", *comparison_table(result["comparisons"])]
    if result["telemetry"]:
        t = result["telemetry"]
        lines += ["", f"qsample telemetry: {t['samples']} samples, {t['tokens']} tokens, "
                      f"{t['fallbacks']} fallbacks, {t['sampler_seconds']:.2f} sampler seconds, "
                      f"{t['unmatched']} unmatched"]
    return "\n".join(lines)
