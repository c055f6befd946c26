"""The vLLM plugin: request arguments, both runner interfaces, and vllm.LLM end to end on CPU."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm")
# one worker: one server or engine at a time; the operator config reset around every test
pytestmark = [pytest.mark.xdist_group("vllm-engine"),
              pytest.mark.usefixtures("fresh_operator_config")]
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor.interface import (  # noqa: E402
    LogitsContext,
    LogitsProcRequestState,
)

from qsample import rng as qrng  # noqa: E402
from qsample import sample_target  # noqa: E402
from qsample.plugins import vllm as plugin  # noqa: E402
from qsample.plugins.vllm import QSampleVLLMProcessor, admit, metrics, request_config  # noqa: E402
from qsample.plugins.vllm.admission import check_raw_request  # noqa: E402


def params(**extra):
    return SamplingParams(temperature=0.7, top_k=20, max_tokens=4, extra_args=extra or None)


# -- request arguments ----------------------------------------------------------------------

def test_requests_without_qsample_keys_do_not_opt_in():
    assert request_config(params()) is None
    assert request_config(params(other=1)) is None
    assert request_config(params(qsample=0)) is None


def test_opt_in_takes_the_requests_own_sampling_settings():
    config, seed, _ = request_config(params(qsample=1, qsample_seed=5))
    assert (config.temperature, config.top_k, config.backend, seed) == (0.7, 20, "batched-sa", 5)
    config, *_ = request_config(params(qsample_mode="boltzmann", qsample_top_k="8",
                                      qsample_temperature="1.2"))
    assert (config.mode, config.top_k, config.temperature) == ("boltzmann", 8, 1.2)


@pytest.mark.parametrize("extra, message", [
    ({"qsample_top_k": 0}, "qsample_top_k=0"),
    ({"qsample_mode": "x"}, "qsample_mode='x'"),
    ({"qsample_backend": "tree"}, "not allowed on this server"),
    ({"qsample_top_k": 10_000}, "cap of 256"),
    ({"qsample_num_sweeps": 10**6}, "cap of 2000"),
    ({"qsample_backend_params": "{}"}, "unknown request argument"),
])
def test_bad_or_disallowed_values_are_refused_naming_the_key(extra, message):
    with pytest.raises(ValueError, match=message):
        QSampleVLLMProcessor.validate_params(params(**extra))


def test_operator_config_file(tmp_path, monkeypatch):
    path = tmp_path / "qsample.json"
    path.write_text(json.dumps({"defaults": {"mode": "boltzmann", "top_k": 16},
                                "allowed_backends": ["neal", "tree"], "max": {"top_k": 16}}))
    monkeypatch.setenv("QSAMPLE_VLLM_CONFIG", str(path))
    config = request_config(SamplingParams(extra_args={"qsample": 1,
                                                       "qsample_backend": "tree"})).config
    assert (config.mode, config.top_k, config.backend) == ("boltzmann", 16, "tree")
    with pytest.raises(ValueError, match="cap of 16"):
        request_config(SamplingParams(extra_args={"qsample_top_k": 17}))


# -- admission: configuration mistakes are refused before the request runs -------------------

@pytest.fixture
def permissive_operator(tmp_path, monkeypatch):
    path = tmp_path / "operator.json"
    path.write_text(json.dumps({"allowed_backends": ["batched-sa", "neal", "tree", "exact",
                                                     "tabu", "dwave"]}))
    monkeypatch.setenv("QSAMPLE_VLLM_CONFIG", str(path))
    monkeypatch.delenv("DWAVE_API_TOKEN", raising=False)
    plugin.reset_operator_config()


@pytest.mark.parametrize("extra, key, message", [
    ({"qsample_backend": "tree", "qsample_top_k": 64}, "qsample_top_k", "at most 25"),
    ({"qsample_backend": "exact", "qsample_top_k": 30}, "qsample_top_k", "at most 20"),
    ({"qsample_backend": "tabu", "qsample_mode": "boltzmann"}, "qsample_backend", "thermal"),
    ({"qsample_backend": "dwave"}, "qsample_backend", "DWAVE_API_TOKEN"),
])
def test_an_allowed_backend_that_cannot_run_the_request_is_refused_at_admission(
        permissive_operator, extra, key, message):
    with pytest.raises(plugin.QSampleRequestError, match=message) as caught:
        QSampleVLLMProcessor.validate_params(params(**extra))
    assert caught.value.key == key


def test_a_remote_qiskit_device_without_its_token_is_refused_at_admission(tmp_path,
                                                                          monkeypatch):
    """An operator serving IBM Quantum through `qiskit` names the device in its defaults; the
    token comes from the environment only, and without it a request is refused naming the
    variable (HTTP 400 over the server, as test_vllm_server checks for originq)."""
    pytest.importorskip("qiskit_aer")
    path = tmp_path / "operator.json"
    path.write_text(json.dumps({"defaults": {"backend": "qiskit", "mode": "boltzmann",
                                             "backend_params": {"device": "ibm_fez"}},
                                "allowed_backends": ["qiskit"]}))
    monkeypatch.setenv("QSAMPLE_VLLM_CONFIG", str(path))
    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    plugin.reset_operator_config()
    with pytest.raises(plugin.QSampleRequestError, match="QISKIT_IBM_TOKEN") as caught:
        QSampleVLLMProcessor.validate_params(params(qsample=1))
    assert caught.value.key == "qsample_backend"


def test_the_annealing_cost_per_step_is_capped_per_backend():
    # the old field caps allowed neal at top_k 256 x 32 reads x 2000 sweeps (7x a neighbour)
    with pytest.raises(ValueError, match=r"cost per step.*exceeds this server's cap of 500000"):
        admit(params(qsample_backend="neal", qsample_top_k=256, qsample_num_reads=32,
                     qsample_num_sweeps=2000))
    at_cap = admit(params(qsample_backend="batched-sa", qsample_top_k=250, qsample_num_reads=20,
                          qsample_num_sweeps=200))  # 1,000,000
    assert at_cap is not None


def test_booleans_are_not_integers():
    with pytest.raises(ValueError, match="qsample_top_k=True"):
        admit(params(qsample_top_k=True))
    with pytest.raises(plugin.QSampleRequestError, match="not a boolean") as caught:
        check_raw_request({"vllm_xargs": {"qsample_top_k": True}})
    assert caught.value.key == "qsample_top_k"
    check_raw_request({"vllm_xargs": {"qsample_top_k": "8", "qsample": 1}})  # strings pass


def test_the_middleware_answers_http_400_before_a_stream_starts():
    from fastapi import FastAPI, Request
    from fastapi.responses import PlainTextResponse
    from fastapi.testclient import TestClient

    app = FastAPI()  # as vLLM's server applies a function passed with --middleware

    @app.post("/v1/completions")
    async def completions(request: Request):
        await request.body()  # the handler still reads the body the middleware read
        return PlainTextResponse("streamed")

    app.middleware("http")(plugin.admission_middleware)
    client = TestClient(app)
    refused = client.post("/v1/completions", json={
        "prompt": "x", "stream": True, "vllm_xargs": {"qsample_top_k": 0}})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "qsample_top_k"
    boolean = client.post("/v1/completions", json={"vllm_xargs": {"qsample_top_k": True}})
    assert boolean.status_code == 400 and "boolean" in boolean.json()["error"]["message"]
    fine = client.post("/v1/completions", json={"stream": True, "vllm_xargs": {"qsample": 1}})
    assert fine.status_code == 200 and fine.text == "streamed"
    assert client.post("/v1/completions", content=b"not json").status_code == 200


def test_n_greater_than_one_gives_each_child_its_own_stream():
    parent = SamplingParams(n=3, temperature=0.8, extra_args={"qsample_seed": 7})
    admit(parent)
    assert parent.seed == 7  # vLLM gives child i the seed 7 + i
    children = [SamplingParams(temperature=0.8, seed=parent.seed + i, extra_args=parent.extra_args)
                for i in range(3)]
    seeds = [request_config(child).seed for child in children]
    assert len(set(seeds)) == 3
    assert seeds == [request_config(child).seed for child in children]  # reproducible
    single = SamplingParams(temperature=0.8, extra_args={"qsample_seed": 7})
    admit(single)
    assert single.seed is None and request_config(single).seed == 7


def test_a_refused_streamed_request_is_one_log_line(caplog):
    import logging

    from vllm.exceptions import VLLMValidationError

    plugin.register()
    serving = logging.getLogger(plugin.STREAM_ERROR_LOGGERS[0])
    try:
        try:
            admit(params(qsample_top_k=0))
        except ValueError as exc:
            raise VLLMValidationError(str(exc)) from exc
    except VLLMValidationError:
        with caplog.at_level(logging.ERROR, logger=serving.name):
            serving.exception("Error in completion stream generator.")
    (record,) = caplog.records
    assert record.getMessage().startswith("qsample refused a streamed request: qsample_top_k=0")
    assert record.exc_info is None and "Traceback" not in caplog.text


# -- metrics -------------------------------------------------------------------------------------

def test_engine_snapshots_are_summed_under_the_api_servers_metrics(tmp_path, monkeypatch):
    from prometheus_client import CollectorRegistry, generate_latest

    monkeypatch.setenv(metrics.METRICS_DIR_ENV, str(tmp_path))
    metrics.record_seconds(rows=3, seconds=0.002)
    metrics.record_failure(2, "TimeoutError: QPU busy", 0.01, fallback=True)
    metrics.write_snapshot()
    (snapshot,) = tmp_path.glob("engine-*.prom")
    (tmp_path / "engine-1.prom").write_text(snapshot.read_text())  # a second engine process
    registry = CollectorRegistry()
    registry.register(metrics.SnapshotCollector(tmp_path))
    text = generate_latest(registry).decode()
    rows = metric_value(text, "qsample_rows_total")
    assert rows >= 10 and rows % 2 == 0  # both snapshots, summed
    assert metric_value(text, 'qsample_fallback_rows_total{reason="TimeoutError"}') >= 4
    assert "qsample_sampler_seconds_bucket" in text


def test_rows_left_to_vllm_are_not_counted_as_sampled_by_qsample():
    from prometheus_client import generate_latest

    def sampled() -> float:
        return metric_value(generate_latest(metrics.ENGINE_REGISTRY).decode(),
                            "qsample_rows_total")

    before = sampled()
    metrics.record_failure(3, "RuntimeError: device lost", 0.01, fallback=False)  # policy "error"
    assert sampled() == before
    metrics.record_failure(3, "RuntimeError: device lost", 0.01, fallback=True)  # policy "exact"
    assert sampled() == before + 3


def test_a_step_only_requests_the_snapshot_and_a_thread_writes_it_within_the_interval(
        tmp_path, monkeypatch):
    """`publish` on the decoding step sets a flag; the snapshot appears within
    PUBLISH_INTERVAL_SECONDS (plus a margin for a loaded machine), once for many steps."""
    import time

    monkeypatch.setenv(metrics.METRICS_DIR_ENV, str(tmp_path))
    writes = []
    original = metrics.write_snapshot
    monkeypatch.setattr(metrics, "write_snapshot", lambda: (writes.append(1), original()))
    writer = metrics.SnapshotWriter(interval=0.2)
    start = time.perf_counter()
    for _ in range(50):
        writer.request()
    assert time.perf_counter() - start < 0.2 and not writes  # nothing written on the caller
    deadline = time.monotonic() + 5.0
    while not list(tmp_path.glob("engine-*.prom")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(tmp_path.glob("engine-*.prom")) and len(writes) == 1
    writer.flush()  # nothing pending: no second write
    assert len(writes) == 1


def metric_value(text, name):
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    assert lines, f"{name} not in the exposition"
    return float(lines[0].split()[-1])


# -- the V1 interface -------------------------------------------------------------------------

def v1_processor():
    return QSampleVLLMProcessor(None, torch.device("cpu"), False)


def test_v1_forces_opted_in_rows_and_leaves_the_others_bit_identical():
    proc = v1_processor()
    assert proc.runner == "v1" and not proc.is_argmax_invariant()
    outputs = [[], [], [], []]
    proc.update_state(BatchUpdate(batch_size=4, removed=[], moved=[], added=[
        (0, params(qsample=1, qsample_seed=1), [1], outputs[0]),
        (1, params(), [1], outputs[1]),
        (2, params(qsample_top_k=4, qsample_seed=2), [1], outputs[2]),
        (3, params(), [1], outputs[3]),
    ]))
    logits = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    original = logits.clone()
    out = proc.apply(logits)
    assert torch.equal(out[[1, 3]], original[[1, 3]])
    for row, k in ((0, 20), (2, 4)):
        assert torch.isfinite(out[row]).sum() == 1
        assert int(out[row].argmax()) in original[row].topk(k).indices.tolist()
    assert proc.stats.rows == 2 and proc.stats.sampler_calls == 2  # two configs, two calls


def test_v1_follows_moves_swaps_and_removals():
    proc = v1_processor()
    proc.update_state(BatchUpdate(batch_size=2, removed=[], moved=[], added=[
        (0, params(qsample=1), [1], []), (1, params(), [1], [])]))
    proc.update_state(BatchUpdate(batch_size=2, removed=[], added=[],
                                  moved=[(0, 1, MoveDirectionality.SWAP)]))
    assert set(proc.requests) == {1}
    proc.update_state(BatchUpdate(batch_size=1, removed=[1], added=[], moved=[]))
    assert proc.requests == {}
    logits = torch.randn(2, 10)
    assert proc.apply(logits) is logits


def test_a_failing_step_leaves_rows_to_vllm_and_is_counted(tmp_path, monkeypatch, request):
    path = tmp_path / "operator.json"
    path.write_text(json.dumps({"fallback": "error"}))
    monkeypatch.setenv("QSAMPLE_VLLM_CONFIG", str(path))
    plugin.reset_operator_config()
    request.addfinalizer(plugin.reset_operator_config)
    proc = v1_processor()
    proc.update_state(BatchUpdate(batch_size=1, removed=[], moved=[], added=[
        (0, params(qsample=1), [1], [])]))
    logits = torch.randn(1, 50)
    logits[0, 3] = float("nan")  # under fallback "error" the core sampler refuses NaN rows
    original = logits.clone()
    out = proc.apply(logits)
    assert torch.equal(torch.nan_to_num(out), torch.nan_to_num(original))
    assert proc.stats.errors == 1 and "NaN" in proc.stats.last_error


def test_a_nan_row_takes_its_substitute_token_and_is_counted(monkeypatch):
    """Fallback "exact" (the default): the bad-logits policy of `qsample.pipeline` gives the
    row its largest non-NaN logit, counted as a fallback; the server's other rows are sampled."""
    monkeypatch.delenv("QSAMPLE_VLLM_CONFIG", raising=False)
    plugin.reset_operator_config()
    proc = v1_processor()
    proc.update_state(BatchUpdate(batch_size=2, removed=[], moved=[], added=[
        (0, params(qsample=1, qsample_seed=1), [1], []),
        (1, params(qsample=1, qsample_seed=2), [1], [])]))
    logits = torch.randn(2, 50)
    logits[0, 3] = float("nan")
    logits[0, 7] = 10.0
    out = proc.apply(logits.clone())
    assert torch.isfinite(out[0]).sum() == 1 and bool(torch.isfinite(out[0, 7]))
    assert torch.isfinite(out[1]).sum() == 1
    assert proc.stats.fallbacks == 1 and proc.stats.errors == 0


