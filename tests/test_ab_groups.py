"""`qsample ab` group metrics (issue 13): arms that draw n samples of a prompt together.

The metrics on hand-made groups with exact values, identical siblings as the negative control;
the arm settings `n`, `coupling`, `coupling_scope` and their errors; the paired comparisons and
the "Groups" report section on synthetic records; resumption of a group cut short; and the
whole harness on the tiny Llama with n = 2 arms, where the "distinct" arm can never repeat a
sibling. Torch threads are pinned to 1 by conftest.py.
"""

import json
import math

import numpy as np
import pytest
import torch

from qsample.errors import ConfigError
from qsample.evaluation.config import config_from_dict
from qsample.evaluation.engine import Generation
from qsample.evaluation.report import GROUP_METRICS, compute, group_metrics, render, write_report
from qsample.evaluation.runner import run_ab
from qsample.evaluation.textmetrics import duplicates

VOCAB = 8  # logits width of the fake engine's generations


def record(tokens, logprob=None, text="", answer=None, **keys):
    """A scored record as the runner writes it, with only what the metrics read."""
    logprob = [-1.0] * len(tokens) if logprob is None else logprob
    return {"token_ids": list(tokens), "logprob": logprob, "text": text, "answer": answer,
            "target_prob": [0.5] * len(tokens), "pit": [0.5] * len(tokens),
            "rank": [0] * len(tokens), "seconds": 1.0, "prompt": "p", **keys}


# ------------------------------------------------------------------ metrics on hand-made groups


def test_duplicates_count_siblings_identical_to_an_earlier_one():
    assert duplicates([[1, 2, 3]] * 4) == 3  # identical: n - 1, the most there can be
    assert duplicates([[1, 2], [1, 2], [3], [1, 2]]) == 2
    assert duplicates([[1, 2], [2, 1], [1], []]) == 0
    assert duplicates([[5]]) == 0


def test_identical_siblings_are_the_negative_control():
    metrics = group_metrics([record([1, 2, 3, 4])] * 4)
    assert metrics["duplicates"] == 3
    assert metrics["group_distinct_1"] == pytest.approx(4 / 16)  # 1/n: the minimum here
    assert metrics["group_distinct_2"] == pytest.approx(3 / 12)
    assert metrics["group_self_bleu"] == pytest.approx(1.0)


def test_siblings_without_a_shared_token():
    metrics = group_metrics([record([1, 2]), record([3, 4]), record([5, 6]), record([7, 8])])
    assert metrics["duplicates"] == 0
    assert metrics["group_distinct_1"] == metrics["group_distinct_2"] == 1.0
    assert metrics["group_self_bleu"] == 0.0  # no unigram matches: BLEU 0


def test_mean_logprob_is_per_token_over_the_group():
    group = [record([1, 2], logprob=[-1.0, -1.0]), record([3], logprob=[-4.0])]
    assert group_metrics(group)["group_mean_logprob"] == pytest.approx(-6.0 / 3)  # not -2.5


def test_any_correct_is_best_of_n_and_nan_without_an_answer():
    right = [record([1], text=" 13"), record([2], text=" 12 eggs")]
    wrong = [record([1], text=" 13"), record([2], text=" eleven")]
    assert group_metrics([{**r, "answer": "12"} for r in right])["any_correct"] == 1.0
    assert group_metrics([{**r, "answer": "12"} for r in wrong])["any_correct"] == 0.0
    assert math.isnan(group_metrics(right)["any_correct"])


# ------------------------------------------------------------------ configuration


def arms_config(*arms, **run):
    return config_from_dict({"run": {"prompts": "default", **run},
                             "arms": [{"name": "plain", "kind": "plain"}, *arms]})


def test_arms_take_n_coupling_and_scope():
    config = arms_config({"name": "d", "mode": "gumbel", "coupling": "distinct", "n": 4},
                         {"name": "b", "mode": "boltzmann", "coupling": 1.5, "n": 4,
                          "coupling_scope": "always"})
    plain, distinct, boltzmann = config.arms
    assert (plain.n, plain.coupled) == (1, False)
    assert (distinct.n, distinct.config.coupling, distinct.coupled) == (4, math.inf, True)
    assert boltzmann.config.coupling == 1.5 and boltzmann.config.coupling_scope == "always"
    assert "coupling distinct (prefix)" in distinct.label
    assert arms_config({"name": "q", "n": 4}).arms[1].coupled is False  # coupling 0: independent


