"""Backend registry: names -> factories, and resolution of a config's ``backend`` field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dimod

from ..errors import ConfigError
from .base import TASKS, Backend
from .batched_sa import BatchedSABackend
from .dimod_backends import (
    DimodBackend,
    ExactBackend,
    NealBackend,
    SQABackend,
    TabuBackend,
    TreeBackend,
)
from .dwave import DWaveBackend
from .dwave_mock import mock_backend
from .dwave_noisy import noisy_backend
from .originq import OriginQBackend
from .originq_mock import OriginQMockBackend
from .qpanda import QPandaSimBackend

_FACTORIES: dict[str, Callable[[], Backend]] = {
    "batched-sa": BatchedSABackend,
    "neal": NealBackend,
    "tabu": TabuBackend,
    "tree": TreeBackend,
    "exact": ExactBackend,
    "sqa": SQABackend,
    "dwave": DWaveBackend,
    "dwave-mock": mock_backend,
    "dwave-noisy": noisy_backend,
    "qpanda-sim": QPandaSimBackend,
    "originq": OriginQBackend,
    "originq-mock": OriginQMockBackend,
}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``SamplerConfig(backend=name)`` build backends with ``factory()``."""
    _FACTORIES[name] = factory


def available_backends() -> list[str]:
    """Registered backend names."""
    return list(_FACTORIES)


def backend_defaults(name: str) -> tuple[tuple[str, ...], int | None]:
    """What a command line defaults to for the registered backend ``name``, without building
    it: the tasks it can do and its ``default_top_k`` (None: the config's), from its factory
    where that is a `Backend` class (every task and None otherwise)."""
    factory = _FACTORIES.get(name)
    return getattr(factory, "tasks", TASKS), getattr(factory, "default_top_k", None)


def check_backend(spec: Any) -> None:
    """Refuse, with a `ConfigError` on field ``backend``, what `make_backend` cannot build: a name
    that is not registered, or an object that is neither a `Backend` nor a ``dimod.Sampler``."""
    if isinstance(spec, str):
        if spec not in _FACTORIES:
            raise ConfigError("backend", spec, "one of " + ", ".join(map(repr, _FACTORIES)))
    elif not isinstance(spec, (Backend, dimod.Sampler)):
        raise ConfigError("backend", spec, "a registered backend name ("
                          + ", ".join(_FACTORIES)
                          + "), a dimod.Sampler or a qsample Backend instance")


def make_backend(spec: Any) -> Backend:
    """A `Backend` for a registered name, a `Backend` instance, or any ``dimod.Sampler``."""
    check_backend(spec)
    if isinstance(spec, Backend):
        return spec
    if isinstance(spec, str):
        return _FACTORIES[spec]()
    return DimodBackend(spec)
