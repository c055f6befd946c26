"""`qsample ab`: the A/B harness must confirm what is true and refute what is not.

Sanity built into the tests (on the tiny Llama): an arm that is the baseline under another name
is reported as statistically indistinguishable on every text metric and consistent with its
target; a deliberately distorted arm (qsample sampling at T x 2 while claiming the baseline's
T) is rejected by the fidelity KS test and by at least one text metric. Also: the prompt
loaders, the statistics, resumption and the output files.
"""

import json

import numpy as np
import pytest

from qsample.errors import ConfigError
from qsample.evaluation.config import config_from_dict, load_config
from qsample.evaluation.prompts import DEFAULT_PROMPTS, load_prompts
from qsample.evaluation.report import compute, write_report
from qsample.evaluation.runner import run_ab
from qsample.evaluation.textmetrics import distinct_n, is_correct, pit, self_bleu, seq_rep_n
from qsample.tools.stats import holm, paired_comparison

# KS tests of fixed-seed runs: a faithful arm fails with probability ALPHA; the distorted one
# must fall below it (it does by orders of magnitude)
ALPHA = 1e-3


def tiny_config(prompts_file, samples=4, tokens=10):
    return config_from_dict({
        "run": {"prompts": str(prompts_file), "samples": samples, "max_new_tokens": tokens,
                "seed": 1, "tv_prompts": 1, "tv_steps": 2, "tv_draws": 300},
        "sampling": {"temperature": 0.8, "top_k": 16},
        "arms": [
            {"name": "plain", "kind": "plain"},
            # the baseline again with its own seed: independent draws from the same distribution
            {"name": "plain again", "kind": "plain", "seed": 99},
            {"name": "gumbel", "kind": "qsample", "mode": "gumbel"},
            {"name": "distorted", "kind": "qsample", "mode": "gumbel", "temperature": 1.6,
             "target_temperature": 0.8},
        ]})


@pytest.fixture(scope="module")
def ab_run(tiny_llama_dir, tmp_path_factory):
    from qsample.plugins.transformers.ab_engine import TransformersEngine
    from qsample.plugins.transformers.models import load_model

    out = tmp_path_factory.mktemp("ab")
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(["the annealer said", "a quantum", "once upon a time",
                                  "the robot", "in the forest", "two plus three is",
                                  "the capital of", "we went to"]))
    config = tiny_config(prompts)
    model, tokenizer = load_model(str(tiny_llama_dir))
    engine = TransformersEngine(model, tokenizer)
    records = run_ab(config, engine, out, progress=False, log=lambda _: None)
    metrics = compute(records, config, engine.resampler, engine.features)
    write_report(metrics, config, out, records)
    return config, engine, out, records, metrics


def verdicts(metrics, arm):
    return {c["metric"]: c for c in metrics["comparisons"] if c["arm"] == arm}


def test_the_baseline_under_another_name_is_indistinguishable(ab_run):
    _, _, _, records, metrics = ab_run
    again = verdicts(metrics, "plain again")
    assert not any(c["significant"] for c in again.values())
    # a replicate, not a copy: other texts, so the comparison had differences to judge
    texts = {(r["arm"], r["prompt_index"], r["sample"]): r["text"] for r in records}
    assert sum(texts["plain", p, s] != texts["plain again", p, s]
               for _, p, s in texts if _ == "plain") >= len(texts) // 8
    assert any(c["difference"] != 0 for c in again.values())
    assert metrics["arms"]["plain again"]["fidelity"]["ks_p"] >= ALPHA
    assert metrics["arms"]["plain"]["fidelity"]["ks_p"] >= ALPHA


def test_qsample_at_the_same_settings_is_consistent_with_its_target(ab_run):
    _, _, _, _, metrics = ab_run
    assert metrics["arms"]["gumbel"]["fidelity"]["ks_p"] >= ALPHA
    assert metrics["arms"]["gumbel"]["fidelity"]["outside_candidates"] == 0


def test_a_distorted_arm_is_detected_by_ks_and_a_text_metric(ab_run):
    _, _, _, _, metrics = ab_run
    assert metrics["arms"]["distorted"]["fidelity"]["ks_p"] < ALPHA
    assert any(c["significant"] for c in verdicts(metrics, "distorted").values())
    assert verdicts(metrics, "distorted")["mean_logprob"]["difference"] < 0


def test_mauve_when_installed(ab_run):
    pytest.importorskip("mauve")
    _, _, _, _, metrics = ab_run
    assert metrics["arms"]["plain"]["mauve_vs_baseline"] is None  # the baseline itself
    for name in ("plain again", "gumbel", "distorted"):
        assert 0 < metrics["arms"][name]["mauve_vs_baseline"] <= 1


