"""Metrics, paired statistics and the report of an A/B run (metrics.json, report.md, PNGs)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import write_json, write_text
from ..tools.calibration import beta_interval, fit_beta_joint
from ..tools.stats import holm, paired_comparison
from . import dose
from .config import ABConfig, Arm
from .engine import Resampler
from .runner import KeptStep, tv_estimate
from .textmetrics import distinct_n, duplicates, is_correct, ks_uniform, self_bleu, seq_rep_n

ALPHA = 0.05
# per-sample metrics (paired by prompt, sample and member), per-prompt metrics over all of a
# prompt's samples (paired by prompt) and, for arms with n > 1, group metrics (`group_metrics`:
# each prompt's mean over its groups, paired by prompt)
SAMPLE_METRICS = ("mean_logprob", "seq_rep_4", "length", "accuracy", "mean_target_prob")
PROMPT_METRICS = ("distinct_1", "distinct_2", "distinct_3", "self_bleu")
GROUP_METRICS = ("duplicates", "group_distinct_1", "group_distinct_2", "group_self_bleu",
                 "group_mean_logprob", "any_correct")
#: Metric panels per row of metrics.png.
PLOT_COLUMNS = 8
#: MAUVE's clustering seed: any fixed value, so that a report's MAUVE scores are reproducible.
MAUVE_SEED = 25


def sample_metrics(record: dict[str, Any]) -> dict[str, float]:
    tokens = record["token_ids"]
    logprob = np.asarray(record["logprob"], dtype=np.float64)
    answer = record.get("answer")
    return {
        "mean_logprob": float(logprob.mean()) if logprob.size else float("nan"),
        "seq_rep_4": seq_rep_n(tokens, 4),
        "length": float(len(tokens)),
        "accuracy": float(is_correct(record["text"], answer)) if answer else float("nan"),
        "mean_target_prob": float(np.mean(record["target_prob"])) if tokens else float("nan"),
    }


def group_metrics(group: list[dict[str, Any]]) -> dict[str, float]:
    """Metrics of one group: the records of n siblings drawn together (one arm, prompt, sample).

    duplicates: siblings identical to an earlier sibling (`textmetrics.duplicates`, 0 .. n-1);
    group_distinct_k: distinct k-grams / k-grams over the siblings (`textmetrics.distinct_n`);
    group_self_bleu: mean BLEU-4 of each sibling against the others (`textmetrics.self_bleu`);
    group_mean_logprob: sum of the siblings' token log-probabilities under the model at T = 1
    / their number of tokens (the quality cost of diversity); any_correct: 1 if any sibling is
    correct (`textmetrics.is_correct`; best-of-n accuracy), nan for a prompt without an answer.
    """
    tokens = [r["token_ids"] for r in group]
    logprob = np.concatenate([np.asarray(r["logprob"], dtype=np.float64) for r in group])
    answer = group[0].get("answer")
    return {
        "duplicates": float(duplicates(tokens)),
        "group_distinct_1": distinct_n(tokens, 1),
        "group_distinct_2": distinct_n(tokens, 2),
        "group_self_bleu": self_bleu(tokens),
        "group_mean_logprob": float(logprob.mean()) if logprob.size else float("nan"),
        "any_correct": float(any(is_correct(r["text"], answer) for r in group)) if answer
        else float("nan"),
    }


def compute(records: list[dict[str, Any]], config: ABConfig,
            resampler: Callable[[Arm], Resampler] | None = None,
            featurize: Callable[[Sequence[str]], Any] | None = None) -> dict[str, Any]:
    """Every metric per arm, and each arm's paired comparison with the baseline.

    ``resampler`` (the engine's, `engine.Engine.resampler`) enables the TV estimate of the kept
    steps (`runner.tv_estimate`). Arms with n > 1 also get their group metrics
    (`group_metrics`), averaged over each prompt's groups.
    ``featurize(texts) -> [N, D]`` (the engine's model embedding of prompt + continuation)
    enables MAUVE of each arm against the baseline when the optional ``mauve-text`` package
    is installed (1: the two text distributions cannot be told apart by its clustering).
    """
    by_arm: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_arm[r["arm"]].append(r)
    arms = [a.name for a in config.arms if a.name in by_arm]
    units: dict[str, dict[tuple, dict[str, float]]] = {}
    prompt_units: dict[str, dict[int, dict[str, float]]] = {}
    group_units: dict[str, dict[int, dict[str, float]]] = {}
    summary: dict[str, Any] = {}
    for arm in config.arms:
        rows = by_arm.get(arm.name, [])
        if not rows:
            continue
        units[arm.name] = {(r["prompt_index"], r["sample"], r.get("member", 0)):
                           sample_metrics(r) for r in rows}
        per_prompt: dict[int, list[list[int]]] = defaultdict(list)
        for r in rows:
            per_prompt[r["prompt_index"]].append(r["token_ids"])
        prompt_units[arm.name] = {p: {"distinct_1": distinct_n(s, 1), "distinct_2":
                                      distinct_n(s, 2), "distinct_3": distinct_n(s, 3),
                                      "self_bleu": self_bleu(s)} for p, s in per_prompt.items()}
        groups_info = None
        if arm.n > 1:
            group_units[arm.name] = _group_units(rows)
            groups_info = {"groups": len({(r["prompt_index"], r["sample"]) for r in rows}),
                           "means": {m: _nanmean([u[m] for u in group_units[arm.name].values()])
                                     for m in GROUP_METRICS}}
        pits = [u for r in rows for u in r["pit"]]
        ranks = [k for r in rows for k in r["rank"]]
        ks_stat, ks_p = ks_uniform(pits)
        tokens = sum(len(r["token_ids"]) for r in rows)
        seconds = sum(r["seconds"] for r in rows)
        tv = []
        if resampler is not None and config.tv_draws:
            for r in rows:
                tv.extend(tv_estimate(r, arm, config.tv_draws, resampler))
        means = {m: _nanmean([u[m] for u in units[arm.name].values()]) for m in SAMPLE_METRICS}
        means.update({m: _nanmean([u[m] for u in prompt_units[arm.name].values()])
                      for m in PROMPT_METRICS})
        qpu = [r.get("qpu_access_time_us") for r in rows if r.get("qpu_access_time_us")]
        summary[arm.name] = {
            "label": arm.label, "kind": arm.kind, "settings": arm.config.to_dict(),
            "target_temperature": arm.target_temperature, "n": arm.n, "coupled": arm.coupled,
            "samples": len(rows), "groups": groups_info,
            "tokens": tokens, "means": means,
            "perplexity": math.exp(-means["mean_logprob"]) if np.isfinite(
                means["mean_logprob"]) else float("nan"),
            "fidelity": {"ks_statistic": ks_stat, "ks_p": ks_p,
                         "outside_candidates": int(sum(1 for k in ranks if k < 0)),
                         "rank_histogram": np.bincount([k for k in ranks if k >= 0],
                                                       minlength=1).tolist(),
                         "tv_steps": len(tv), "tv_mean": _nanmean([t.tv for t in tv]),
                         "tv_noise_floor": _nanmean([t.floor for t in tv]),
                         **_temperature(tv)},
            "cost": {"tokens_per_second": tokens / seconds if seconds else float("nan"),
                     "seconds": seconds,
                     "sampler_share": _nanratio([r.get("sampler_seconds") for r in rows],
                                                [r["seconds"] for r in rows]),
                     "backend_seconds": float(np.nansum([r.get("backend_seconds") or np.nan
                                                         for r in rows])) if any(
                         r.get("backend_seconds") for r in rows) else float("nan"),
                     "qpu_access_seconds": float(sum(qpu)) / 1e6 if qpu else None,
                     "qpu_calls": float(sum(r.get("qpu_calls") or 0 for r in rows)) or None},
        }
    _add_mauve(summary, by_arm, config.baseline, featurize)
    comparisons = _compare(config, arms, units, prompt_units, group_units)
    out = {"baseline": config.baseline, "alpha": ALPHA, "arms": summary,
           "comparisons": comparisons}
    out["dose_response"] = dose.dose_response(out, config)
    return out


def _temperature(steps: list[KeptStep]) -> dict[str, float]:
    """beta_eff of the re-sampled kept steps (`tools.calibration.fit_beta_joint`: the arm's
    tokens as softmax(beta_eff log target); 1 = its target's temperature) with its 95%
    profile-likelihood interval; nan without steps."""
    if not steps:
        return {"beta_eff": float("nan"), "beta_low": float("nan"), "beta_high": float("nan")}
    counts, targets = [t.counts for t in steps], [t.target for t in steps]
    beta = fit_beta_joint(counts, targets)
    low, high = beta_interval(counts, targets, beta)
    return {"beta_eff": beta, "beta_low": low, "beta_high": high}


def _group_units(rows: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Each prompt's mean of `group_metrics` over its groups (records of one sample)."""
    groups: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["prompt_index"], r["sample"])].append(r)
    per_prompt: dict[int, list[dict[str, float]]] = defaultdict(list)
    for (prompt, _), group in groups.items():
        per_prompt[prompt].append(group_metrics(group))
    return {p: {m: _nanmean([g[m] for g in gs]) for m in GROUP_METRICS}
            for p, gs in per_prompt.items()}


def _compare(config, arms, units, prompt_units, group_units) -> list[dict[str, Any]]:
    """Paired comparisons of each arm with the baseline: sample metrics on the (prompt, sample,
    member) units both have; prompt and group metrics only between arms of the same n (both
    depend on the number of sequences pooled)."""
    base = config.baseline
    size = {a.name: a.n for a in config.arms}
    rows = []

    def add(arm, metric, unit, arm_units, base_units):
        keys = sorted(set(arm_units) & set(base_units))
        a = np.array([arm_units[k][metric] for k in keys])
        b = np.array([base_units[k][metric] for k in keys])
        rows.append({"arm": arm, "metric": metric, "unit": unit,
                     **paired_comparison(a, b, seed=len(rows)).__dict__})

    for arm in arms:
        if arm == base or base not in units:
            continue
        for metric in SAMPLE_METRICS:
            add(arm, metric, "sample", units[arm], units[base])
        if size[arm] != size[base]:
            continue
        for metric in PROMPT_METRICS:
            add(arm, metric, "prompt", prompt_units[arm], prompt_units[base])
        if arm in group_units and base in group_units:
            for metric in GROUP_METRICS:
                add(arm, metric, "prompt", group_units[arm], group_units[base])
    adjusted = holm([r["p_value"] for r in rows])
    for r, p in zip(rows, adjusted, strict=True):
        r["p_adjusted"] = float(p)
        r["significant"] = bool(np.isfinite(p) and p < ALPHA)
    return rows


def _add_mauve(summary, by_arm, baseline: str, featurize) -> None:
    try:
        import mauve
    except ImportError:
        mauve = None
    for name in summary:
        summary[name]["mauve_vs_baseline"] = None
    if mauve is None or featurize is None or baseline not in by_arm:
        return
    texts = {name: [r["prompt"] + r["text"] for r in rows] for name, rows in by_arm.items()}
    reference = np.asarray(featurize(texts[baseline]))
    for name in summary:
        if name == baseline:
            continue
        result = mauve.compute_mauve(p_features=reference,
                                     q_features=np.asarray(featurize(texts[name])),
                                     verbose=False, seed=MAUVE_SEED)
        summary[name]["mauve_vs_baseline"] = float(result.mauve)


def _nanmean(values) -> float:
    values = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _nanratio(parts, totals) -> float:
    pairs = [(p, t) for p, t in zip(parts, totals, strict=True) if p is not None and t]
    return sum(p for p, _ in pairs) / sum(t for _, t in pairs) if pairs else float("nan")


# ------------------------------------------------------------------ writing


def write_report(metrics: dict[str, Any], config: ABConfig, out: str | Path,
                 records: list[dict[str, Any]]) -> None:
    """``metrics.json`` and ``report.md`` (each written atomically) and the plots, into ``out``."""
    out = Path(out)
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.md", render(metrics, config))
    plot(metrics, records, out)


def render(metrics: dict[str, Any], config: ABConfig) -> str:
    arms = metrics["arms"]
    base = metrics["baseline"]
    grouped = any(a["n"] > 1 for a in arms.values())
    per_prompt = (f"{config.samples} groups of n samples (n per arm below, drawn together)"
                  if grouped else f"{config.samples} samples")
    lines = ["# qsample A/B report", "",
             f"Baseline arm: **{base}**. {len(arms)} arms x {per_prompt} per prompt, "
             f"{config.max_new_tokens} new tokens, seed {config.seed}; every arm saw the same "
             "prompts and the same per-sample seeds.", "",
             "## Arms", "", "| arm | what | T (target) | top-k | n | samples | tokens/s | "
             "sampler share | QPU s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, a in arms.items():
        c = a["cost"]
        lines.append(f"| {name} | {a['label']} | {a['settings']['temperature']} "
                     f"({a['target_temperature']}) | {a['settings']['top_k']} | {a['n']} | "
                     f"{a['samples']} | {c['tokens_per_second']:.1f} | "
                     f"{_pct(c['sampler_share'])} | "
                     f"{c['qpu_access_seconds'] if c['qpu_access_seconds'] else '-'} |")
    lines += ["", "## Fidelity", "",
              "PIT: the randomised probability-integral transform of each chosen token under "
              "the arm's target is uniform for a faithful sampler (KS test). TV: exact "
              "total-variation estimate from re-sampling kept steps.", "",
              "| arm | tokens | KS stat | KS p | verdict | TV (steps) | TV noise floor |",
              "|---|---|---|---|---|---|---|"]
    for name, a in arms.items():
        f = a["fidelity"]
        verdict = ("coupled: siblings are not independent draws from the target (KS n/a)"
                   if a["coupled"] else "consistent with its target" if f["ks_p"] >= ALPHA
                   else "**not faithful**")
        lines.append(f"| {name} | {a['tokens']} | {f['ks_statistic']:.3f} | "
                     f"{f['ks_p']:.3g} | {verdict} | {f['tv_mean']:.3f} ({f['tv_steps']}) | "
                     f"{f['tv_noise_floor']:.3f} |")
    lines += ["", "## Text metrics (means per arm)", "",
              "| arm | " + " | ".join(SAMPLE_METRICS + PROMPT_METRICS)
              + " | perplexity | MAUVE vs baseline |",
              "|---|" + "---|" * (len(SAMPLE_METRICS) + len(PROMPT_METRICS) + 2)]
    for name, a in arms.items():
        values = [a["means"][m] for m in SAMPLE_METRICS + PROMPT_METRICS]
        score = a.get("mauve_vs_baseline")
        lines.append(f"| {name} | " + " | ".join(f"{v:.4g}" for v in values)
                     + f" | {a['perplexity']:.4g} | "
                     + (f"{score:.3f}" if score is not None else "-") + " |")
    lines += ["", "MAUVE (when `mauve-text` is installed; transformers engine): each arm's "
              "continuations against the baseline's, on the model's own mean hidden states; "
              "1 = indistinguishable to its clustering, and with few samples it is noisy."]
    lines += ["", f"## Differences from the baseline ({base})", "",
              "Paired by (prompt, sample, member) or by prompt; 95% percentile bootstrap interval "
              "of the mean difference (detectable: the smallest difference this many pairs "
              "detect with probability 0.8), two-sided sign-flip permutation test, "
              f"Holm-adjusted over every (arm, metric) pair at α = {ALPHA}. Per-prompt metrics "
              "compare only arms with the baseline's n.", ""]
    lines += comparison_table([c for c in metrics["comparisons"]
                                if c["metric"] not in GROUP_METRICS])
    if grouped:
        lines += _groups_section(metrics)
    lines += dose.section(metrics)
    different = {c["arm"] for c in metrics["comparisons"] if c["significant"]}
    lines += ["", "## In one line per arm", ""]
    for name in arms:
        if name == base:
            continue
        if name in different:
            which = [c["metric"] for c in metrics["comparisons"]
                     if c["arm"] == name and c["significant"]]
            lines.append(f"- **{name}** differs from {base} in: {', '.join(which)}.")
        else:
            missing = [c["metric"] for c in metrics["comparisons"]
                       if c["arm"] == name and not compared(c)]
            lines.append(f"- **{name}** is statistically indistinguishable from {base} on every "
                         "text metric it has values for at this sample size"
                         + (f" (n/a: {', '.join(missing)})." if missing else "."))
    lines += ["", "Plots: `metrics.png` (differences with intervals), `fidelity.png` (chosen "
              "rank and target-probability histograms), `latency.png`"
              + (", `dose-response.png`." if metrics.get("dose_response") else "."), ""]
    return "\n".join(lines)


def compared(comparison: dict[str, Any]) -> bool:
    """Whether a paired comparison has a result: a finite difference and p-value (a metric with
    no values, such as a task with no answers, has neither)."""
    return bool(np.isfinite(comparison["difference"]) and np.isfinite(comparison["p_value"]))


def verdict_of(comparison: dict[str, Any]) -> str:
    """"**different**" (significant after Holm's correction), "statistically
    indistinguishable", or "n/a" where there was nothing to compare (`compared`)."""
    if not compared(comparison):
        return "n/a (no values)"
    return "**different**" if comparison["significant"] else "statistically indistinguishable"


def comparison_table(comparisons: list[dict[str, Any]]) -> list[str]:
    """Markdown rows of paired comparisons (arm, metric, difference, CI, detectable, p, Holm p,
    verdict)."""
    lines = ["| arm | metric | difference | 95% CI | detectable | p | p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        verdict = verdict_of(c)
        lines.append(f"| {c['arm']} | {c['metric']} | {c['difference']:+.4g} | "
                     f"[{c['low']:+.4g}, {c['high']:+.4g}] | "
                     f"±{c.get('detectable', float('nan')):.3g} | {c['p_value']:.3g} | "
                     f"{c['p_adjusted']:.3g} | {verdict} |")
    return lines


def _groups_section(metrics: dict[str, Any]) -> list[str]:
    """The "Groups" section: group metrics of the arms with n > 1 and their comparisons."""
    base = metrics["baseline"]
    lines = ["", "## Groups (n samples of a prompt drawn together)", "",
             "Per group of siblings (one arm, prompt and sample), averaged over each prompt's "
             "groups, then over prompts. duplicates: siblings identical to an earlier sibling "
             "(n - distinct sequences, 0 to n-1); distinct-k: distinct k-grams / k-grams over "
             "the siblings; self-BLEU: mean BLEU-4 of each sibling against the others (higher: "
             "less diverse); mean log-prob: log-likelihood per token under the model at T = 1 "
             "over the group's tokens (the quality cost of diversity); any-correct: 1 if any "
             "sibling's answer is right (best-of-n accuracy, prompts with answers only).", "",
             "| arm | n | coupling (scope) | groups | duplicates | distinct-1 | distinct-2 | "
             "self-BLEU | mean log-prob | any-correct |", "|---" * 10 + "|"]
    for name, a in metrics["arms"].items():
        if a["groups"] is None:
            continue
        coupling = (f"{a['settings']['coupling']} ({a['settings']['coupling_scope']})"
                    if a["coupled"] else "independent")
        lines.append(f"| {name} | {a['n']} | {coupling} | {a['groups']['groups']} | "
                     + " | ".join(f"{a['groups']['means'][m]:.4g}" for m in GROUP_METRICS)
                     + " |")
    comparisons = [c for c in metrics["comparisons"] if c["metric"] in GROUP_METRICS]
    if comparisons:
        lines += ["", f"Against {base}, paired by prompt (the same bootstrap, permutation test "
                  "and Holm family as above; arms with the baseline's n only):", ""]
        lines += comparison_table(comparisons)
    return lines


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%" if value == value else "-"


def plot(metrics: dict[str, Any], records: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps = metrics["comparisons"]
    names = list(dict.fromkeys(c["metric"] for c in comps))
    arms = list(dict.fromkeys(c["arm"] for c in comps))
    if comps:
        columns = min(len(names), PLOT_COLUMNS)
        lines = math.ceil(len(names) / columns)
        fig, axes = plt.subplots(lines, columns, figsize=(2.6 * columns, 3.2 * lines),
                                 squeeze=False)
        for ax in axes.flat[len(names):]:
            ax.set_visible(False)
        for ax, metric in zip(axes.flat[: len(names)], names, strict=True):
            for i, arm in enumerate(arms):
                c = next((x for x in comps if x["arm"] == arm and x["metric"] == metric), None)
                if c is None:  # not compared: the arm's n is not the baseline's
                    continue
                ax.errorbar([i], [c["difference"]], yerr=[[c["difference"] - c["low"]],
                                                          [c["high"] - c["difference"]]],
                            fmt="o", color="C3" if c["significant"] else "C0")
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=7)
            ax.set_title(metric, fontsize=8)
        fig.suptitle(f"arm - {metrics['baseline']} (95% CI; red: Holm p < {ALPHA})", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "metrics.png", dpi=100)
        plt.close(fig)
    by_arm: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_arm[r["arm"]].append(r)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, rows in by_arm.items():
        ranks = [k for r in rows for k in r["rank"] if k >= 0]
        probs = [p for r in rows for p in r["target_prob"]]
        axes[0].hist(ranks, bins=range(0, max(ranks, default=0) + 2), histtype="step",
                     density=True, label=name)
        axes[1].hist(probs, bins=20, range=(0, 1), histtype="step", density=True, label=name)
    axes[0].set_xlabel("chosen rank among candidates")
    axes[1].set_xlabel("target probability of the chosen token")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fidelity.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3))
    arm_names = list(metrics["arms"])
    ax.bar(range(len(arm_names)), [metrics["arms"][a]["cost"]["tokens_per_second"]
                                   for a in arm_names])
    ax.set_xticks(range(len(arm_names)), arm_names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("tokens/s")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)
    dose.plot(metrics, out)
