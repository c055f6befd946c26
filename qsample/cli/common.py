"""What the command modules share: argument types, the ``--param`` option, help texts."""

from __future__ import annotations

import argparse
from typing import Any


def mode_backend(text: str) -> tuple[str, str]:
    mode, sep, backend = text.partition("/")
    if not sep or not mode or not backend:
        raise argparse.ArgumentTypeError(f"expected MODE/BACKEND, got {text!r}")
    return mode, backend


def combos(*texts: str) -> list[tuple[str, str]]:
    return [mode_backend(text) for text in texts]


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return key, value


def backend_params(pairs: list[tuple[str, str]] | None) -> dict[str, Any]:
    """``--param KEY=VALUE`` pairs as ``backend_params``: JSON values (numbers, true, ...) where
    they parse, else strings."""
    import json

    out: dict[str, Any] = {}
    for key, value in pairs or []:
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def add_param(parser: argparse.ArgumentParser) -> None:
    """``--param KEY=VALUE ...``: the sampler's ``backend_params`` (`backend_params`)."""
    parser.add_argument("--param", type=key_value, nargs="*", metavar="KEY=VALUE",
                        help="backend_params, e.g. noise_scale=2 (dwave-noisy's knobs)")


#: The commands sample at T = 0.8 unless told, a usual temperature for text; `SamplerConfig`'s
#: own default is 1.0 (the model's distribution itself).
TEMPERATURE_HELP = "sampling temperature T (default 0.8; SamplerConfig's default is 1.0)"


FIXED_SEED_HELP = ("seed (fixed by default, so a measurement repeats; SamplerConfig's None draws "
                   "fresh entropy)")
