"""Joint sampling through transformers: each prompt's ``num_return_sequences`` rows are siblings."""

import numpy as np
import pytest
import torch

from qsample import ConfigError
from qsample.plugins.transformers import QSampleLogitsProcessor, qsample_generate

PROMPTS = ["Once upon a time", "What is two plus three? The answer"]
N = 4
NEW_TOKENS = 6


def generate(tiny_llama, processor=None, **kwargs):
    model, tokenizer = tiny_llama
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    extra = {"logits_processor": [processor]} if processor is not None else {}
    out = model.generate(**inputs, do_sample=True, num_return_sequences=N,
                         max_new_tokens=NEW_TOKENS, pad_token_id=tokenizer.pad_token_id,
                         **extra, **kwargs)
    return out[:, inputs["input_ids"].shape[1]:].reshape(len(PROMPTS), N, -1)


def test_distinct_siblings_never_share_their_first_token(tiny_llama):
    """Every prompt's n rows start alike, so at step 0 they form one group: Gumbel-top-k hands
    them n different tokens. With the prefix scope, sequences that differ are never coupled
    again, so no two siblings can ever be the same sequence."""
    for seed in range(3):
        processor = QSampleLogitsProcessor(mode="gumbel", coupling="distinct", top_k=16,
                                           seed=seed, num_return_sequences=N)
        new = generate(tiny_llama, processor)
        for prompt in new:
            assert len({int(t) for t in prompt[:, 0]}) == N
            assert len({tuple(row.tolist()) for row in prompt}) == N
        first = processor.telemetry.steps()[0]
        assert first.group.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
        assert (processor.telemetry.steps()[1].group == -1).all()  # prefixes now all differ


def test_without_coupling_siblings_repeat_at_low_temperature(tiny_llama):
    """Negative control: independent rows at a low temperature take the same first token."""
    processor = QSampleLogitsProcessor(mode="gumbel", top_k=16, seed=0, temperature=0.05,
                                       num_return_sequences=N)
    new = generate(tiny_llama, processor)
    assert all(len({int(t) for t in prompt[:, 0]}) < N for prompt in new)
    distinct = QSampleLogitsProcessor(mode="gumbel", top_k=16, seed=0, temperature=0.05,
                                      coupling="distinct", num_return_sequences=N)
    new = generate(tiny_llama, distinct)
    assert all(len({int(t) for t in prompt[:, 0]}) == N for prompt in new)


def test_boltzmann_always_scope_couples_siblings_at_every_step(tiny_llama):
    processor = QSampleLogitsProcessor(mode="boltzmann", coupling=2.0, coupling_scope="always",
                                       top_k=8, seed=1, num_return_sequences=N)
    generate(tiny_llama, processor)
    for step in processor.telemetry.steps():
        assert step.group.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_custom_generate_takes_n_from_the_generation_config(tiny_llama):
    model, tokenizer = tiny_llama
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    processor = QSampleLogitsProcessor(mode="gumbel", coupling="distinct", top_k=16, seed=0,
                                       num_return_sequences=N)
    via_processor = generate(tiny_llama, processor)
    out = model.generate(**inputs, custom_generate=qsample_generate, num_return_sequences=N,
                         do_sample=True, max_new_tokens=NEW_TOKENS,
                         pad_token_id=tokenizer.pad_token_id,
                         qsample={"mode": "gumbel", "coupling": "distinct", "top_k": 16,
                                  "seed": 0})
    new = out[:, inputs["input_ids"].shape[1]:].reshape(len(PROMPTS), N, -1)
    assert torch.equal(new, via_processor)


def test_coupling_needs_the_number_of_sequences(tiny_llama):
    with pytest.raises(ConfigError, match="num_return_sequences"):
        QSampleLogitsProcessor(coupling="distinct")
    processor = QSampleLogitsProcessor(coupling="distinct", num_return_sequences=3)
    with pytest.raises(ValueError, match="num_return_sequences = 3"):
        processor.groups(torch.zeros(8, 2, dtype=torch.long))
    assert QSampleLogitsProcessor(num_return_sequences=N).groups(torch.zeros(8, 2)) is None
    groups = processor.groups(torch.tensor([[1, 2], [1, 2], [1, 3], [4, 4], [4, 4], [4, 4]]))
    assert np.array_equal(groups, [0, 0, -1, 1, 1, 1])