def test_a_sampler_that_cannot_be_built_is_built_once_and_its_rows_fall_back_exactly(
        permissive_operator, caplog):
    import logging

    proc = v1_processor()
    outputs = []  # a dwave request that got past admission (e.g. no token in the engine's env)
    proc.update_state(BatchUpdate(batch_size=1, removed=[], moved=[], added=[
        (0, params(qsample_backend="dwave", qsample_seed=4), [1], outputs)]))
    plan = request_config(params(qsample_backend="dwave", qsample_seed=4))
    logits = torch.randn(1, 100, generator=torch.Generator().manual_seed(2))
    with caplog.at_level(logging.WARNING, logger="vllm.qsample"):
        for position in range(3):
            out = proc.apply(logits.clone())
            expected = sample_target(logits, plan.config,
                                     qrng.combine(np.array([plan.seed], np.uint64),
                                                  np.array([position], np.uint64)))
            assert int(out[0].argmax()) == int(expected[0]) and torch.isfinite(out[0]).sum() == 1
            outputs.append(int(expected[0]))
    assert proc.samplers.builds == 1  # not rebuilt (no connection attempt) every step
    assert proc.stats.fallbacks == 3 and proc.stats.errors == 0
    warnings = [r for r in caplog.records if "DWAVE_API_TOKEN" in r.getMessage()]
    assert len(warnings) == 1 and "fallback 'exact'" in warnings[0].getMessage()


