"""Dose-response of an A/B run: each qsample arm's measured infidelity against its text
metrics' differences from the baseline, and the smallest difference the run could detect at its
sample size. A ``[[sweeps]]`` table's arms make one series along its knob; a listed qsample arm
(a machine to place on the curve, say) is a series of one point, named after the arm.

Infidelity is measured three ways per arm (`report.compute`): TV of re-sampled kept steps (with
the noise floor a faithful sampler shows at that many draws), the KS statistic of the chosen
tokens' randomised PIT, and beta_eff (the arm's tokens fitted as softmax(beta_eff log target);
1 is faithful). Text differences are the report's paired comparisons (bootstrap interval, Holm
over the whole run); ``detectable`` is the difference the run would detect with probability
0.8 (`tools.stats.detectable_difference`), so "no change" reads as "no change larger than that".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .config import ABConfig

#: The text metrics a dose-response relates to infidelity (sample and prompt metrics).
DOSE_METRICS = ("mean_logprob", "seq_rep_4", "length", "distinct_2", "self_bleu")
_FIDELITY = ("tv_mean", "tv_noise_floor", "ks_statistic", "ks_p", "beta_eff", "beta_low",
             "beta_high")


def dose_response(metrics: dict[str, Any], config: ABConfig) -> list[dict[str, Any]]:
    """One row per qsample arm (and per swept arm, the baseline included where a sweep holds
    it), in the config's order: ``sweep`` (the sweep's name, or a listed arm's own), ``arm``,
    ``dose`` (the knob's value; None for a listed arm),
    its fidelity figures (``tv_mean``, ``tv_noise_floor``, ``ks_statistic``, ``ks_p``,
    ``beta_eff`` with ``beta_low``/``beta_high``) and ``differences[metric]`` (the comparison
    with the baseline; zeros for the baseline itself), ``changed`` naming the metrics that
    differ after Holm's correction."""
    rows = []
    for arm in config.arms:
        if arm.name not in metrics["arms"] or not (arm.sweep or arm.kind == "qsample"):
            continue
        fidelity = metrics["arms"][arm.name]["fidelity"]
        differences = {}
        for metric in DOSE_METRICS:
            if arm.name == metrics["baseline"]:
                differences[metric] = {"difference": 0.0, "low": 0.0, "high": 0.0,
                                       "significant": False, "detectable": math.nan}
                continue
            c = next((c for c in metrics["comparisons"]
                      if c["arm"] == arm.name and c["metric"] == metric), None)
            if c is not None:
                differences[metric] = {k: c[k] for k in ("difference", "low", "high",
                                                          "p_adjusted", "significant",
                                                          "detectable")}
        rows.append({"sweep": arm.sweep or arm.name, "arm": arm.name, "dose": arm.dose,
                     **{k: fidelity.get(k, math.nan) for k in _FIDELITY},
                     "differences": differences,
                     "changed": [m for m, d in differences.items() if d["significant"]]})
    return rows


def threshold(rows: list[dict[str, Any]], sweep: str) -> dict[str, Any]:
    """Where text first changes along ``sweep``, ordering its arms by TV: ``changed_at``, the
    lowest TV of an arm with a detected difference (None: none), and ``unchanged_up_to``, the
    highest TV below it of an arm with none."""
    arms = sorted((r for r in rows if r["sweep"] == sweep and math.isfinite(r["tv_mean"])),
                  key=lambda r: r["tv_mean"])
    changed = next((r for r in arms if r["changed"]), None)
    below = [r for r in arms if not r["changed"]
             and (changed is None or r["tv_mean"] < changed["tv_mean"])]
    return {"changed_at": changed["tv_mean"] if changed else None,
            "changed_arm": changed["arm"] if changed else None,
            "unchanged_up_to": below[-1]["tv_mean"] if below else None}


def dose_label(row: dict[str, Any], listed: str = "-") -> str:
    """A row's knob value, or ``listed`` for a listed arm (no knob)."""
    return listed if row["dose"] is None else f"{row['dose']:g}"


def section(metrics: dict[str, Any]) -> list[str]:
    """The report's "Dose-response" section (none without qsample arms)."""
    rows = metrics.get("dose_response") or []
    if not rows:
        return []
    base = metrics["baseline"]
    lines = ["", "## Dose-response", "",
             "Each qsample arm's measured infidelity (TV of re-sampled kept steps, its noise "
             "floor, the PIT's KS statistic, beta_eff with its 95% profile-likelihood interval; "
             f"1 is faithful) against its text differences from {base} (95% bootstrap interval; "
             "**bold**: different after Holm). ± is the smallest difference this run detects "
             "with probability 0.8 (α = 0.05): an interval inside it says the change, if any, "
             "is smaller than that. Plot: `dose-response.png`.", ""]
    head = "| sweep | value | TV (floor) | KS | β_eff [95% CI] | " + " | ".join(DOSE_METRICS)
    lines += [head + " |", "|---" * (5 + len(DOSE_METRICS)) + "|"]
    for r in rows:
        cells = []
        for metric in DOSE_METRICS:
            d = r["differences"].get(metric)
            if d is None:
                cells.append("-")
                continue
            text = f"{d['difference']:+.3g} [{d['low']:+.3g}, {d['high']:+.3g}]"
            if math.isfinite(d["detectable"]):
                text += f" ±{d['detectable']:.2g}"
            cells.append(f"**{text}**" if d["significant"] else text)
        lines.append(f"| {r['sweep']} | {dose_label(r)} | {r['tv_mean']:.3f} "
                     f"({r['tv_noise_floor']:.3f}) | {r['ks_statistic']:.3f} | "
                     f"{r['beta_eff']:.3f} [{r['beta_low']:.3f}, {r['beta_high']:.3f}] | "
                     + " | ".join(cells) + " |")
    lines.append("")
    for sweep in dict.fromkeys(r["sweep"] for r in rows):
        t = threshold(rows, sweep)
        if t["changed_at"] is None:
            lines.append(f"- **{sweep}**: no text metric changed detectably at any TV measured "
                         f"(up to {t['unchanged_up_to']:.3f})." if t["unchanged_up_to"]
                         is not None else f"- **{sweep}**: no TV measured.")
        else:
            below = (f"; unchanged up to TV {t['unchanged_up_to']:.3f}"
                     if t["unchanged_up_to"] is not None else "")
            lines.append(f"- **{sweep}**: text first changes detectably at TV "
                         f"{t['changed_at']:.3f} ({t['changed_arm']}){below}.")
    return lines


def plot(metrics: dict[str, Any], out: Path) -> None:
    """``out/dose-response.png`` of one run (`plot_rows`); nothing without qsample arms."""
    rows = metrics.get("dose_response") or []
    if rows:
        plot_rows(rows, metrics["baseline"], out / "dose-response.png")


def plot_studies(folders: list[Path], path: Path) -> None:
    """The sweeps of several runs' ``metrics.json`` on one plot (`plot_rows`), each sweep named
    ``<folder>: <sweep>``; the baseline named in the title is each run's own."""
    rows, baselines = [], []
    for folder in folders:
        metrics = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
        baselines.append(metrics["baseline"])
        rows += [{**r, "sweep": f"{Path(folder).name}: {r['sweep']}"}
                 for r in metrics.get("dose_response") or []]
    if not rows:
        raise ValueError("no dose-response rows in " + ", ".join(map(str, folders)))
    plot_rows(rows, "/".join(dict.fromkeys(baselines)), Path(path))


def plot_rows(rows: list[dict[str, Any]], baseline: str, path: Path) -> None:
    """One panel per `DOSE_METRICS` entry: each arm's difference from the baseline (95%
    interval, labelled with its dose; red: different after Holm) against its TV, one colour
    per sweep, the shaded band the median detectable difference of the sweep's arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sweeps = list(dict.fromkeys(r["sweep"] for r in rows))
    fig, axes = plt.subplots(1, len(DOSE_METRICS), figsize=(3.2 * len(DOSE_METRICS), 3.4),
                             squeeze=False)
    for ax, metric in zip(axes[0], DOSE_METRICS, strict=True):
        for colour, sweep in enumerate(sweeps):
            points = [(r, r["differences"][metric]) for r in rows
                      if r["sweep"] == sweep and metric in r["differences"]]
            if not points:
                continue
            x = np.array([r["tv_mean"] for r, _ in points])
            y = np.array([d["difference"] for _, d in points])
            err = np.array([[d["difference"] - d["low"], d["high"] - d["difference"]]
                            for _, d in points]).T
            ax.errorbar(x, y, yerr=err, fmt="o-", color=f"C{colour}", label=sweep, ms=4, lw=1)
            for (r, d), xi, yi in zip(points, x, y, strict=True):
                ax.annotate(dose_label(r, ""), (xi, yi), fontsize=6, xytext=(2, 2),
                            textcoords="offset points",
                            color="C3" if d["significant"] else "k")
            band = np.nanmedian([d["detectable"] for _, d in points])
            if np.isfinite(band):
                ax.axhspan(-band, band, color=f"C{colour}", alpha=0.08)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("TV at kept steps")
        ax.set_title(f"{metric} − {baseline}", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("dose-response: text difference (95% CI; red label: Holm p < 0.05) against "
                 "measured infidelity; band: detectable difference", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
