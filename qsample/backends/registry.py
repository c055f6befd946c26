"""Backend registry: names -> factories, and resolution of a config's ``backend`` field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .base import Backend
from .batched_sa import BatchedSABackend
from .dimod_backends import (
    DimodBackend,
    ExactBackend,
    NealBackend,
    SQABackend,
    TabuBackend,
    TreeBackend,
)

_FACTORIES: dict[str, Callable[[], Backend]] = {
    "batched-sa": BatchedSABackend,
    "neal": NealBackend,
    "tabu": TabuBackend,
    "tree": TreeBackend,
    "exact": ExactBackend,
    "sqa": SQABackend,
    "dwave": lambda: _dwave(),
    "dwave-mock": lambda: _dwave(mock=True),
}


def _dwave(mock: bool = False) -> Backend:
    from .dwave import DWaveBackend, mock_sampler

    return DWaveBackend(mock_sampler()) if mock else DWaveBackend()


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    """Make ``SamplerConfig(backend=name)`` build backends with ``factory()``."""
    _FACTORIES[name] = factory


def available_backends() -> list[str]:
    """Registered backend names."""
    return list(_FACTORIES)


def make_backend(spec: Any) -> Backend:
    """A `Backend` for a registered name, a `Backend` instance, or any ``dimod.Sampler``."""
    if isinstance(spec, Backend):
        return spec
    if isinstance(spec, str):
        if spec not in _FACTORIES:
            raise ConfigError("backend", spec, "one of " + ", ".join(map(repr, _FACTORIES)))
        return _FACTORIES[spec]()
    return DimodBackend(spec)
