import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # the annealer's CPU kernels: one thread per worker

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


_REPORT = Path(__file__).resolve().parent.parent / ".pytest_cache" / "qsample-fidelity.jsonl"


def record_fidelity(row: dict) -> None:
    """Append one fidelity result (works under pytest-xdist: workers share the file)."""
    _REPORT.parent.mkdir(parents=True, exist_ok=True)
    with open(_REPORT, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the controller, not an xdist worker
        _REPORT.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter):
    """Print the chi-square / total-variation table of the statistical suite."""
    if not _REPORT.exists():
        return
    rows = [json.loads(line) for line in _REPORT.read_text().splitlines() if line]
    terminalreporter.section("fidelity (chi-square vs exact softmax, total variation)")
    terminalreporter.write_line(f"{'case':48s} {'draws':>6s} {'dof':>4s} {'p':>9s} {'TV':>7s}")
    for row in sorted(rows, key=lambda r: r["case"]):
        terminalreporter.write_line(
            f"{row['case']:48s} {row['draws']:6d} {row['dof']:4d} {row['p']:9.2e} {row['tv']:7.4f}")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    from tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    return model, tokenizer
