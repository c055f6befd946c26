"""Backend registry: names -> factories, and resolution of a config's ``backend`` field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dimod

from ..errors import ConfigError
from .base import DEFAULT_TOP_K, TASKS, Backend
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
from .dwave_mock import MockDWaveBackend
from .dwave_noisy import NoisyDWaveBackend
from .originq import OriginQBackend
from .originq_mock import OriginQMockBackend
from .qiskit_sampler import QiskitBackend
from .qpanda import QPandaSimBackend

_FACTORIES: dict[str, Callable[[], Backend]] = {
    "batched-sa": BatchedSABackend,
    "neal": NealBackend,
    "tabu": TabuBackend,
    "tree": TreeBackend,
    "exact": ExactBackend,
    "sqa": SQABackend,
    "dwave": DWaveBackend,
    "dwave-mock": MockDWaveBackend,
    "dwave-noisy": NoisyDWaveBackend,
    "qpanda-sim": QPandaSimBackend,
    "originq": OriginQBackend,
    "originq-mock": OriginQMockBackend,
    "qiskit": QiskitBackend,
}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``SamplerConfig(backend=name)`` build backends with ``factory()``."""
    _FACTORIES[name] = factory


def available_backends() -> list[str]:
    """Registered backend names."""
    return list(_FACTORIES)


def backend_tasks(name: str) -> tuple[str, ...]:
    """The tasks the registered backend ``name`` can do, without building it (from its factory
    where that is a `Backend` class; every task otherwise)."""
    return getattr(_FACTORIES.get(name), "tasks", TASKS)


def default_top_k(spec: Any) -> int:
    """The ``top_k`` of a config that gives none, on backend ``spec`` (a registered name or an
    instance): its ``default_top_k``, else `DEFAULT_TOP_K`."""
    source = _FACTORIES.get(spec) if isinstance(spec, str) else spec
    return getattr(source, "default_top_k", None) or DEFAULT_TOP_K


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


def make_backend(spec: Any, params: Mapping[str, Any] | None = None) -> Backend:
    """A `Backend` for a registered name, a `Backend` instance, or any ``dimod.Sampler``. A
    named backend whose class declares `Backend.machine_params` is built for the machine those
    keys of ``params`` (a config's ``backend_params``) choose."""
    check_backend(spec)
    if isinstance(spec, Backend):
        return spec
    if isinstance(spec, str):
        factory = _FACTORIES[spec]
        chosen = {key: params[key] for key in getattr(factory, "machine_params", ())
                  if params and key in params}
        return factory(**chosen)
    return DimodBackend(spec)
