"""The transformers adapter on a tiny Llama made in the tests (random weights, local tokenizer)."""

import json
from threading import Thread

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from qsample import ConfigError, SamplerConfig
from qsample.plugins.transformers import QSampleLogitsProcessor, qsample_generate

PROMPTS = ["Once upon a time", "What is two plus three? The answer"]


def encode(tokenizer, prompts=PROMPTS):
    return tokenizer(prompts, return_tensors="pt", padding=True)


def run(model, tokenizer, processor, prompts=PROMPTS, **kwargs):
    inputs = encode(tokenizer, prompts)
    kwargs.setdefault("do_sample", False)
    kwargs.setdefault("max_new_tokens", 10)
    out = model.generate(**inputs, logits_processor=[processor],
                         pad_token_id=tokenizer.pad_token_id, **kwargs)
    return inputs, out


def test_processor_forces_exactly_one_token_per_row(tiny_llama):
    _, tokenizer = tiny_llama
    processor = QSampleLogitsProcessor(top_k=8, seed=0)
    scores = torch.randn(3, len(tokenizer))
    forced = processor(torch.zeros(3, 1, dtype=torch.long), scores)
    assert torch.isfinite(forced).sum(dim=1).tolist() == [1, 1, 1]
    chosen = forced.argmax(dim=1)
    assert (scores.topk(8, dim=1).indices == chosen[:, None]).any(dim=1).all()


def test_generated_tokens_are_the_ones_qsample_chose(tiny_llama):
    model, tokenizer = tiny_llama
    processor = QSampleLogitsProcessor(top_k=16, temperature=0.8, seed=1)
    inputs, out = run(model, tokenizer, processor)
    new = out[:, inputs["input_ids"].shape[1]:]
    chosen = torch.stack([torch.as_tensor(s.token_id) for s in processor.telemetry.steps()], dim=1)
    assert torch.equal(new, chosen[:, : new.shape[1]])


def test_same_seed_same_text_and_other_seed_differs(tiny_llama):
    model, tokenizer = tiny_llama
    texts = []
    for seed in (3, 3, 4):
        _, out = run(model, tokenizer, QSampleLogitsProcessor(top_k=32, seed=seed),
                     max_new_tokens=16)
        texts.append(tokenizer.batch_decode(out))
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


# A bare logits_processor= is called with (input_ids, scores) only: without walking the caller's
# frames it cannot see do_sample, num_beams or an assistant (issue 12). These detections are
# kept here, expected to fail, until transformers gives processors the generation config.
BARE_PROCESSOR_IS_BLIND = pytest.mark.xfail(
    strict=True, reason="a bare logits processor gets no generation config (issue 12)")


def test_do_sample_true_emits_the_same_tokens(tiny_llama):
    model, tokenizer = tiny_llama
    _, greedy = run(model, tokenizer, QSampleLogitsProcessor(top_k=16, seed=5))
    _, sampled = run(model, tokenizer, QSampleLogitsProcessor(top_k=16, seed=5), do_sample=True,
                     temperature=0.5, top_k=3)
    assert torch.equal(greedy, sampled)


@BARE_PROCESSOR_IS_BLIND
def test_do_sample_true_emits_the_same_tokens_and_warns_once(tiny_llama):
    model, tokenizer = tiny_llama
    _, greedy = run(model, tokenizer, QSampleLogitsProcessor(top_k=16, seed=5))
    processor = QSampleLogitsProcessor(top_k=16, seed=5)
    with pytest.warns(UserWarning, match="do_sample=False") as caught:
        _, sampled = run(model, tokenizer, processor, do_sample=True, temperature=0.5, top_k=3)
    assert torch.equal(greedy, sampled)
    assert sum("do_sample" in str(w.message) for w in caught) == 1


def test_left_padded_batch_and_num_return_sequences(tiny_llama):
    model, tokenizer = tiny_llama
    processor = QSampleLogitsProcessor(top_k=16, seed=2)
    inputs, out = run(model, tokenizer, processor, num_return_sequences=3, do_sample=True)
    assert inputs["attention_mask"][0].tolist().count(0) > 0  # the short prompt is padded
    assert out.shape[0] == 6
    assert processor.telemetry.steps()[0].batch_size == 6
    assert len({tuple(row.tolist()) for row in out}) > 2  # return sequences differ


