"""What the command modules share: argument types, the ``--param`` option and the sampler flags,
generated from `SamplerConfig`'s fields."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..backends.registry import available_backends
from ..config import BATCHING, COUPLING_SCOPES, FALLBACKS, MODES, SCHEDULES, SamplerConfig


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


#: One line per SamplerConfig field a command takes, in the words of SamplerConfig's docstring.
FIELD_HELP = {
    "mode": "QUBO encoding, gumbel: perturb-and-MAP, an exact sample; boltzmann: thermal",
    "backend": "a registered backend: " + ", ".join(available_backends()),
    "top_k": "at most this many candidates per step, the K of the QUBO",
    "top_p": "nucleus filter in (0, 1]; 1 disables it",
    "min_p": "drop candidates with p < min_p * p_max; in [0, 1); 0 disables it",
    "temperature": "T >= 0; 0 means greedy argmax with no annealer call",
    "num_reads": "reads (independent chains or restarts) per row",
    "num_sweeps": "sweeps per read for annealers",
    "beta_range": "beta_hot beta_cold of the annealing schedule",
    "seed": "base seed of qsample's counter-based generator",
    "coupling": "lambda >= 0 between sibling rows, or 'distinct': siblings take distinct tokens",
    "coupling_scope": "which siblings are coupled: those with identical prefixes, or always all",
}
#: What a field left None means (for ``mode``: what ``qsample generate`` picks).
UNSET = {"mode": "gumbel, or boltzmann where the backend samples only thermally",
         "top_k": "the backend's, 64 where it has no K limit", "num_reads": "the mode's",
         "num_sweeps": "the mode's", "beta_range": "the mode's", "seed": "fresh entropy"}
#: Why the commands' own default of a field differs from SamplerConfig's, where they all agree.
REASONS = {"temperature": "a usual temperature for text",
           "seed": "fixed, so that a measurement repeats"}
CHOICES = {"mode": MODES, "beta_schedule": SCHEDULES, "fallback": FALLBACKS,
           "batching": BATCHING, "coupling_scope": COUPLING_SCOPES}


def _show(name: str, value: Any) -> str:
    if value is None:
        return UNSET[name]
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def add_sampler_flags(parser: argparse.ArgumentParser, *names: str, multiple: Any = (),
                      **defaults: Any) -> None:
    """``--<field>`` (``top_k``: ``--top-k``) for each SamplerConfig field in ``names`` and
    ``defaults``, in SamplerConfig's order: typed from the field, with its choices and help, and
    SamplerConfig's default unless ``defaults`` gives another (the help then states both); the
    fields in ``multiple`` take one or more values (a sweep)."""
    group = parser.add_argument_group("sampler settings (SamplerConfig's fields)")
    for field in dataclasses.fields(SamplerConfig):
        name, kind = field.name, str(field.type)
        if name not in names and name not in defaults:
            continue
        default = defaults.get(name, field.default)
        said = _show(name, default)
        if said != _show(name, field.default):
            reason = f", {REASONS[name]}" if name in REASONS else ""
            said += f"{reason}; SamplerConfig's: {_show(name, field.default)}"
        group.add_argument(
            "--" + name.replace("_", "-"), default=default,
            type=None if "str" in kind or "Any" in kind else float if "float" in kind else int,
            nargs="+" if name in multiple else 2 if kind.startswith("tuple") else None,
            choices=CHOICES.get(name), help=f"{FIELD_HELP[name]} (default: {said})")