def test_a_run_time_backend_failure_is_counted_by_reason(offline_backend):
    before = metrics.FALLBACKS.labels(reason="TimeoutError")._value.get()
    proc = v1_processor()
    proc.update_state(BatchUpdate(batch_size=2, removed=[], moved=[], added=[
        (0, params(qsample_backend="offline"), [1], []),
        (1, params(qsample_backend="offline"), [1], [])]))
    out = proc.apply(torch.randn(2, 100))
    assert (torch.isfinite(out).sum(dim=1) == 1).all()
    assert proc.stats.fallbacks == 2
    assert metrics.FALLBACKS.labels(reason="TimeoutError")._value.get() - before == 2


# -- the Model Runner V2 interface, against vLLM's real MRV2 types ---------------------------

def v2_processor(prompt_len=1):
    # vLLM's own state type; its UVA buffers need pinned (accelerator) memory, so the per-slot
    # arrays stand in with the one attribute the processor reads, ``.np``.
    lengths = SimpleNamespace(np=np.full(8, prompt_len, dtype=np.int32))
    state = LogitsProcRequestState(device=torch.device("cpu"), max_num_reqs=8, vocab_size=100,
                                   all_token_ids=None, prompt_len=lengths, prefill_len=lengths,
                                   total_len=None)
    return QSampleVLLMProcessor(None, state)


