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


# How many standard deviations above the noise floor a TV must lie before a test calls it more
# than sampling noise (`tv_noise_bound`). TV is half a sum of absolute deviations (folded normals),
# skewed to the right, so its tail is heavier than the normal one (3e-5 at 4 sd): simulated with
# 200,000 exact samplers, 4 sd is exceeded at a rate of 4e-4 by the mean TV of the two
# calibration shapes at 1,500 draws (test_dwave_noisy; 2e-4 after its temperature fit) and of
# four A/B kept steps at 400 draws (test_dose): within `rate_at_most`'s default false-alarm rate
# of 1e-3. (3 sd would be exceeded at about 4e-3.)
TV_SDS = 4.0


def tv_noise_sd(probs: np.ndarray, draws: int) -> float:
    """Standard deviation of the TV of ``draws`` faithful draws from ``probs``, in the normal
    approximation `qsample.tools.stats.tv_noise_floor` makes for its expectation: the deviations
    d_i = n_i / N - p_i are jointly normal, with sd s_i = sqrt(p_i (1 - p_i) / N) and
    correlations r_ij = -sqrt(p_i p_j / ((1 - p_i) (1 - p_j))), and for such a pair
    E|d_i| |d_j| = (2 / pi) s_i s_j (sqrt(1 - r^2) + r arcsin r), so that
    Var(TV) = 1/4 (sum_ij E|d_i| |d_j| - (sum_i E|d_i|)^2). (Matches the simulated sd within 1%
    for the targets of test_dwave_noisy and test_dose.)"""
    p = np.asarray(probs, dtype=np.float64)
    p = p[p > 0]
    if p.size < 2:  # one candidate: every draw lands on it, TV is 0
        return 0.0
    s = np.sqrt(p * (1 - p) / draws)
    r = np.clip(-np.sqrt(np.outer(p, p) / np.outer(1 - p, 1 - p)), -1.0, 1.0)
    np.fill_diagonal(r, 1.0)
    pairs = (2 / np.pi) * np.outer(s, s) * (np.sqrt(1 - r**2) + r * np.arcsin(r))
    mean = np.sqrt(2 / np.pi) * s.sum()
    return 0.5 * float(np.sqrt(max(pairs.sum() - mean**2, 0.0)))


def tv_noise_bound(targets: list[np.ndarray], draws: int, sds: float = TV_SDS) -> float:
    """The most that sampling noise alone gives a faithful sampler's mean TV over ``targets``
    (one TV per target, each from its own ``draws`` independent draws: the mean a calibration or
    an A/B report's ``tv_mean`` takes): the mean of their `tv_noise_floor` (the expected TV) plus
    ``sds`` standard deviations of the mean (`tv_noise_sd`). A TV above it is a distance from
    the target; one below it is indistinguishable from exact sampling at this draw count."""
    from qsample.tools.stats import tv_noise_floor

    floor = float(np.mean([tv_noise_floor(t, draws) for t in targets]))
    sd = float(np.sqrt(sum(tv_noise_sd(t, draws) ** 2 for t in targets))) / len(targets)
    return floor + sds * sd


def within_interval(value: float, estimate: float, low: float, high: float,
                    level: float = 0.95, alpha: float = 1e-3) -> bool:
    """Whether ``value`` lies in the two-sided 1 - ``alpha`` interval of a positive parameter
    whose ``level`` interval is [low, high] around ``estimate`` (a profile-likelihood interval,
    as beta_eff's): each side is widened on the log scale by z_(1 - alpha/2) / z_((1 + level)/2)
    (3.29 / 1.96 = 1.68 at the defaults), which is exact where the log-likelihood is quadratic
    in log beta. A fixed reported level (95%) would fail a faithful sampler one run in 20."""
    from scipy.stats import norm

    widen = norm.isf(alpha / 2) / norm.isf((1 - level) / 2)
    lo = estimate * (low / estimate) ** widen
    hi = estimate * (high / estimate) ** widen
    return bool(lo <= value <= hi)


# The order in which `make test` (`pytest -n 2 --dist loadgroup`) hands tests to its two workers,
# longest first, so that the workers finish together. Why the order matters: pytest-xdist's
# loadgroup scheduler (3.8) makes each `xdist_group` one unit of work and every other test a unit
# of its own; it queues the groups first (by their number of tests, --loadscope-reorder) and the
# other tests in collection order, gives each worker one unit, and tops a worker up with the next
# unit whenever it has 2 tests or fewer left. The tail of the collection is therefore what runs
# last: a 60 s test collected last keeps one worker busy for a minute while the other idles, and
# one collected first overlaps with the short tests on the other worker (longest processing time
# first: the two workers' finishing times then differ by at most the duration of the last test
# started, which this order makes a short one).
# The sort is stable: a module's tests stay in their order. Only an xdist_group keeps a module on
# one worker; an ungrouped module's tests go to whichever worker asks next, so its module-scoped
# fixtures (test_dwave_noisy's ideal calibration, test_dose's A/B run) may be built on both.
#
# The list is kept by hand, ranked once by per-test durations of a full run (not recorded then;
# the slowest: the exact tree / exact-enumeration / neal fidelity cases, the real vLLM servers and
# engines, the Triton interpreter run, the model conversion and A/B runs). Measured since, on one
# core each (serial, pytest -p no:cacheprovider --durations=0): test_dwave_noisy.py 63-74 s (its
# module-scoped ideal calibration 6-23 s, six knob calibrations 6-8 s each), test_dose.py 11 s
# (its module-scoped A/B run 8 s; not in the list).
# To re-rank: `pytest -q --durations=0 tests > durations.txt` (serial, so that the times are not
# inflated by two workers sharing the cores), sum the setup + call times per module, and order the
# modules (and SLOW_CASES within test_fidelity.py) by that sum, longest first. Every module listed
# is marked slow (`make test-fast` leaves them out), so adding or removing one changes that set
# too. The suite collects the same tests in any order; only the wall time of `make test` depends
# on it.
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
