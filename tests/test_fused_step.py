"""The fused step (`qsample.annealer.step`): an uncoupled batched-sa step in one kernel call
gives what the staged path (candidates -> problems -> backend -> decoding) gives, row by row."""

import numpy as np
import pytest
import torch

from qsample import QuantumSampler, SamplerConfig
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
    return x


def _pair(config: SamplerConfig) -> tuple[QuantumSampler, QuantumSampler]:
    fused, staged = QuantumSampler(config), QuantumSampler(config)
    staged.fused_devices = ()
    return fused, staged


@pytest.mark.parametrize("mode", ["gumbel", "boltzmann"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(c) or "defaults")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_step_equals_the_staged_path(mode, case, dtype):
    fused, staged = _pair(SamplerConfig(mode=mode, top_k=32, seed=3, **case))
    logits = _logits().to(dtype)
    np.testing.assert_array_equal(fused.sample(logits).numpy(), staged.sample(logits).numpy())
    a, b = fused.last_step, staged.last_step
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
    staged = QuantumSampler(SamplerConfig(top_k=32, seed=4))
    staged.fused_devices = ()
    logits = _logits()
    assert (fused.sample(logits) != staged.sample(logits)).float().mean() > 0.3


def test_row_seeds_key_the_fused_step_as_the_staged_one():
    fused, staged = _pair(SamplerConfig(mode="boltzmann", top_k=16, seed=1))
    logits, seeds = _logits()[:40], np.arange(40) * 7
    assert torch.equal(fused.sample(logits, row_seeds=seeds),
                       staged.sample(logits, row_seeds=seeds))


def test_only_uncoupled_batched_sa_steps_are_fused(monkeypatch):
    calls = []
    config = SamplerConfig(mode="boltzmann", top_k=8, seed=0, coupling=1.0)
    sampler = QuantumSampler(config)
    monkeypatch.setattr(sampler.backend, "step", lambda *a: calls.append(a) or 1 / 0)
    sampler.sample(torch.randn(4, 50), groups=[0, 0, 1, 1])  # coupled: staged
    assert calls == []
    with pytest.raises(ZeroDivisionError):  # uncoupled: the fused step
        sampler.sample(torch.randn(4, 50))
    assert len(calls) == 1
    assert QuantumSampler(SamplerConfig(backend="neal", top_k=8)).fused_devices == ()


def test_fused_step_names_nan_and_empty_rows():
    sampler = QuantumSampler(SamplerConfig(top_k=8, seed=0))
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
        sampler.sample(_logits())