@pytest.mark.parametrize(("arm", "field", "allowed"), [
    ({"n": 0}, r"arms\[1\]\.n", "an integer >= 1"),
    ({"n": "4"}, r"arms\[1\]\.n", "an integer >= 1"),
    ({"n": True}, r"arms\[1\]\.n", "an integer >= 1"),
    ({"coupling": "distinct"}, r"arms\[1\]\.coupling", "set n >= 2"),
    ({"coupling": 0.5, "n": 2}, r"arms\[1\]\.coupling", "use mode 'boltzmann'"),
    ({"mode": "boltzmann", "coupling": -1, "n": 2}, r"arms\[1\]\.coupling", "a number >= 0"),
    ({"coupling": "distinct", "coupling_scope": "always", "n": 2},
     r"arms\[1\]\.coupling_scope", "'prefix' with mode 'gumbel'"),
    ({"mode": "boltzmann", "coupling_scope": "sometimes", "n": 2},
     r"arms\[1\]\.coupling_scope", "one of 'prefix', 'always'"),
    ({"kind": "plain", "coupling": 1.0, "n": 2}, r"arms\[1\]\.coupling", "plain arm"),
])
def test_bad_group_settings_name_the_field_and_what_is_allowed(arm, field, allowed):
    with pytest.raises(ConfigError, match=field) as caught:
        arms_config({"name": "x", **arm})
    assert allowed in caught.value.allowed


# ------------------------------------------------------------------ comparisons and report


def synthetic_records(arm, tokens_of, prompts=6, samples=2, n=2):
    """Records of one arm: ``tokens_of(prompt, sample, member)`` gives each sibling's tokens."""
    return [record(tokens_of(p, s, m), arm=arm, prompt_index=p, sample=s, member=m,
                   answer="3" if p % 2 else None, text=" 3" if m == 0 else " 4")
            for p in range(prompts) for s in range(samples) for m in range(n)]


def test_group_metrics_are_compared_per_prompt_with_the_same_machinery(tmp_path):
    config = config_from_dict({"run": {"samples": 2, "baseline": "same"}, "arms": [
        {"name": "same", "n": 2}, {"name": "apart", "n": 2}, {"name": "again", "n": 2},
        {"name": "single"}]})
    same = synthetic_records("same", lambda p, s, m: [100 + p, 200 + s, 7])
    again = synthetic_records("again", lambda p, s, m: [100 + p, 200 + s, 7])
    apart = synthetic_records("apart", lambda p, s, m: [100 + p, 200 + s, 10 + m])
    single = synthetic_records("single", lambda p, s, m: [100 + p, 200 + s, 7], n=1)
    metrics = compute(same + apart + again + single, config)
    rows = {(c["arm"], c["metric"]): c for c in metrics["comparisons"]}
    assert rows[("apart", "duplicates")]["difference"] == -1.0  # every pair stopped repeating
    assert rows[("apart", "duplicates")]["pairs"] == 6  # paired by prompt
    assert rows[("apart", "group_distinct_1")]["difference"] > 0
    assert not any(rows[("again", m)]["significant"] for m in GROUP_METRICS)
    assert rows[("again", "duplicates")]["difference"] == 0.0
    # the baseline's n differs: sample metrics on member 0 only, no pooled or group metrics
    assert {m for a, m in rows if a == "single"} == {"mean_logprob", "seq_rep_4", "length",
                                                     "accuracy", "mean_target_prob"}
    assert rows[("single", "length")]["pairs"] == 6 * 2
    assert metrics["arms"]["same"]["groups"] == {
        "groups": 12, "means": pytest.approx({"duplicates": 1.0, "group_distinct_1": 0.5,
                                              "group_distinct_2": 0.5, "group_self_bleu": 1.0,
                                              "group_mean_logprob": -1.0, "any_correct": 1.0})}
    assert metrics["arms"]["single"]["groups"] is None
    write_report(metrics, config, tmp_path, same + apart + again + single)
    report = (tmp_path / "report.md").read_text()
    assert "## Groups" in report and "| apart | 2 | independent | 12 | 0 |" in report
    groups_part = report.split("## Groups")[1]
    assert "| apart | duplicates | -1 |" in groups_part


