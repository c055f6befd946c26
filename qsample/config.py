"""`SamplerConfig`: every knob of a `QuantumSampler`, validated once.

The target distribution of every mode is stated here once:

    p_i = softmax(l / T)_i over the candidate set C, renormalised,

where C is what is left of the vocabulary after top-k, then top-p, then min-p (each applied to
the tempered, renormalised distribution left by the previous filter). ``temperature=0`` means
greedy argmax with no annealer call.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .backends.registry import check_backend, default_top_k
from .errors import ConfigError
from .modes import MODES as MODE_TABLE

MODES = tuple(MODE_TABLE)  # the mode names, as `qsample.modes.MODES` defines them
FALLBACKS = ("exact", "error")
BATCHING = ("auto", "per-row", "union")
SCHEDULES = ("geometric", "linear")
COUPLING_SCOPES = ("prefix", "always")
DISTINCT = ("inf", "distinct")  # spellings of coupling = inf: siblings take distinct tokens


def _as_coupling(value: Any, mode: str) -> float:
    """lambda >= 0 as a float, ``math.inf`` for "inf" or "distinct"; mode ``gumbel`` takes only
    0 or inf (its ground state samples no other coupled target)."""
    allowed = ("0 or 'distinct' in mode 'gumbel' (perturb-and-MAP samples no finite coupling; "
               "use mode 'boltzmann')" if mode == "gumbel"
               else "a number >= 0, 'inf' or 'distinct'")
    if isinstance(value, str) and value.strip().lower() in DISTINCT:
        return math.inf
    number = _as_float("coupling", value, allowed, lambda x: x >= 0)  # nan fails the test
    if mode == "gumbel" and 0 < number < math.inf:
        raise ConfigError("coupling", value, allowed)
    return number


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(name, value, f"an integer >= {minimum}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)  # exact for any size; "64.0" and "1e3" go through float
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(name, value, f"an integer >= {minimum}") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(name, value, f"an integer >= {minimum}")
        value = int(value)
    if not isinstance(value, int) or value < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")
    return value


def _as_float(name: str, value: Any, allowed: str, ok) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ConfigError(name, value, allowed) from None
    if isinstance(value, bool) or not ok(number):
        raise ConfigError(name, value, allowed)
    return number


def _as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(name, value, "one of " + ", ".join(repr(c) for c in choices))
    return value


def _as_beta_range(value: Any) -> tuple[float, float]:
    allowed = "two finite inverse temperatures 0 < beta_hot <= beta_cold, e.g. [0.1, 10]"
    if isinstance(value, str):
        value = value.replace("[", "").replace("]", "").split(",")
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError("beta_range", value, allowed) from None
    if len(pair) != 2 or not all(math.isfinite(b) and b > 0 for b in pair) or pair[0] > pair[1]:
        raise ConfigError("beta_range", value, allowed)
    return pair


@dataclass(frozen=True)
class SamplerConfig:
    """Configuration of a `QuantumSampler`.

    Attributes:
        mode: QUBO encoding. ``"gumbel"`` (perturb-and-MAP: the ground state is an exact
            sample) or ``"boltzmann"`` (thermal sampling of the one-hot Ising model at inverse
            temperature 1).
        backend: a registered backend name (``qsample.available_backends()``:
            ``"batched-sa"``, the default, ``"neal"``, ``"tabu"``, ``"tree"``, ``"exact"``,
            ``"sqa"``, ``"dwave"``, ``"dwave-mock"``, ``"dwave-noisy"``, ``"qpanda-sim"``,
            ``"originq"``, ``"originq-mock"``, ``"qiskit"``), a `qsample.Backend` or any
            ``dimod.Sampler`` instance.
        top_k: at most this many candidates (the K of the QUBO); shrinks to V or to the number of
            finite logits. None: the backend's default (64, or a K it runs in reasonable time
            where it has a K limit: ``tree`` 16, ``exact`` 12, ``dwave-mock`` and
            ``dwave-noisy`` 16, the gate-model backends 16).
        top_p: nucleus filter in (0, 1]; 1 disables it.
        min_p: drop candidates with p < min_p * p_max; in [0, 1); 0 disables it.
        temperature: T >= 0; 0 means greedy argmax with no annealer call.
        num_reads: reads (independent chains or restarts) per row; None: the mode's default.
        num_sweeps: sweeps per read for annealers; None: the mode's default.
        beta_range: (beta_hot, beta_cold) of the annealing schedule in the BQM's energy units, for
            ground-state search (``gumbel``); None: the mode's default. ``boltzmann`` always samples
            at a fixed inverse temperature 1 and rejects this field.
        beta_schedule: ``"geometric"`` or ``"linear"`` interpolation of ``beta_range``.
        penalty: one-hot constraint strength A > 0; None: the mode's default.
        seed: base seed of qsample's counter-based generator; None draws fresh entropy.
        fallback: when a backend raises or returns no valid one-hot read for a row: ``"exact"``
            samples that row classically from the same target distribution (counted in
            telemetry), ``"error"`` raises `BackendError`.
        batching: how a dimod backend receives the rows of a step: ``"per-row"`` (one call each),
            ``"union"`` (one call on the disjoint union), ``"auto"`` (the backend's choice).
        backend_params: extra keyword arguments passed to the backend's ``sample`` call.
        coupling: lambda >= 0 between sibling rows (`QuantumSampler.sample`'s ``groups``): the
            joint target is prod_r p_r(x_r) exp(-lambda * number of sibling pairs on one token).
            0 (default): independent rows. ``"distinct"`` (or ``"inf"``): siblings take
            distinct tokens; in mode ``gumbel`` an exact ordered sample without replacement
            (Gumbel-top-k) from the group's first row's distribution, which takes no finite
            lambda.
        coupling_scope: which siblings adapters couple: ``"prefix"`` (default), only those whose
            generated prefixes are identical (a shared token then means a duplicated sequence);
            ``"always"``, all of them at every step (not with gumbel's ``"distinct"``, which
            needs the siblings' distributions to be the same).
    """

    mode: str = "gumbel"
    backend: Any = "batched-sa"
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0
    temperature: float = 1.0
    num_reads: int | None = None
    num_sweeps: int | None = None
    beta_range: tuple[float, float] | None = None
    beta_schedule: str = "geometric"
    penalty: float | None = None
    seed: int | None = None
    fallback: str = "exact"
    batching: str = "auto"
    backend_params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    coupling: float | str = 0.0
    coupling_scope: str = "prefix"

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("mode", _as_choice("mode", self.mode, MODES))
        check_backend(self.backend)
        top_k = default_top_k(self.backend) if self.top_k is None else self.top_k
        put("top_k", _as_int("top_k", top_k, 1))
        put("top_p", _as_float("top_p", self.top_p, "a number in (0, 1]", lambda x: 0 < x <= 1))
        put("min_p", _as_float("min_p", self.min_p, "a number in [0, 1)", lambda x: 0 <= x < 1))
        put(
            "temperature",
            _as_float(
                "temperature",
                self.temperature,
                "a finite number >= 0 (0 = greedy)",
                lambda x: math.isfinite(x) and x >= 0,
            ),
        )
        for name in ("num_reads", "num_sweeps"):
            if getattr(self, name) is not None:
                put(name, _as_int(name, getattr(self, name), 1))
        if self.beta_range is not None:
            if self.mode == "boltzmann":
                raise ConfigError(
                    "beta_range",
                    self.beta_range,
                    "None in mode 'boltzmann' (it samples at the fixed inverse temperature 1)",
                )
            put("beta_range", _as_beta_range(self.beta_range))
        put("beta_schedule", _as_choice("beta_schedule", self.beta_schedule, SCHEDULES))
        if self.penalty is not None:
            put(
                "penalty",
                _as_float(
                    "penalty",
                    self.penalty,
                    "a finite number > 0",
                    lambda x: math.isfinite(x) and x > 0,
                ),
            )
        if self.seed is not None:
            put("seed", _as_int("seed", self.seed, 0))
        put("fallback", _as_choice("fallback", self.fallback, FALLBACKS))
        put("batching", _as_choice("batching", self.batching, BATCHING))
        if not isinstance(self.backend_params, Mapping):
            raise ConfigError("backend_params", self.backend_params,
                              "a mapping of keyword arguments")
        put("backend_params", dict(self.backend_params))
        put("coupling", _as_coupling(self.coupling, self.mode))
        put("coupling_scope", _as_choice("coupling_scope", self.coupling_scope, COUPLING_SCOPES))
        if self.mode == "gumbel" and self.coupling == math.inf and self.coupling_scope != "prefix":
            raise ConfigError("coupling_scope", self.coupling_scope,
                              "'prefix' with mode 'gumbel' and coupling 'distinct' (Gumbel-top-k "
                              "needs siblings with one distribution; use mode 'boltzmann')")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SamplerConfig:
        """Build a config from a flat mapping (adapters: CLI flags, request arguments).

        Numbers may arrive as strings (``"64"``); unknown keys raise `ConfigError`.
        """
        names = cls.field_names()
        for key in values:
            if key not in names:
                raise ConfigError(key, values[key], "a known field: " + ", ".join(names))
        return cls(**dict(values))

    def replace(self, **changes: Any) -> SamplerConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (a sampler instance is shown by its class name)."""
        out = {f: getattr(self, f) for f in self.field_names()}
        out["backend"] = self.backend_name
        if self.beta_range is not None:
            out["beta_range"] = list(self.beta_range)
        if self.coupling == math.inf:  # JSON has no infinity
            out["coupling"] = "distinct"
        return out

    @property
    def backend_name(self) -> str:
        if isinstance(self.backend, str):
            return self.backend
        return getattr(self.backend, "name", None) or type(self.backend).__name__

