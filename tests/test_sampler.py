"""QuantumSampler: shapes and devices, seeds, greedy, fallback policy, telemetry."""

import json
from typing import ClassVar

import dimod
import numpy as np
import pytest
import torch

from qsample import BackendError, ConfigError, LogitsError, QuantumSampler, SamplerConfig
from qsample.backends import Backend, FailureKind, Failures, SolveResult


def logits_batch(batch=6, vocab=50, seed=0):
    return torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.filterwarnings("ignore:backend 'tabu' is a heuristic")
@pytest.mark.parametrize("mode, backend", [("gumbel", "batched-sa"), ("boltzmann", "batched-sa"),
                                           ("gumbel", "neal"), ("boltzmann", "neal"),
                                           ("gumbel", "tabu"), ("gumbel", "tree"),
                                           ("boltzmann", "tree"), ("gumbel", "exact"),
                                           ("boltzmann", "exact")])
def test_returns_long_tokens_from_the_candidates(mode, backend):
    logits = logits_batch()
    sampler = QuantumSampler(SamplerConfig(mode=mode, backend=backend, top_k=8, seed=0))
    tokens = sampler.sample(logits)
    assert tokens.dtype == torch.long and tokens.shape == (6,)
    assert tokens.device == logits.device
    top8 = logits.topk(8, dim=1).indices
    assert (top8 == tokens[:, None]).any(dim=1).all()
    assert sampler.last_step().fallback_count == 0


def test_empty_batch_makes_no_backend_call():
    backend = ExplodingBackend()
    sampler = QuantumSampler(SamplerConfig(backend=backend))
    out = sampler.sample(torch.empty(0, 10))
    assert out.shape == (0,) and out.dtype == torch.long
    assert backend.calls == 0


def test_temperature_zero_is_greedy_without_a_backend_call():
    logits = logits_batch()
    backend = ExplodingBackend()
    sampler = QuantumSampler(SamplerConfig(temperature=0, backend=backend))
    assert torch.equal(sampler.sample(logits), logits.argmax(dim=1))
    assert sampler.last_step().mode == "greedy" and backend.calls == 0


def test_greedy_follows_the_bad_logits_policy():
    """A NaN row takes its largest non-NaN logit and is counted (fallback "exact"); with
    fallback "error" it is named in a LogitsError."""
    logits = logits_batch()
    bad = logits.clone()
    bad[4, 0] = float("nan")
    bad[4, 7] = bad[4].nan_to_num(nan=0.0).max() + 1  # the substitute
    sampler = QuantumSampler(SamplerConfig(temperature=0))
    tokens = sampler.sample(bad)
    assert int(tokens[4]) == 7 and torch.equal(tokens[:4], logits[:4].argmax(dim=1))
    step = sampler.last_step()
    assert np.flatnonzero(step.fallback_kind).tolist() == [4]
    assert step.fallback_reason[4] == "NaN logits"
    with pytest.raises(LogitsError, match=r"rows \[4\]"):
        QuantumSampler(SamplerConfig(temperature=0, fallback="error")).sample(bad)


