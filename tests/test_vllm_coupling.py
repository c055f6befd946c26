"""Issue 13 in vLLM: the children of one ``n > 1`` request are sampled jointly
(``qsample_coupling``), and never with another request's rows."""

from copy import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm")
# one worker: one server or engine at a time; the operator config reset around every test
pytestmark = [pytest.mark.xdist_group("vllm-engine"),
              pytest.mark.usefixtures("fresh_operator_config")]
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor.interface import (  # noqa: E402
    LogitsContext,
    LogitsProcRequestState,
)

from qsample import QuantumSampler  # noqa: E402
from qsample.plugins import vllm as plugin  # noqa: E402
from qsample.plugins.vllm import QSampleVLLMProcessor, admit, request_config  # noqa: E402
from qsample.plugins.vllm.admission import GROUP_KEY, check_raw_request  # noqa: E402
from qsample.plugins.vllm.processor import JointLedger, _Request  # noqa: E402

DISTINCT = {"qsample_mode": "gumbel", "qsample_coupling": "distinct", "qsample_seed": 7}
VOCAB = 100


@pytest.fixture
def sampler_calls(monkeypatch):
    """Every `QuantumSampler.sample` call's ``groups`` (None or a copy), in order."""
    calls = []
    original = QuantumSampler.sample

    def spy(self, logits, *, row_seeds=None, groups=None, continuation=None):
        calls.append(None if groups is None else np.array(groups))
        return original(self, logits, row_seeds=row_seeds, groups=groups,
                        continuation=continuation)

    monkeypatch.setattr(QuantumSampler, "sample", spy)
    return calls


def group_sizes(groups):
    """Sorted sizes of the coupled groups of one call."""
    return sorted(np.unique(groups[groups >= 0], return_counts=True)[1].tolist())


def children(parent):
    """The child params vLLM makes of an admitted parent (parallel_sampling.ParentRequest)."""
    out = []
    for index in range(parent.n):
        child = copy(parent)
        child.n = 1
        child.seed = None if parent.seed is None else parent.seed + index
        out.append(child)
    return out


# -- admission: the keys, and the group stamped on each parent --------------------------------

def test_coupling_keys_set_the_sampler_config():
    config, *_ = request_config(SamplingParams(extra_args=DISTINCT))
    assert (config.coupling, config.coupling_scope) == (float("inf"), "prefix")
    config, *_ = request_config(SamplingParams(extra_args={
        "qsample_mode": "boltzmann", "qsample_coupling": "1.5",
        "qsample_coupling_scope": "always"}))
    assert (config.coupling, config.coupling_scope) == (1.5, "always")


@pytest.mark.parametrize("extra, key", [
    ({"qsample_coupling": -1}, "qsample_coupling"),
    ({"qsample_coupling": "many"}, "qsample_coupling"),
    ({"qsample_mode": "gumbel", "qsample_coupling": 0.5}, "qsample_coupling"),  # no finite one
    ({"qsample_coupling_scope": "sometimes"}, "qsample_coupling_scope"),
    ({**DISTINCT, "qsample_coupling_scope": "always"}, "qsample_coupling_scope"),
    ({**DISTINCT, "qsample_top_k": 3}, "qsample_coupling"),  # 4 children, 3 candidates
])
def test_bad_coupling_values_are_refused_naming_the_key(extra, key):
    with pytest.raises(ValueError, match=key) as caught:
        QSampleVLLMProcessor.validate_params(SamplingParams(n=4, temperature=1.0,
                                                            extra_args=extra))
    assert caught.value.key == key


def test_the_cost_cap_counts_a_coupled_row_n_times():
    """A coupled group of n rows anneals n x num_reads reads: batched-sa's cap of 1,000,000 admits
    250 x 20 x 200 for one row, and for n = 2 coupled children it is twice over the cap."""
    heavy = {"qsample_top_k": 250, "qsample_num_reads": 20, "qsample_num_sweeps": 200,
             "qsample_mode": "boltzmann"}
    assert admit(SamplingParams(n=2, extra_args=dict(heavy))) is not None  # coupling 0
    with pytest.raises(ValueError, match=r"x 2 coupled children = 2000000, exceeds"):
        admit(SamplingParams(n=2, extra_args={**heavy, "qsample_coupling": 1.0}))


