"""Old module paths of issue 12's re-layering, kept importable with a `DeprecationWarning`.

``import qsample.fidelity`` (and ``from qsample import stats`` ...) load the module at its new
path and register it under the old name too, so both names are one module object. The finder is
consulted only for the names in `MOVED`; it is appended to ``sys.meta_path`` by
``qsample/__init__.py``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "qsample.bench": "qsample.tools.bench",
    "qsample.anneal_bench": "qsample.tools.anneal_bench",
    "qsample.fidelity": "qsample.tools.fidelity",
    "qsample.calibration": "qsample.tools.calibration",
    "qsample.stats": "qsample.tools.stats",
    "qsample.paths": "qsample.cache",
    "qsample.plugins.vllm_ab_engine": "qsample.plugins.vllm.ab_engine",
    "qsample.plugins.vllm_bench": "qsample.plugins.vllm.bench",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.target}; import it from there",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old names of moved modules (`MOVED`) and aliases them to the new ones."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(MOVED[fullname]))


def install() -> None:
    """Append the finder to ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