def context(slots, pos=None, prompt_len=1):
    """vLLM's LogitsContext; ``pos`` defaults to each row being its request's first output."""
    slots = np.asarray(slots, dtype=np.int32)
    mapping = torch.as_tensor(slots, dtype=torch.int32)
    pos = torch.full_like(mapping, prompt_len - 1) if pos is None else torch.as_tensor(pos)
    requests = np.unique(slots)
    return LogitsContext(expanded_idx_mapping=mapping, idx_mapping=torch.as_tensor(requests),
                         idx_mapping_np=requests, expanded_local_pos=torch.zeros_like(mapping),
                         input_ids=torch.zeros_like(mapping), pos=pos.to(torch.int64),
                         seq_lens_upper_bound_np=np.ones_like(requests))


def test_v2_maps_rows_to_slots_and_handles_slot_reuse():
    proc = v2_processor()
    assert proc.runner == "v2"
    assert proc.add_request(5, params(qsample=1, qsample_seed=9)) is True
    assert proc.add_request(2, params()) is False
    proc.apply_staged_writes()
    logits = torch.randn(3, 100, generator=torch.Generator().manual_seed(1))
    original = logits.clone()
    out = proc.apply(logits, context([2, 5, 7]))  # row 1 holds slot 5
    assert torch.equal(out[[0, 2]], original[[0, 2]])
    assert torch.isfinite(out[1]).sum() == 1
    # the same request at another row position samples the same token (keyed by seed, position)
    again = v2_processor()
    again.add_request(1, params(qsample=1, qsample_seed=9))
    other = again.apply(original[[1]].clone(), context([1]))
    assert int(other[0].argmax()) == int(out[1].argmax())
    # slot 5 is recycled for a request that does not opt in: no longer touched
    assert proc.add_request(5, params()) is False
    logits = torch.randn(1, 100)
    assert torch.equal(proc.apply(logits.clone(), context([5])), logits)