def test_each_admitted_parent_gets_its_own_group_in_its_own_dict():
    shared = dict(DISTINCT)  # the OpenAI server hands every prompt of a request one dict
    first, second = (SamplingParams(n=4, temperature=1.0, extra_args=shared) for _ in range(2))
    admit(first)
    admit(second)
    assert GROUP_KEY not in shared
    assert first.extra_args[GROUP_KEY] != second.extra_args[GROUP_KEY]
    assert {request_config(c).config for c in children(first)} == {request_config(first).config}
    stamp = first.extra_args[GROUP_KEY]
    admit(first)  # LLM.generate validates one caller object once per prompt
    assert first.extra_args[GROUP_KEY] not in (stamp, second.extra_args[GROUP_KEY])


@pytest.mark.parametrize("n, extra", [
    (1, DISTINCT),  # no siblings
    (4, {"qsample": 1}),  # not coupled
])
def test_a_group_id_a_request_brings_is_dropped(n, extra):
    params = SamplingParams(n=n, temperature=1.0, extra_args={**extra, GROUP_KEY: 12345})
    admit(params)
    assert GROUP_KEY not in params.extra_args


def test_a_group_id_a_request_brings_is_replaced_by_a_fresh_one():
    params = SamplingParams(n=4, temperature=1.0, extra_args={**DISTINCT, GROUP_KEY: 12345})
    admit(params)
    assert params.extra_args[GROUP_KEY] != 12345
    assert request_config(SamplingParams(extra_args={GROUP_KEY: 1})) is None  # not an opt-in


def test_the_middleware_refuses_a_group_id_from_the_client():
    with pytest.raises(plugin.QSampleRequestError, match="set by the server") as caught:
        check_raw_request({"n": 2, "vllm_xargs": {**DISTINCT, GROUP_KEY: 5}})
    assert caught.value.key == GROUP_KEY


# -- the V1 interface ---------------------------------------------------------------------------

def v1_processor():
    return QSampleVLLMProcessor(None, torch.device("cpu"), False)


def peaked_logits(rows):
    logits = torch.zeros(rows, VOCAB)
    logits[:, 7] = 6.0
    return logits


def test_v1_couples_the_children_of_one_request_only_and_splits_them_by_prefix(sampler_calls):
    first = SamplingParams(n=2, temperature=1.0, extra_args=dict(DISTINCT))
    second = SamplingParams(n=2, temperature=1.0, extra_args=dict(DISTINCT))
    single = SamplingParams(n=1, temperature=1.0, extra_args=dict(DISTINCT))
    for parent in (first, second, single):
        admit(parent)
    rows = [*children(first), *children(second), single]
    outputs = [[] for _ in rows]
    proc = v1_processor()
    proc.update_state(BatchUpdate(batch_size=len(rows), removed=[], moved=[], added=[
        (i, p, [1, 2], out) for i, (p, out) in enumerate(zip(rows, outputs, strict=True))]))
    chosen = proc.apply(peaked_logits(len(rows))).argmax(dim=1).tolist()
    (groups,) = sampler_calls
    assert groups[0] == groups[1] != groups[2] == groups[3] and groups[4] == -1
    assert chosen[0] != chosen[1] and chosen[2] != chosen[3]
    for out, token in zip(outputs, chosen, strict=True):
        out.append(token)
    # the first pair now differs, the second is made to share a prefix (as vLLM may not
    # honour a forced token): only the second stays coupled, each of the first continues a
    # joint sample of its own (a group of one), the uncoupled request is in none
    outputs[3][0] = outputs[2][0]
    proc.apply(peaked_logits(len(rows)))
    groups = sampler_calls[-1]
    assert group_sizes(groups) == [1, 1, 2] and groups[2] == groups[3] and groups[4] == -1
    assert len({groups[0], groups[1], groups[2]}) == 3
    assert [proc.requests[i].hashed for i in range(4)] == [1, 1, 1, 1]
    # a sibling that left the batch (finished, or scheduled in another step) leaves the other
    # alone in its joint sample
    proc.update_state(BatchUpdate(batch_size=5, removed=[3], moved=[], added=[]))
    outputs[2].append(5)
    proc.apply(peaked_logits(len(rows)))
    assert group_sizes(sampler_calls[-1]) == [1, 1, 1] and sampler_calls[-1][-1] == -1