def test_same_seed_same_tokens_and_different_seed_differs():
    logits = logits_batch(batch=32, vocab=200)
    runs = []
    for seed in (5, 5, 6):
        sampler = QuantumSampler(SamplerConfig(top_k=16, seed=seed))
        runs.append([sampler.sample(logits).tolist() for _ in range(3)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert runs[0][0] != runs[0][1]  # successive steps use fresh noise


@pytest.mark.parametrize("mode, backend, batching", [
    ("gumbel", "batched-sa", "auto"), ("boltzmann", "batched-sa", "auto"),
    ("gumbel", "neal", "per-row"), ("boltzmann", "neal", "per-row"),
    ("gumbel", "tree", "auto"), ("boltzmann", "exact", "auto"),
])
def test_row_seeds_make_rows_independent_of_batch_composition(mode, backend, batching):
    logits = logits_batch(batch=8, vocab=40)
    cfg = SamplerConfig(mode=mode, backend=backend, top_k=8, seed=1, batching=batching)
    seeds = np.arange(100, 108)
    full = QuantumSampler(cfg).sample(logits, row_seeds=seeds)
    subset = [6, 2, 3]
    part = QuantumSampler(cfg).sample(logits[subset], row_seeds=seeds[subset])
    assert torch.equal(full[subset], part)


def test_gumbel_noise_is_independent_of_batch_composition_with_union_batching():
    """With neal's union batching the annealer's seed covers the whole batch, but in gumbel
    mode the token is the ground state, fixed by the row's own Gumbel noise."""
    logits = logits_batch(batch=8, vocab=40)
    cfg = SamplerConfig(top_k=8, seed=1, backend="neal", batching="union")
    seeds = np.arange(8)
    full = QuantumSampler(cfg).sample(logits, row_seeds=seeds)
    part = QuantumSampler(cfg).sample(logits[:3], row_seeds=seeds[:3])
    assert torch.equal(full[:3], part)


def test_bad_row_seeds_are_rejected():
    sampler = QuantumSampler(SamplerConfig(top_k=4))
    with pytest.raises(ConfigError, match="row_seeds"):
        sampler.sample(logits_batch(batch=3), row_seeds=[1, 2])
    with pytest.raises(ConfigError, match="row_seeds"):
        sampler.sample(logits_batch(batch=2), row_seeds=[1, -2])


class ExplodingBackend(Backend):
    name = "exploding"

    def __init__(self):
        self.calls = 0

    def solve(self, problems, request):
        self.calls += 1
        raise RuntimeError("annealer on fire")


class MalformedBackend(Backend):
    name = "malformed"

    def __init__(self, kind):
        self.kind = kind

    def solve(self, problems, request):
        b, k = problems.batch_size, problems.width
        if self.kind == "shape":
            states = np.zeros((b, 2, k + 1), np.int8)
        elif self.kind == "values":
            states = np.full((b, 2, k), 3, np.int8)
        else:  # valid arrays, but never one-hot
            states = np.ones((b, 2, k), np.int8)
        return SolveResult(states, np.ones((b, 2), bool), Failures.none(b))


@pytest.mark.parametrize("backend, reason", [
    (ExplodingBackend(), "annealer on fire"),
    (MalformedBackend("shape"), "shape"),
    (MalformedBackend("values"), "non-binary"),
    (MalformedBackend("never-one-hot"), "no valid one-hot read"),
])
def test_failing_backend_falls_back_to_exact_and_counts_it(backend, reason):
    logits = logits_batch(batch=4, vocab=30)
    sampler = QuantumSampler(SamplerConfig(backend=backend, top_k=5, seed=0))
    tokens = sampler.sample(logits)
    assert (logits.topk(5, dim=1).indices == tokens[:, None]).any(dim=1).all()
    step = sampler.last_step()
    assert step.fallback_count == 4
    assert all(f == "exact" for f in step.fallback)
    assert all(reason in r for r in step.fallback_reason)
    assert np.isnan(step.energy).all()
    assert sampler.telemetry.summary()["fallbacks"] == 4


@pytest.mark.parametrize("backend, kind", [
    (ExplodingBackend(), FailureKind.RAISED),
    (MalformedBackend("shape"), FailureKind.REJECTED),
    (MalformedBackend("values"), FailureKind.REJECTED),
    (MalformedBackend("never-one-hot"), FailureKind.NO_VALID_READ),
])
def test_fallback_rows_carry_a_typed_failure_kind(backend, kind):
    sampler = QuantumSampler(SamplerConfig(backend=backend, top_k=5, seed=0))
    sampler.sample(logits_batch(batch=3, vocab=30))
    step = sampler.last_step()
    assert step.fallback_kind.tolist() == [kind] * 3
    assert [r["fallback_kind"] for r in step.records()] == [kind.label] * 3
    assert all(r is not None for r in step.fallback_reason)


def test_fallback_error_policy_raises_backend_error_naming_rows():
    sampler = QuantumSampler(SamplerConfig(backend=ExplodingBackend(), fallback="error", top_k=5))
    with pytest.raises(BackendError, match=r"rows \[0, 1, 2\].*annealer on fire"):
        sampler.sample(logits_batch(batch=3))


def test_one_failing_row_does_not_touch_the_others():
    class FlakyExact(dimod.ExactSolver):
        calls = 0

        def sample(self, bqm, **kwargs):
            FlakyExact.calls += 1
            if FlakyExact.calls == 2:
                raise TimeoutError("second row times out")
            return super().sample(bqm, **kwargs)

    sampler = QuantumSampler(SamplerConfig(backend=FlakyExact(), top_k=4, seed=0))
    sampler.sample(logits_batch(batch=3))
    assert sampler.last_step().fallback.tolist() == [None, "exact", None]
    assert "TimeoutError" in sampler.last_step().fallback_reason[1]


def test_backend_capabilities_are_checked_at_construction():
    with pytest.raises(ConfigError, match="thermal"):
        QuantumSampler(SamplerConfig(mode="boltzmann", backend="tabu"))
    with pytest.raises(ConfigError, match=r"top_k.*at most 25"):
        QuantumSampler(SamplerConfig(backend="tree", top_k=64))


def test_tabu_warns_that_it_is_not_faithful():
    with pytest.warns(UserWarning, match="tabu.*not faithful"):
        QuantumSampler(SamplerConfig(backend="tabu", top_k=8))


def test_boltzmann_warns_where_it_is_not_measured_faithful():
    with pytest.warns(UserWarning, match=r"faithful only up to K = 256"):
        QuantumSampler(SamplerConfig(mode="boltzmann", top_k=512))


def test_any_dimod_sampler_instance_is_a_backend():
    sampler = QuantumSampler(SamplerConfig(backend=dimod.ExactSolver(), top_k=6, seed=0))
    sampler.sample(logits_batch())
    assert sampler.last_step().backend == "ExactSolver"
    assert sampler.last_step().fallback_count == 0


def test_telemetry_records_every_row_and_writes_jsonl(tmp_path):
    logits = logits_batch(batch=5, vocab=40)
    sampler = QuantumSampler(SamplerConfig(top_k=8, seed=0))
    tokens = [sampler.sample(logits) for _ in range(3)]
    records = list(sampler.telemetry.records())
    assert len(records) == 15
    first = records[0]
    for key in ("mode", "backend", "k", "token_id", "rank", "target_prob", "entropy", "energy",
                "valid_reads", "num_reads", "fallback", "fallback_reason", "backend_seconds"):
        assert key in first
    assert [r["token_id"] for r in records[:5]] == tokens[0].tolist()
    probs = torch.softmax(logits / 1.0, dim=1)
    top = logits.topk(8, dim=1)
    for r in records[:5]:
        row_probs = probs[r["row"], top.indices[r["row"]]]
        assert r["target_prob"] == pytest.approx(float(row_probs[r["rank"]] / row_probs.sum()),
                                                 rel=1e-5)
        # gumbel: the one-hot state e_i has energy -w_i with max_i w_i = 0; K = 8 anneals to
        # the ground state, energy 0 (float32 weights)
        assert r["energy"] == pytest.approx(0.0, abs=1e-5)
    thermal = QuantumSampler(SamplerConfig(mode="boltzmann", top_k=8, seed=0))
    thermal.sample(logits)
    for r in thermal.telemetry.records():  # boltzmann: w_i = log softmax(l / T)_i
        assert r["energy"] == pytest.approx(-np.log(r["target_prob"]), abs=1e-4)
    path = tmp_path / "trace.jsonl"
    assert sampler.telemetry.write_jsonl(path) == 15
    assert json.loads(path.read_text().splitlines()[-1])["step"] == 2
    summary = sampler.telemetry.summary()
    assert summary["tokens"] == 15 and summary["steps"] == 3
    assert 0 < summary["backend_share"] <= 1


def test_max_telemetry_steps_bounds_memory():
    sampler = QuantumSampler(SamplerConfig(top_k=4), max_telemetry_steps=2)
    for _ in range(5):
        sampler.sample(logits_batch(batch=2))
    assert [s.step for s in sampler.telemetry.steps()] == [3, 4]


class RecordingSampler(dimod.Sampler):
    """A dimod sampler that records its keyword arguments and enumerates exactly."""

    parameters: ClassVar[dict] = {"num_reads": [], "seed": [], "num_sweeps": [],
                                  "beta_range": []}
    properties: ClassVar[dict] = {}

    def __init__(self):
        self.calls = []

    def sample(self, bqm, **kwargs):
        self.calls.append(kwargs)
        ground = dimod.ExactSolver().sample(bqm).lowest().truncate(1)
        reads = kwargs.get("num_reads", 1)
        return dimod.SampleSet.from_samples_bqm(
            (np.repeat(ground.record.sample, reads, axis=0), list(ground.variables)), bqm)


@pytest.mark.parametrize("mode, beta_range", [("gumbel", [0.1, 10.0]), ("boltzmann", [1.0, 1.0])])
def test_user_sampler_gets_the_parameters_it_declares(mode, beta_range):
    backend = RecordingSampler()
    sampler = QuantumSampler(SamplerConfig(mode=mode, backend=backend, top_k=4, seed=0,
                                           num_reads=3, num_sweeps=7))
    sampler.sample(logits_batch(batch=2))
    assert len(backend.calls) == 2  # per-row by default for user samplers
    call = backend.calls[0]
    assert call["num_reads"] == 3 and call["num_sweeps"] == 7
    assert call["beta_range"] == beta_range
    assert 0 <= call["seed"] < 2**31
    assert "beta" not in call  # not declared


@pytest.mark.parametrize("fused", [True, False])
def test_bad_logits_under_fallback_error_name_the_rows(fused):
    sampler = QuantumSampler(SamplerConfig(top_k=4, fallback="error"), fused=fused)
    logits = logits_batch(batch=4)
    logits[2, 5] = float("nan")
    with pytest.raises(LogitsError, match=r"rows \[2\]"):
        sampler.sample(logits)
    logits = logits_batch(batch=4)
    logits[1] = float("-inf")
    with pytest.raises(LogitsError, match=r"rows \[1\]"):
        sampler.sample(logits)
    with pytest.raises(LogitsError, match="unsqueeze"):
        sampler.sample(logits[0])


@pytest.mark.parametrize("fused", [True, False])
def test_bad_logits_under_fallback_exact_are_counted_not_raised(fused):
    sampler = QuantumSampler(SamplerConfig(top_k=4, seed=0), fused=fused)
    logits = logits_batch(batch=4)
    logits[2, 5] = float("nan")
    logits[1] = float("-inf")
    tokens = sampler.sample(logits)
    step = sampler.last_step()
    assert np.flatnonzero(step.fallback_kind).tolist() == [1, 2]
    assert step.fallback_reason[[1, 2]].tolist() == ["no finite logit", "NaN logits"]
    assert (tokens >= 0).all() and int(tokens[2]) != 5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_give_the_same_tokens(dtype):
    logits = (logits_batch(batch=6, vocab=64) * 4).round() / 4  # exactly representable
    cfg = SamplerConfig(top_k=8, seed=9)
    assert torch.equal(QuantumSampler(cfg).sample(logits.to(dtype)),
                       QuantumSampler(cfg).sample(logits))


# -- the failure rule: configuration mistakes raise when the sampler is built, never fall back ----

@pytest.mark.parametrize("backend, params, named", [
    ("batched-sa", {"acceptence": "gibbs"}, "acceptence"),  # a typo of a known key
    ("batched-sa", {"acceptance": "glauber"}, "glauber"),  # a value the backend refuses
    ("neal", {"proposal_acceptance_criteria": "Glauber"}, "Glauber"),
    ("neal", {"num_sweep": 10}, "num_sweep"),
    ("tree", {"marginal": True}, "marginal"),
])
def test_bad_backend_params_raise_when_the_sampler_is_built(backend, params, named):
    with pytest.raises(ConfigError, match=named) as caught:
        QuantumSampler(SamplerConfig(backend=backend, backend_params=params, top_k=8))
    assert caught.value.field == "backend_params"


def test_a_configuration_error_during_a_step_raises_instead_of_falling_back():
    class Misconfigured(Backend):
        name = "misconfigured"

        def solve(self, problems, request):
            raise ConfigError("top_k", problems.width, "a clique that fits the QPU")

    sampler = QuantumSampler(SamplerConfig(backend=Misconfigured(), top_k=5))
    with pytest.raises(ConfigError, match="clique that fits"):
        sampler.sample(logits_batch(batch=2))


def test_settings_are_resolved_once_with_mode_and_backend_defaults():
    sampler = QuantumSampler(SamplerConfig(mode="boltzmann", backend="batched-sa", top_k=16))
    assert (sampler.request.num_reads, sampler.request.num_sweeps) == (8, 20)
    assert sampler.cost == 8 * 20 * 16
    tree = QuantumSampler(SamplerConfig(backend="tree", top_k=8, num_sweeps=3))
    assert tree.request.num_reads == 1  # the exact solver's one read