def test_outputs_and_report(ab_run):
    _, _, out, records, metrics = ab_run
    assert len(records) == 4 * 8 * 4
    lines = (out / "samples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert {"prompt", "text", "token_ids", "rank", "pit", "logprob", "seed"} <= set(first)
    assert len(first["pit"]) == len(first["token_ids"])
    qsample_record = next(r for r in records if r["arm"] == "gumbel")
    assert len(qsample_record["telemetry"]) == len(qsample_record["token_ids"])
    assert {"energy", "valid_reads", "fallback"} <= set(qsample_record["telemetry"][0])
    report = (out / "report.md").read_text()
    assert "statistically indistinguishable" in report and "**not faithful**" in report
    assert json.loads((out / "metrics.json").read_text())["baseline"] == "plain"
    for name in ("metrics.png", "fidelity.png", "latency.png"):
        assert (out / name).stat().st_size > 5000
    assert metrics["arms"]["gumbel"]["fidelity"]["tv_steps"] == 2
    assert metrics["arms"]["gumbel"]["cost"]["sampler_share"] > 0


def test_a_rerun_resumes_and_skips_finished_samples(ab_run):
    config, engine, out, records, _ = ab_run
    calls = []

    class Counting:
        def generate(self, *args, **kwargs):
            calls.append(args)
            return engine.generate(*args, **kwargs)

    again = run_ab(config, Counting(), out, progress=False, log=lambda _: None)
    assert calls == [] and len(again) == len(records)
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join(lines[:-3]) + "\n")  # an interrupted run
    run_ab(config, Counting(), out, progress=False, log=lambda _: None)
    assert len(calls) == 3


def test_same_prompts_and_seeds_in_every_arm_but_a_replicate(ab_run):
    _, _, _, records, _ = ab_run
    seeds, replicate = {}, {}
    for r in records:
        into = replicate if r["arm"] == "plain again" else seeds  # the arm with its own seed
        into.setdefault((r["prompt_index"], r["sample"]), set()).add(r["seed"])
    assert all(len(s) == 1 for s in seeds.values())
    assert all(replicate[key].isdisjoint(seeds[key]) for key in seeds)


# ------------------------------------------------------------------ units


def test_text_metrics():
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 1) == pytest.approx(4 / 6)
    assert seq_rep_n([1, 2, 3, 4, 1, 2, 3, 4], 4) == pytest.approx(1 - 4 / 5)
    assert self_bleu([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]) == pytest.approx(1.0)
    assert self_bleu([[1, 2, 3, 4], [5, 6, 7, 8]]) < 0.3
    assert is_correct(" 12 eggs", "12") and not is_correct(" 13, not 12", "12")
    assert is_correct(" Paris, of course", "Paris") and not is_correct(" Parisian", "Paris")
    assert pit(np.array([0.5, 0.3, 0.2]), 1, 0.5) == pytest.approx(0.65)


def test_paired_statistics_find_a_real_shift_and_not_a_null_one():
    draw = np.random.default_rng(0)
    base = draw.normal(size=200)
    same = paired_comparison(base + draw.normal(scale=0.1, size=200), base, seed=1)
    shifted = paired_comparison(base + 0.3 + draw.normal(scale=0.1, size=200), base, seed=1)
    assert same.low < 0 < same.high and same.p_value > 0.01
    assert shifted.low > 0.25 and shifted.p_value < 0.001
    assert list(holm([0.01, 0.04, 0.03])) == pytest.approx([0.03, 0.06, 0.06])


def test_prompt_sets_and_config_errors(tmp_path):
    assert len(load_prompts(None)) == len(DEFAULT_PROMPTS) == 24
    assert sum(p.answer is not None for p in DEFAULT_PROMPTS) == 16
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "2+2=", "answer": "4"}\n{"prompt": "hello"}\n')
    assert [p.answer for p in load_prompts(str(jsonl))] == ["4", None]
    jsonl.write_text('{"text": "no prompt key"}\n')
    with pytest.raises(ConfigError, match="prompts line 1"):
        load_prompts(str(jsonl))
    with pytest.raises(ConfigError, match="arms"):
        config_from_dict({"arms": [{"name": "only"}]})
    with pytest.raises(ConfigError, match=r"arms\[1\]\.kind"):
        config_from_dict({"arms": [{"kind": "plain"}, {"kind": "quantum"}]})
    with pytest.raises(ConfigError, match=r"run\.baseline"):
        config_from_dict({"run": {"baseline": "x"}, "arms": [{"name": "a", "kind": "plain"},
                                                             {"name": "b"}]})
    default = load_config("qsample/evaluation/default.toml")
    assert [a.name for a in default.arms] == ["plain", "gumbel/batched-sa",
                                              "boltzmann/batched-sa"]