def test_v2_keys_each_draft_row_by_its_own_output_position():
    """Speculative decoding: a request owns one row per draft token. Each row is keyed by its
    own output position (pos + 1 - prompt_len), so the tokens are the ones the request gets
    one step at a time, whatever the draft length; chunked-prefill rows are left alone."""
    prompt = 5
    logits = torch.randn(3, 100, generator=torch.Generator().manual_seed(3))
    drafts = v2_processor(prompt)
    drafts.add_request(0, params(qsample=1, qsample_seed=9))
    out = drafts.apply(logits.clone(), context([0, 0, 0], pos=[6, 7, 8], prompt_len=prompt))
    stepwise = v2_processor(prompt)
    stepwise.add_request(3, params(qsample=1, qsample_seed=9))
    for row, pos in enumerate((6, 7, 8)):  # output positions 2, 3, 4
        one = stepwise.apply(logits[[row]].clone(), context([3], pos=[pos], prompt_len=prompt))
        assert int(one[0].argmax()) == int(out[row].argmax())
    assert len({int(out[row].argmax()) for row in range(3)}) >= 1
    prefill = v2_processor(prompt)
    prefill.req_states.prefill_len.np[:] = 20  # a long prompt, fed in chunks
    prefill.add_request(0, params(qsample=1))
    chunk = logits[[0]].clone()
    assert torch.equal(prefill.apply(chunk, context([0], pos=[9], prompt_len=prompt)),
                       logits[[0]])