def test_streamer_sees_the_generated_text(tiny_llama):
    model, tokenizer = tiny_llama
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    processor = QSampleLogitsProcessor(top_k=16, seed=6)
    inputs = encode(tokenizer, PROMPTS[:1])
    kwargs = dict(**inputs, logits_processor=[processor], do_sample=False, max_new_tokens=12,
                  streamer=streamer, pad_token_id=tokenizer.pad_token_id)
    result = {}
    thread = Thread(target=lambda: result.update(out=model.generate(**kwargs)))
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    new = result["out"][0, inputs["input_ids"].shape[1]:]
    assert streamed == tokenizer.decode(new, skip_special_tokens=True)


def test_eos_and_stopping_criteria_end_generation(tiny_llama):
    model, tokenizer = tiny_llama
    eos = tokenizer.eos_token_id
    inputs, out = run(model, tokenizer, QSampleLogitsProcessor(top_k=16, seed=0),
                      prompts=PROMPTS[:1], sequence_bias={(eos,): 100.0})
    assert out.shape[1] == inputs["input_ids"].shape[1] + 1 and out[0, -1] == eos

    class StopAfter(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.limit)

    stop = StopAfter()
    stop.limit = inputs["input_ids"].shape[1] + 3
    _, out = run(model, tokenizer, QSampleLogitsProcessor(top_k=16, seed=0), prompts=PROMPTS[:1],
                 stopping_criteria=StoppingCriteriaList([stop]))
    assert out.shape[1] == stop.limit


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models(tiny_llama_dir, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    processor = QSampleLogitsProcessor(top_k=16, seed=0)
    _, out = run(model, tokenizer, processor, max_new_tokens=5)
    assert out.shape[0] == 2 and processor.telemetry.summary()["fallbacks"] == 0


@BARE_PROCESSOR_IS_BLIND
def test_beam_search_and_assisted_decoding_are_refused(tiny_llama):
    model, tokenizer = tiny_llama
    with pytest.raises(ValueError, match="beam search"):
        run(model, tokenizer, QSampleLogitsProcessor(top_k=8), num_beams=2)
    with pytest.raises(ValueError, match="assisted"):
        run(model, tokenizer, QSampleLogitsProcessor(top_k=8), prompts=PROMPTS[:1],
            assistant_model=model)


def test_custom_generate_keyword_matches_the_processor_route(tiny_llama):
    model, tokenizer = tiny_llama
    _, reference = run(model, tokenizer, QSampleLogitsProcessor(top_k=16, seed=8),
                       max_new_tokens=8)
    processor = QSampleLogitsProcessor(top_k=16, seed=8)
    out = model.generate(**encode(tokenizer), custom_generate=qsample_generate,
                         qsample=processor, max_new_tokens=8, do_sample=True, temperature=3.0,
                         pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(out, reference)  # transformers' own warpers were dropped
    out = model.generate(**encode(tokenizer), custom_generate=qsample_generate,
                         qsample={"top_k": 16, "seed": 8}, max_new_tokens=8,
                         pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(out, reference)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(**encode(tokenizer), custom_generate=qsample_generate, num_beams=2,
                       qsample={}, max_new_tokens=2)


@pytest.mark.parametrize("options, refused", [
    ({"num_beams": 2}, "beam search"),
    ({"num_beams": 2, "do_sample": True}, "beam sample"),
    ({"prompt_lookup_num_tokens": 2}, "assisted generation"),
])
def test_custom_generate_refuses_beam_search_and_assisted_decoding(tiny_llama, options, refused):
    model, tokenizer = tiny_llama
    with pytest.raises(ValueError, match=refused):
        model.generate(**encode(tokenizer, PROMPTS[:1]), custom_generate=qsample_generate,
                       qsample={"top_k": 8}, max_new_tokens=2,
                       pad_token_id=tokenizer.pad_token_id, **options)


def test_processor_takes_a_config_and_overrides(tiny_llama):
    processor = QSampleLogitsProcessor(SamplerConfig(top_k=5), seed=9, mode="boltzmann")
    assert (processor.config.top_k, processor.config.seed, processor.config.mode) == (
        5, 9, "boltzmann")
    with pytest.raises(ConfigError, match="top_q"):
        QSampleLogitsProcessor(top_q=0.5)


def test_telemetry_after_generate(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    processor = QSampleLogitsProcessor(top_k=16, seed=0)
    run(model, tokenizer, processor, max_new_tokens=6)
    path = tmp_path / "trace.jsonl"
    assert processor.telemetry.write_jsonl(path) == 12
    record = json.loads(path.read_text().splitlines()[0])
    assert record["backend"] == "batched-sa" and record["k"] == 16
    summary = processor.summary(wall_seconds=1.0)
    assert summary["tokens"] == 12 and 0 < summary["sampler_share"] < 1