def test_no_groups_section_when_every_arm_draws_one():
    config = config_from_dict({"run": {"samples": 2}, "arms": [{"name": "a"}, {"name": "b"}]})
    records = [r for name in ("a", "b")
               for r in synthetic_records(name, lambda p, s, m: [p, s], n=1)]
    report = render(compute(records, config), config)
    assert "## Groups" not in report and "2 samples per prompt" in report


# ------------------------------------------------------------------ runner: groups and resumption


class FakeEngine:
    """Deterministic groups without a model: sibling m of seed s is tokens (s % 5, m)."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt, arm, seed, max_new_tokens):
        self.calls.append((arm.name, seed))
        group = []
        for member in range(arm.n):
            tokens = [seed % 5, member]
            group.append(Generation(f"t{member}", tokens, 0.1,
                                    torch.zeros(len(tokens), VOCAB)))
        return group


def test_a_group_cut_short_is_generated_again_in_full(tmp_path):
    config = config_from_dict({"run": {"prompts": "default", "samples": 2, "tv_prompts": 0},
                               "arms": [{"name": "one", "kind": "plain"},
                                        {"name": "three", "kind": "plain", "n": 3}]})
    engine = FakeEngine()
    records = run_ab(config, engine, tmp_path, progress=False, log=lambda _: None)
    assert len(records) == 24 * 2 * (1 + 3) and len(engine.calls) == 24 * 2 * 2
    first = [r for r in records if r["arm"] == "three"][:3]
    assert [r["member"] for r in first] == [0, 1, 2] and len({r["seed"] for r in first}) == 1
    path = tmp_path / "samples.jsonl"
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["arm"] == "three"
    path.write_text("\n".join(lines[:-2]) + "\n")  # the last group keeps 1 of its 3 members
    again, log = FakeEngine(), []
    records = run_ab(config, again, tmp_path, progress=False, log=log.append)
    assert again.calls == [("three", records[-1]["seed"])]
    assert log == [f"qsample ab: resuming, {len(lines) - 3} samples done, 3 to go"]
    assert len(records) == len(lines)
    reread = run_ab(config, FakeEngine(), tmp_path, progress=False, log=lambda _: None)
    assert len(reread) == len(lines)  # the stale member-0 line is replaced, not counted twice


def test_an_engine_that_returns_the_wrong_group_size_is_refused(tmp_path):
    class Short(FakeEngine):
        def generate(self, *args):
            return super().generate(*args)[:1]

    config = config_from_dict({"run": {"prompts": "default", "samples": 1, "tv_prompts": 0},
                               "arms": [{"name": "a", "kind": "plain", "n": 2},
                                        {"name": "b", "kind": "plain", "n": 2}]})
    with pytest.raises(RuntimeError, match="1 continuations for arm 'a', which has n = 2"):
        run_ab(config, Short(), tmp_path, progress=False, log=lambda _: None)


# ------------------------------------------------------------------ end to end on the tiny Llama


@pytest.fixture(scope="module")
def groups_run(tiny_llama_dir, tmp_path_factory):
    from qsample.plugins.transformers.ab_engine import TransformersEngine
    from qsample.plugins.transformers.models import load_model

    out = tmp_path_factory.mktemp("ab-groups")
    prompts = out / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in [
        {"prompt": "two plus three is", "answer": "5"}, {"prompt": "the annealer said"},
        {"prompt": "once upon a time"}, {"prompt": "the robot"}]))
    config = config_from_dict({
        "run": {"prompts": str(prompts), "samples": 2, "max_new_tokens": 6, "seed": 3,
                "baseline": "independent", "tv_prompts": 1, "tv_steps": 1, "tv_draws": 100},
        "sampling": {"temperature": 1.0, "top_k": 8},
        "arms": [{"name": "independent", "mode": "gumbel", "n": 2},
                 {"name": "distinct", "mode": "gumbel", "coupling": "distinct", "n": 2},
                 {"name": "boltzmann", "mode": "boltzmann", "coupling": 1.0, "n": 2},
                 {"name": "plain", "kind": "plain", "n": 2}]})
    model, tokenizer = load_model(str(tiny_llama_dir))
    engine = TransformersEngine(model, tokenizer)
    records = run_ab(config, engine, out, progress=False, log=lambda _: None)
    metrics = compute(records, config, engine.resampler)
    write_report(metrics, config, out, records)
    return config, out, records, metrics


def test_every_arm_draws_groups_of_n(groups_run):
    _, _, records, metrics = groups_run
    assert len(records) == 4 * 4 * 2 * 2
    for name, arm in metrics["arms"].items():
        assert arm["n"] == 2 and arm["groups"]["groups"] == 4 * 2, name
        assert set(arm["groups"]["means"]) == set(GROUP_METRICS)
    seeds = {}
    for r in records:
        seeds.setdefault((r["prompt_index"], r["sample"]), set()).add(r["seed"])
    assert all(len(s) == 1 for s in seeds.values())  # paired: one seed per group in every arm


def test_distinct_siblings_never_repeat_and_are_coupled(groups_run):
    _, _, records, metrics = groups_run
    distinct = [r for r in records if r["arm"] == "distinct"]
    groups = {}
    for r in distinct:
        groups.setdefault((r["prompt_index"], r["sample"]), []).append(r)
    for siblings in groups.values():
        assert siblings[0]["token_ids"][0] != siblings[1]["token_ids"][0]  # one prefix: apart
        assert siblings[0]["telemetry"][0]["group"] >= 0
    assert metrics["arms"]["distinct"]["groups"]["means"]["duplicates"] == 0
    independent = [r for r in records if r["arm"] == "independent"]
    assert all(step["group"] == -1 for r in independent for step in r["telemetry"])


def test_the_report_has_a_groups_section_with_paired_differences(groups_run):
    _, out, _, metrics = groups_run
    report = (out / "report.md").read_text()
    assert "## Groups" in report
    compared = {(c["arm"], c["metric"]) for c in metrics["comparisons"]}
    for arm in ("distinct", "boltzmann", "plain"):
        assert {(arm, m) for m in GROUP_METRICS} <= compared
    assert "coupled: siblings are not independent draws" in report
    assert metrics["arms"]["independent"]["fidelity"]["tv_steps"] == 1  # member 0 only
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["arms"]["distinct"]["settings"]["coupling"] == "distinct"


def test_vllm_engine_draws_a_group_in_one_request(tiny_llama_dir, tmp_path, vllm_cache):
    pytest.importorskip("vllm")
    from qsample.plugins.vllm.ab_engine import VLLMEngine

    prompts = tmp_path / "p.txt"
    prompts.write_text("the annealer said\na quantum\n")
    config = config_from_dict({
        "run": {"prompts": str(prompts), "samples": 2, "max_new_tokens": 6, "engine": "vllm",
                "tv_prompts": 0},
        "sampling": {"temperature": 1.0, "top_k": 8},
        "arms": [{"name": "plain", "kind": "plain", "n": 3},
                 {"name": "distinct", "mode": "gumbel", "coupling": "distinct", "n": 3}]})
    engine = VLLMEngine(str(tiny_llama_dir), max_top_k=8, max_model_len=128, dtype="float32")
    try:
        records = run_ab(config, engine, tmp_path / "out", progress=False, log=lambda _: None)
    finally:
        del engine
    assert len(records) == 2 * 2 * 2 * 3
    metrics = compute(records, config)
    assert metrics["arms"]["distinct"]["groups"]["means"]["duplicates"] == 0
    for r in records:
        assert np.isfinite(r["logprob"]).all() and len(r["pit"]) == len(r["token_ids"])
    firsts = {}
    for r in records:
        if r["arm"] == "distinct":
            firsts.setdefault((r["prompt_index"], r["sample"]), []).append(r["token_ids"][0])
    assert all(len(set(f)) == 3 for f in firsts.values())