# -- one entry point, two runners -------------------------------------------------------------

ENTRY_POINT = "qsample.plugins.vllm:QSampleVLLMProcessor"


def test_the_entry_point_builds_the_adapter_of_the_calling_runner():
    from vllm.v1.sample.logits_processor import LogitsProcessor as V1
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2

    assert issubclass(QSampleVLLMProcessor, V1) and issubclass(QSampleVLLMProcessor, V2)
    assert not issubclass(plugin.QSampleV1Processor, V2)
    assert not issubclass(plugin.QSampleV2Processor, V1)
    assert type(v1_processor()) is plugin.QSampleV1Processor
    assert type(v2_processor()) is plugin.QSampleV2Processor
    assert v1_processor() in QSampleVLLMProcessor.instances
    with pytest.raises(TypeError, match=r"\(vllm_config, req_states\)"):
        QSampleVLLMProcessor(None)


def test_both_runners_loaders_take_the_entry_point():
    """vLLM's own loaders: the V1 runner's by name, Model Runner V2's from the installed entry
    point and by name, and MRV2's request validator in the API server."""
    from importlib.metadata import entry_points

    import vllm.v1.sample.logits_processor as v1_loader
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.worker.gpu.sample.logits_processor import (
        build_custom_logits_processors,
        build_custom_logits_processors_params_validator,
    )

    assert v1_loader._load_logitsprocs_by_fqcns([ENTRY_POINT]) == [QSampleVLLMProcessor]
    installed = [e for e in entry_points(group="vllm.logits_processors") if e.name == "qsample"]
    lengths = SimpleNamespace(np=np.ones(8, dtype=np.int32))
    req_states = SimpleNamespace(device=torch.device("cpu"), max_num_reqs=8, vocab_size=100,
                                 all_token_ids=None, prompt_len=lengths, prefill_len=lengths,
                                 total_len=None)
    built = build_custom_logits_processors(None, req_states, False, [ENTRY_POINT])
    assert [type(p) for p in built] == [plugin.QSampleV2Processor] * (len(installed) + 1)
    validate = build_custom_logits_processors_params_validator([ENTRY_POINT])
    validate(params(qsample=1))
    with pytest.raises(VLLMValidationError, match="qsample_top_k=0"):
        validate(params(qsample_top_k=0))


