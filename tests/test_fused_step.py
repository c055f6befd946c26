"""The fused step (`qsample.annealer.step`): an uncoupled batched-sa step in one kernel call
gives what the staged path (candidates -> problems -> backend -> decoding, the numpy
specification) gives, row by row, bad rows included (`qsample.pipeline`'s one policy)."""

import numpy as np
import pytest
import torch

from qsample import QuantumSampler, SamplerConfig, pipeline
from qsample.backends import FailureKind
from qsample.errors import BackendError, LogitsError

ROWS, VOCAB = 300, 400
CASES = [
    {},
    {"top_p": 0.8},
    {"min_p": 0.05},
    {"top_p": 0.9, "min_p": 0.02, "temperature": 0.5},
    {"num_reads": 1, "num_sweeps": 2, "penalty": 0.3},  # most rows take the exact fallback
    {"backend_params": {"acceptance": "gibbs", "order": "random"}},
]


def _logits() -> torch.Tensor:
    x = torch.randn(ROWS, VOCAB, generator=torch.Generator().manual_seed(0)) * 3
    x[0, :] = float("-inf")  # one finite candidate
    x[0, 5] = 1.0
    x[1, [3, 7]] = float("inf")  # mass on the +inf tokens
    x[2, 10:] = float("-inf")  # fewer finite logits than top_k
    x[3, [4, 9]] = float("nan")  # bad: a NaN logit
    x[4, :] = float("-inf")  # bad: no finite logit
    x[5, :40] = float("nan")  # bad: NaN fills the top-k (its first top-k token)
    return x


BAD_ROWS = [3, 4, 5]


def _pair(config: SamplerConfig) -> tuple[QuantumSampler, QuantumSampler]:
    return QuantumSampler(config), QuantumSampler(config, fused=False)


@pytest.mark.parametrize("mode", ["gumbel", "boltzmann"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(c) or "defaults")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_step_equals_the_staged_path(mode, case, dtype):
    fused, staged = _pair(SamplerConfig(mode=mode, top_k=32, seed=3, **case))
    logits = _logits().to(dtype)
    np.testing.assert_array_equal(fused.sample(logits).numpy(), staged.sample(logits).numpy())
    a, b = fused.last_step(), staged.last_step()
    for name in ("k", "rank", "valid_reads", "num_reads", "fallback_kind", "fallback",
                 "fallback_reason"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("target_prob", "entropy", "energy"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    assert a.backend_calls == 1


def test_the_comparison_detects_another_draw():
    """Negative control: the staged path under another seed disagrees on most rows."""
    fused = QuantumSampler(SamplerConfig(top_k=32, seed=3))
    staged = QuantumSampler(SamplerConfig(top_k=32, seed=4), fused=False)
    logits = _logits()
    assert (fused.sample(logits) != staged.sample(logits)).float().mean() > 0.3


def test_row_seeds_key_the_fused_step_as_the_staged_one():
    fused, staged = _pair(SamplerConfig(mode="boltzmann", top_k=16, seed=1))
    logits, seeds = _logits()[:40], np.arange(40) * 7
    assert torch.equal(fused.sample(logits, row_seeds=seeds),
                       staged.sample(logits, row_seeds=seeds))


def test_only_uncoupled_batched_sa_steps_are_fused(monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "sample_step", lambda *a, **k: calls.append(a) or 1 / 0)
    sampler = QuantumSampler(SamplerConfig(mode="boltzmann", top_k=8, seed=0, coupling=1.0))
    sampler.sample(torch.randn(4, 50), groups=[0, 0, 1, 1])  # coupled: staged
    assert calls == []
    with pytest.raises(ZeroDivisionError):  # uncoupled: the fused step
        sampler.sample(torch.randn(4, 50))
    assert len(calls) == 1
    assert QuantumSampler(SamplerConfig(backend="neal", top_k=8)).fused_devices == ()
    assert QuantumSampler(SamplerConfig(top_k=8), fused=False).fused_devices == ()


def test_bad_rows_take_their_substitute_and_are_counted():
    """Fallback "exact": a NaN row takes its largest non-NaN logit, an all -inf row (or one
    whose top-k is all NaN) its first top-k token; all counted as BAD_LOGITS; the other rows are
    sampled as usual."""
    logits = _logits()[:8]
    for sampler in _pair(SamplerConfig(top_k=8, seed=0)):
        tokens = sampler.sample(logits)
        step = sampler.last_step()
        clean = torch.where(torch.isnan(logits[3]), float("-inf"), logits[3])
        assert int(tokens[3]) == int(clean.argmax())
        assert int(tokens[4]) == int(torch.topk(logits[4], 8).indices[0])
        assert int(tokens[5]) == int(torch.topk(logits[5], 8).indices[0])  # a NaN token
        assert np.flatnonzero(step.fallback_kind).tolist() == BAD_ROWS
        assert set(step.fallback_kind[BAD_ROWS]) == {FailureKind.BAD_LOGITS}
        assert step.fallback[BAD_ROWS].tolist() == [pipeline.BAD_LOGITS_FALLBACK] * 3
        assert step.fallback_reason[BAD_ROWS].tolist() == ["NaN logits", "no finite logit",
                                                           "NaN logits"]
        assert (step.k[BAD_ROWS] == 0).all() and np.isnan(step.target_prob[BAD_ROWS]).all()


@pytest.mark.parametrize("fused", [True, False])
def test_fallback_error_names_nan_and_empty_rows(fused):
    sampler = QuantumSampler(SamplerConfig(top_k=8, seed=0, fallback="error"), fused=fused)
    logits = torch.randn(5, 30)
    logits[3, 2] = float("nan")
    with pytest.raises(LogitsError, match=r"NaN in rows \[3\]"):
        sampler.sample(logits)
    logits[3, 2] = 0.0
    logits[1] = float("-inf")
    with pytest.raises(LogitsError, match=r"rows \[1\] .*no finite value"):
        sampler.sample(logits)


def test_fused_step_fallback_error_policy_raises_naming_rows():
    sampler = QuantumSampler(SamplerConfig(top_k=32, seed=0, num_reads=1, num_sweeps=1,
                                           penalty=0.2, fallback="error"))
    with pytest.raises(BackendError, match="no valid one-hot sample for rows"):
        sampler.sample(_logits()[BAD_ROWS[-1] + 1:])