@pytest.mark.parametrize("arrivals", [(1, 1, 1, 1), (1, 3), (2, 2), (4,)])
def test_v1_children_arriving_in_different_steps_take_distinct_first_tokens(arrivals):
    """vLLM's API server adds an n > 1 request's children one at a time, so a step may start
    with some of them: the later ones continue the same joint sample, so that with one token
    far likelier than the rest (which an uncoupled child would take again) the n first tokens
    are still distinct. (That the continued sample is the same whatever the arrivals is
    tested on the sampler, test_joint.py.)"""
    parent = SamplingParams(n=4, temperature=1.0, extra_args={**DISTINCT, "qsample_top_k": 8})
    admit(parent)
    kids = children(parent)
    outputs = [[] for _ in kids]
    proc = v1_processor()
    present = 0
    for size in arrivals:
        added = [(i, kids[i], [1], outputs[i]) for i in range(present, present + size)]
        present += size
        proc.update_state(BatchUpdate(batch_size=present, removed=[], moved=[], added=added))
        forced = proc.apply(peaked_logits(present)).argmax(dim=1).tolist()
        for out, token in zip(outputs[:present], forced, strict=True):
            out.append(token)
    first = [out[0] for out in outputs]
    assert len(set(first)) == 4 and 7 in first
    assert proc.stats.coupled_rows == proc.stats.rows  # every row in its joint sample


def test_the_joint_ledger_forgets_samples_after_its_window():
    ledger = JointLedger(window=3)
    ledger.record([(1, 0), (1, 0), (2, 5)], [7, 9, 4], step=1)
    assert ledger.taken((1, 0)).tolist() == [7, 9] and len(ledger) == 2
    ledger.record([(2, 5)], [3], step=3)  # touched again: kept past sample (1, 0)
    ledger.record([(3, 0)], [1], step=4)
    assert ledger.taken((1, 0)).size == 0 and ledger.taken((2, 5)).tolist() == [4, 3]
    ledger.record([(3, 0)], [2], step=7)
    assert len(ledger) == 1


def test_v1_hashes_only_the_tokens_added_since_the_last_step(monkeypatch):
    folded = []
    fold = _Request.fold
    monkeypatch.setattr(_Request, "fold", lambda self, tokens: (folded.append(len(tokens)),
                                                                 fold(self, tokens)))
    parent = SamplingParams(n=2, temperature=1.0, extra_args=dict(DISTINCT))
    admit(parent)
    outputs = [[], []]
    added = [(i, p, [1], out)
             for i, (p, out) in enumerate(zip(children(parent), outputs, strict=True))]
    proc = v1_processor()
    proc.update_state(BatchUpdate(batch_size=2, removed=[], moved=[], added=added))
    proc.apply(peaked_logits(2))  # step 0: an empty prefix
    for _ in range(4):
        for out in outputs:
            out.append(3)  # the same tokens: the pair stays coupled
        proc.apply(peaked_logits(2))
    assert folded == [0, 0] + [1] * 8  # then one new token per row and step
    assert proc.stats.coupled_rows == 2 * 5


def test_requests_that_are_not_coupled_take_the_plain_path(sampler_calls):
    parent = SamplingParams(n=3, temperature=1.0, extra_args={"qsample": 1, "qsample_seed": 2})
    admit(parent)
    proc = v1_processor()
    proc.update_state(BatchUpdate(batch_size=3, removed=[], moved=[], added=[
        (i, p, [1], []) for i, p in enumerate(children(parent))]))
    proc.apply(peaked_logits(3))
    assert sampler_calls == [None]


def test_a_failing_step_falls_back_to_the_coupled_target(offline_backend):
    parent = SamplingParams(n=4, temperature=1.0, extra_args={**DISTINCT,
                                                              "qsample_backend": "offline"})
    admit(parent)
    proc = v1_processor()
    proc.update_state(BatchUpdate(batch_size=4, removed=[], moved=[], added=[
        (i, p, [1], []) for i, p in enumerate(children(parent))]))
    chosen = proc.apply(peaked_logits(4)).argmax(dim=1).tolist()
    assert proc.stats.fallbacks == 4 and len(set(chosen)) == 4


# -- the Model Runner V2 interface ----------------------------------------------------------

def v2_processor(history, prompt_len):
    lengths = SimpleNamespace(np=np.full(8, prompt_len, dtype=np.int32))
    state = LogitsProcRequestState(device=torch.device("cpu"), max_num_reqs=8, vocab_size=VOCAB,
                                   all_token_ids=SimpleNamespace(gpu=history),
                                   prompt_len=lengths, prefill_len=lengths, total_len=None)
    return QSampleVLLMProcessor(None, state)


def context(slots, pos):
    mapping = torch.as_tensor(np.asarray(slots, dtype=np.int32))
    requests = np.unique(slots).astype(np.int32)
    return LogitsContext(expanded_idx_mapping=mapping, idx_mapping=torch.as_tensor(requests),
                         idx_mapping_np=requests, expanded_local_pos=torch.zeros_like(mapping),
                         input_ids=torch.zeros_like(mapping),
                         pos=torch.as_tensor(pos, dtype=torch.int64),
                         seq_lens_upper_bound_np=np.ones_like(requests))