# -- vllm.LLM end to end (in-process engine, CPU) --------------------------------------------

PROMPTS = ["Once upon a time", "The annealer", "What is two plus three?", "She opened the door"]


def mixed_params():
    return [
        SamplingParams(max_tokens=10, temperature=0.8, seed=1,
                       extra_args={"qsample_mode": "gumbel", "qsample_seed": 11}),
        SamplingParams(max_tokens=10, temperature=0.8, seed=2),
        SamplingParams(max_tokens=10, temperature=0.8, seed=3,
                       extra_args={"qsample": 1, "qsample_top_k": 8, "qsample_seed": 12}),
        SamplingParams(max_tokens=10, temperature=0.0),
    ]


def tokens(outputs):
    return [list(o.outputs[0].token_ids) for o in outputs]


def test_llm_mixed_batch_opted_in_rows_follow_qsample(llm):
    engine, _ = llm
    before = sum(p.stats.rows for p in QSampleVLLMProcessor.instances)
    first = tokens(engine.generate(PROMPTS, mixed_params(), use_tqdm=False))
    after = sum(p.stats.rows for p in QSampleVLLMProcessor.instances)
    assert after - before == 20  # 2 opted-in requests x 10 tokens went through the annealer
    second = tokens(engine.generate(PROMPTS, mixed_params(), use_tqdm=False))
    assert first[0] == second[0] and first[2] == second[2]  # same seed, same tokens
    # a request's tokens do not depend on its batch neighbours
    alone = tokens(engine.generate([PROMPTS[2]], [mixed_params()[2]], use_tqdm=False))
    assert alone[0] == first[2]


def test_llm_n_greater_than_one_children_are_distinct_and_reproducible(llm):
    engine, _ = llm

    def children():
        request = SamplingParams(n=3, max_tokens=16, temperature=2.0,
                                 extra_args={"qsample_seed": 5})
        (out,) = engine.generate(["Once upon a time"], [request], use_tqdm=False)
        return [list(c.token_ids) for c in sorted(out.outputs, key=lambda c: c.index)]

    first = children()
    assert len({tuple(t) for t in first}) == 3  # each child its own stream
    assert children() == first  # and each reproducible


def test_llm_metrics_reach_the_prometheus_registry(llm):
    from prometheus_client import REGISTRY, generate_latest

    engine, _ = llm
    before = sum(p.stats.rows for p in QSampleVLLMProcessor.instances)
    engine.generate(PROMPTS, mixed_params(), use_tqdm=False)
    rows = sum(p.stats.rows for p in QSampleVLLMProcessor.instances) - before
    text = generate_latest(REGISTRY).decode()
    assert metric_value(text, "qsample_rows_total") >= rows == 20
    assert metric_value(text, "qsample_requests_admitted_total") >= 2
    assert 'qsample_backend_calls_total{backend="batched-sa"}' in text


def test_llm_rejects_bad_values_with_the_key_named(llm):
    engine, _ = llm
    with pytest.raises(Exception, match="qsample_top_k=0"):
        engine.generate(["x"], [SamplingParams(max_tokens=2, extra_args={"qsample_top_k": 0})],
                        use_tqdm=False)