def test_ab_command_runs_a_config_file(tiny_llama_dir, tmp_path, capsys):
    from qsample.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "two plus two is", "answer": "4"}\n{"prompt": "the robot"}\n')
    config = tmp_path / "ab.toml"
    config.write_text(f"""
[run]
model = "{tiny_llama_dir}"
prompts = "{prompts}"
samples = 1
max_new_tokens = 4
tv_prompts = 0

[sampling]
temperature = 0.8
top_k = 8

[[arms]]
name = "plain"
kind = "plain"

[[arms]]
name = "boltzmann"
mode = "boltzmann"
""")
    out = tmp_path / "out"
    assert main(["ab", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    assert "# qsample A/B report" in capsys.readouterr().out
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4
    assert main(["ab", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    assert "resuming, 4 samples done, 0 to go" in capsys.readouterr().err


def test_each_engine_resamples_a_plain_arm_as_it_samples():
    """transformers applies top-p before min-p, vLLM min-p before top-p (over the survivors): at
    p = (.4, .3, .1, .1, .1), top-p .55 and min-p .5, transformers samples {0, 1} and vLLM only
    0, and each engine's re-sampler (the report's TV) follows its own engine."""
    pytest.importorskip("vllm")
    import torch

    from qsample import SamplerConfig
    from qsample.plugins.transformers.ab_engine import plain_resampler as transformers_resampler
    from qsample.plugins.vllm.ab_engine import plain_resampler as vllm_resampler

    config = SamplerConfig(top_k=5, top_p=0.55, min_p=0.5, temperature=1.0)
    logits = torch.tensor([[0.4, 0.3, 0.1, 0.1, 0.1]]).log().expand(2000, -1)
    assert set(transformers_resampler(config)(logits).tolist()) == {0, 1}
    assert set(vllm_resampler(config)(logits).tolist()) == {0}


def test_vllm_engine_runs_the_same_harness(tiny_llama_dir, tmp_path, vllm_cache):
    """The vLLM engine (plain vLLM sampling vs requests opted in to the qsample plugin): the
    same records, with fidelity from vLLM's raw top-k logprobs."""
    pytest.importorskip("vllm")
    from qsample.plugins.vllm.ab_engine import VLLMEngine

    prompts = tmp_path / "p.txt"
    prompts.write_text("the annealer said\na quantum\nonce upon a time\n")
    config = config_from_dict({
        "run": {"prompts": str(prompts), "samples": 3, "max_new_tokens": 8, "engine": "vllm",
                "tv_prompts": 0},
        "sampling": {"temperature": 0.8, "top_k": 8},
        "arms": [{"name": "plain", "kind": "plain"},
                 {"name": "gumbel", "kind": "qsample", "mode": "gumbel"}]})
    engine = VLLMEngine(str(tiny_llama_dir), max_top_k=8, max_model_len=128, dtype="float32")
    try:
        records = run_ab(config, engine, tmp_path / "out", progress=False, log=lambda _: None)
        metrics = compute(records, config)
    finally:
        del engine
    assert len(records) == 2 * 3 * 3
    for name in ("plain", "gumbel"):
        fidelity = metrics["arms"][name]["fidelity"]
        assert fidelity["outside_candidates"] == 0 and fidelity["ks_p"] >= ALPHA
    gumbel = [r for r in records if r["arm"] == "gumbel"]
    assert all(np.isfinite(r["logprob"]).all() and len(r["pit"]) == len(r["token_ids"])
               for r in gumbel)


def test_a_metric_with_no_values_gets_no_verdict():
    """A task with no answers has no accuracy: n/a, not "indistinguishable"."""
    from qsample.evaluation.report import comparison_table

    nan = float("nan")
    empty = {"arm": "a", "metric": "accuracy", "difference": nan, "low": nan, "high": nan,
             "p_value": nan, "p_adjusted": nan, "significant": False}
    measured = {**empty, "metric": "distinct_2", "difference": 0.01, "low": -0.02,
                "high": 0.03, "p_value": 0.6, "p_adjusted": 1.0}
    no_values, values = comparison_table([empty, measured])[2:]
    assert "n/a" in no_values and "indistinguishable" not in no_values
    assert "statistically indistinguishable" in values
