import json
import logging
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # the annealer's CPU kernels: one thread per worker
# vLLM's fast CPU settings for the in-process test engines (read when vLLM is imported)
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def fresh_operator_config(monkeypatch):
    """The vLLM plugin's operator config reset around a test (no QSAMPLE_VLLM_CONFIG)."""
    from qsample.plugins import vllm as plugin

    monkeypatch.delenv("QSAMPLE_VLLM_CONFIG", raising=False)
    plugin.reset_operator_config()
    yield
    plugin.reset_operator_config()


@pytest.fixture
def offline_backend(tmp_path, monkeypatch, fresh_operator_config):
    """A registered backend ``"offline"`` (couplings too) that times out on every step, the
    only one the vLLM operator allows: a run-time failure for the fallback policy."""
    from qsample.backends import Backend, registry
    from qsample.plugins import vllm as plugin

    class Offline(Backend):
        name = "offline"
        couplings = True

        def solve(self, problems, request):
            raise TimeoutError("solver did not answer")

    monkeypatch.setitem(registry._FACTORIES, "offline", Offline)
    path = tmp_path / "operator.json"
    path.write_text(json.dumps({"allowed_backends": ["offline"]}))
    monkeypatch.setenv("QSAMPLE_VLLM_CONFIG", str(path))
    plugin.reset_operator_config()


@pytest.fixture(autouse=True)
def vllm_logs_reach_caplog(monkeypatch):
    """vLLM's logging config stops its "vllm" loggers from propagating to the root logger,
    where caplog listens, and a later `logging.config.dictConfig` (an engine or a server set up
    in the same process) disables the loggers that existed before it: undo both for each test,
    so that what a test captures does not depend on which tests ran before it in its worker."""
    monkeypatch.setattr(logging.getLogger("vllm"), "propagate", True)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("vllm") and isinstance(logger, logging.Logger) and logger.disabled:
            monkeypatch.setattr(logger, "disabled", False)


@pytest.fixture(scope="session")
def vllm_cache(tmp_path_factory) -> None:
    """vLLM's cache folder (VLLM_CACHE_ROOT, unless the caller set one) in the test session's
    temporary folder, not the home folder."""
    os.environ.setdefault("VLLM_CACHE_ROOT", str(tmp_path_factory.mktemp("vllm-cache")))


@pytest.fixture(scope="module")
def llm(tmp_path_factory, vllm_cache):
    """(a ``vllm.LLM`` on a tiny Llama built for the module, the model's folder)."""
    import vllm
    from tiny_llama import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny-vllm"))
    engine = vllm.LLM(model=str(folder), enforce_eager=True, dtype="float32", max_model_len=128,
                      seed=0)
    yield engine, folder
    del engine


_REPORT = Path(__file__).resolve().parent.parent / ".pytest_cache" / "qsample-fidelity.jsonl"


def record_fidelity(row: dict) -> None:
    """Append one fidelity result (works under pytest-xdist: workers share the file)."""
    _REPORT.parent.mkdir(parents=True, exist_ok=True)
    with open(_REPORT, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")


def rate_at_most(events: int, trials: int, rate: float, alpha: float = 1e-3) -> bool:
    """Whether ``events`` in ``trials`` is consistent with a true rate of at most ``rate``: the
    one-sided binomial p-value P(X >= events | trials, rate) is at least ``alpha``. A threshold
    from the sampling noise of the test's own draw count, not a constant share: a sampler whose
    true rate is ``rate`` fails with probability at most ``alpha``."""
    from scipy.stats import binom

    return bool(binom.sf(events - 1, trials, rate) >= alpha)


def rate_at_least(events: int, trials: int, rate: float, alpha: float = 1e-3) -> bool:
    """Whether ``events`` in ``trials`` is consistent with a true rate of at least ``rate``
    (P(X <= events | trials, rate) >= ``alpha``), as `rate_at_most`."""
    from scipy.stats import binom

    return bool(binom.cdf(events, trials, rate) >= alpha)


# Longest first, so that under `pytest -n 2 --dist loadgroup` the two workers finish together:
# xdist hands out tests in collection order, and a slow test collected last keeps one worker busy
# while the other idles (measured per test with --durations; the exact tree/exact-enumeration
# fidelity cases, the real vLLM servers, the Triton interpreter run and the model conversion).
SLOW_MODULES = ("test_fidelity.py", "test_vllm_soak.py", "test_vllm_server.py",
                "test_annealer_triton.py", "test_vllm_parallel.py", "test_vllm.py",
                "test_vllm_coupling.py", "test_vllm_params.py",
                "test_default_model.py", "test_ab.py", "test_ab_groups.py", "test_joint.py",
                "test_dwave_noisy.py", "test_qpu_models.py", "test_lm_eval.py")
SLOW_CASES = ("-tree-", "-exact-", "-neal-")  # within test_fidelity.py, slowest backends first


def pytest_collection_modifyitems(config, items):
    def cost_rank(item) -> tuple[int, int]:
        module = item.path.name
        rank = SLOW_MODULES.index(module) if module in SLOW_MODULES else len(SLOW_MODULES)
        case = next((i for i, tag in enumerate(SLOW_CASES) if tag in item.nodeid),
                    len(SLOW_CASES))
        return rank, case

    items.sort(key=cost_rank)  # stable: the order within a module is kept otherwise
    for item in items:  # `make test-fast` leaves these modules out (-m "not slow")
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


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