def test_llm_requests_without_qsample_match_vllm_without_the_plugin(llm, monkeypatch):
    engine, folder = llm
    with_plugin = tokens(engine.generate(PROMPTS, mixed_params(), use_tqdm=False))
    import vllm.v1.sample.logits_processor as loader

    monkeypatch.setattr(loader, "_load_logitsprocs_plugins", lambda: [])
    loader.cached_load_custom_logitsprocs.cache_clear()
    plain_engine = vllm.LLM(model=str(folder), enforce_eager=True, dtype="float32",
                            max_model_len=128, seed=0)
    try:
        count = len(QSampleVLLMProcessor.instances)
        plain_params = mixed_params()
        for p in plain_params:
            p.extra_args = None
        without = tokens(plain_engine.generate(PROMPTS, plain_params, use_tqdm=False))
        assert len(QSampleVLLMProcessor.instances) == count  # no plugin in this engine
    finally:
        del plain_engine
        loader.cached_load_custom_logitsprocs.cache_clear()
    assert with_plugin[1] == without[1] and with_plugin[3] == without[3]


def test_llm_on_the_default_model_mixed_batch():
    """The embedded default model in vLLM: opted-in requests are reproducible and go through the
    annealer; the others are served as usual in the same batch."""
    from qsample.plugins.transformers.models import resolve_model

    engine = vllm.LLM(model=resolve_model(None), enforce_eager=True, max_model_len=256, seed=0)
    try:
        requests = [
            SamplingParams(max_tokens=12, temperature=0.8,
                           extra_args={"qsample_mode": "gumbel", "qsample_seed": 3}),
            SamplingParams(max_tokens=12, temperature=0.8, seed=4),
            SamplingParams(max_tokens=12, temperature=0.8,
                           extra_args={"qsample_mode": "boltzmann", "qsample_seed": 5}),
        ]
        prompts = ["Once upon a time,", "The sea is", "My favourite food is"]
        before = sum(p.stats.rows for p in QSampleVLLMProcessor.instances)
        first = engine.generate(prompts, requests, use_tqdm=False)
        after = sum(p.stats.rows for p in QSampleVLLMProcessor.instances)
        second = engine.generate(prompts, requests, use_tqdm=False)
        assert tokens(first)[0] == tokens(second)[0] and tokens(first)[2] == tokens(second)[2]
        assert after - before == 24
        assert all(len(o.outputs[0].token_ids) == 12 for o in first)
        assert first[0].outputs[0].text.strip()
    finally:
        del engine


def test_explicit_logits_processors_argument_loads_it_too(llm, monkeypatch):
    """LLM(logits_processors=[...]) (and the --logits-processors flag) load the same class; here
    the entry point is switched off so that only the explicit path is in play."""
    _, folder = llm
    import vllm.v1.sample.logits_processor as loader

    monkeypatch.setattr(loader, "_load_logitsprocs_plugins", lambda: [])
    loader.cached_load_custom_logitsprocs.cache_clear()
    engine = vllm.LLM(model=str(folder), enforce_eager=True, dtype="float32", max_model_len=128,
                      seed=0, logits_processors=["qsample.plugins.vllm:QSampleVLLMProcessor"])
    try:
        before = sum(p.stats.rows for p in QSampleVLLMProcessor.instances)
        out = engine.generate(PROMPTS[:1], mixed_params()[:1], use_tqdm=False)
        assert sum(p.stats.rows for p in QSampleVLLMProcessor.instances) - before == 10
        assert len(out[0].outputs[0].token_ids) == 10
    finally:
        del engine
        loader.cached_load_custom_logitsprocs.cache_clear()


def test_bench_vllm_command_on_the_tiny_model(llm, tmp_path, capsys):
    from qsample.cli import main

    _, folder = llm
    out = tmp_path / "vllm.json"
    assert main(["bench-vllm", "--model", str(folder), "--batch", "2", "--new-tokens", "4",
                 "--repeats", "1", "--max-model-len", "128", "--json", str(out)]) == 0
    assert "vs plain" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["arm"] for r in rows] == ["plain", "qsample gumbel/batched-sa",
                                        "mixed 50% gumbel/batched-sa", "qsample gumbel/neal",
                                        "mixed 50% gumbel/neal"]
    assert rows[1]["sampler_share"] > 0 and rows[0]["ratio_vs_plain"] == 1.0