def test_v2_reads_committed_tokens_from_the_device_and_leaves_draft_rows_alone(sampler_calls):
    prompt = 2
    history = torch.zeros(8, 16, dtype=torch.int32)
    parent = SamplingParams(n=3, temperature=1.0, extra_args=dict(DISTINCT))
    admit(parent)
    proc = v2_processor(history, prompt)
    for slot, child in zip((1, 4, 6), children(parent), strict=True):
        assert proc.add_request(slot, child)
    proc.apply(peaked_logits(3), context([1, 4, 6], [prompt - 1] * 3))
    assert group_sizes(sampler_calls[-1]) == [3]
    # two committed outputs each: slots 1 and 4 agree, slot 6 differs
    history[[1, 4, 6], prompt:prompt + 2] = torch.tensor([[5, 9], [5, 9], [5, 8]],
                                                         dtype=torch.int32)
    # slot 1 also has a draft row (position + 1): its prefix is not committed
    proc.apply(peaked_logits(4), context([1, 1, 4, 6], [prompt + 1, prompt + 2, prompt + 1,
                                                        prompt + 1]))
    groups = sampler_calls[-1]
    # the draft row is coupled to none; slot 6 continues a joint sample alone
    assert groups[0] == groups[2] >= 0 and groups[1] == -1 and groups[3] not in (-1, groups[0])
    assert [proc.requests[slot].hashed for slot in (1, 4, 6)] == [2, 2, 2]


# -- vllm.LLM end to end (in-process engine, CPU) --------------------------------------------

PROMPTS = ["Once upon a time", "The annealer", "What is two plus three?", "She opened the door"]
COLD = 0.3  # peaked enough that independent children repeat their first token


def first_tokens(engine, extra, n=4, prompts=PROMPTS):
    """Each prompt's children's first tokens, in child order."""
    request = SamplingParams(n=n, temperature=COLD, seed=3, max_tokens=3, extra_args=extra)
    outputs = engine.generate(prompts, request, use_tqdm=False)
    return [[c.token_ids[0] for c in sorted(o.outputs, key=lambda c: c.index)] for o in outputs]


def test_llm_distinct_children_start_with_distinct_tokens(llm, sampler_calls):
    firsts = first_tokens(llm[0], DISTINCT)
    assert all(len(set(tokens)) == 4 for tokens in firsts), firsts
    # step 0: one call, one group of 4 per prompt (one SamplingParams for all prompts)
    assert group_sizes(sampler_calls[0]) == [4] * len(PROMPTS)
    assert first_tokens(llm[0], DISTINCT) == firsts  # reproducible


def test_llm_independent_children_repeat_first_tokens(llm):
    """The negative control: the same requests without coupling repeat tokens."""
    firsts = first_tokens(llm[0], {"qsample_mode": "gumbel", "qsample_seed": 7})
    assert any(len(set(tokens)) < 4 for tokens in firsts), firsts


def test_llm_two_requests_are_never_coupled_with_each_other(llm, sampler_calls):
    """Two n = 2 requests on one prompt with one configuration, in one batch: every step
    couples each request's own pair (scope "always"), never the four rows together."""
    extra = {"qsample_mode": "boltzmann", "qsample_coupling": "distinct",
             "qsample_coupling_scope": "always", "qsample_seed": 7}
    requests = [SamplingParams(n=2, temperature=1.0, max_tokens=4, ignore_eos=True,
                               extra_args=dict(extra)) for _ in range(2)]
    outputs = llm[0].generate([PROMPTS[0]] * 2, requests, use_tqdm=False)
    assert all(len(c.token_ids) == 4 for o in outputs for c in o.outputs)
    assert sampler_calls and all(group_sizes(g) == [2, 2] for g in sampler_calls)


@pytest.mark.parametrize("extra, key", [
    ({**DISTINCT, "qsample_coupling_scope": "always"}, "qsample_coupling_scope"),
    ({**DISTINCT, "qsample_coupling": "-1"}, "qsample_coupling"),
])
def test_llm_refuses_bad_coupling_naming_the_key(llm, extra, key):
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match=key) as caught:
        first_tokens(llm[0], extra)
    refusal = caught.value.__cause__  # vLLM wraps validate_params' ValueError (HTTP 400)
    assert isinstance(refusal, ValueError) and refusal.key == key
