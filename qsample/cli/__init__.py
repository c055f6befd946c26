"""The ``qsample`` command line.

One module per command family: `generate`, `bench` (the benchmarks and ``warm-up``), `serving`
(the vLLM commands) and `evaluation` (``ab``, ``calibrate``, ``fidelity``, ``dose-plot``,
``lm-eval-compare``); `common` holds what they share.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import bench, evaluation, generate, serving


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qsample", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"qsample {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (generate, bench, serving, evaluation):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 ok, 2 bad arguments (argparse, or a value `ConfigError` rejects),
    1 runtime failure with a one-line reason."""
    from ..errors import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:  # names the field, the value and what is allowed
        print(f"qsample: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qsample: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, not a traceback
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"qsample: error: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
