"""Layers point one way and no module imports itself back, counting imports inside functions.

Every ``import`` statement of every module under ``qsample/`` and ``plugins/`` (installed as
``qsample.plugins``) is read from the source, wherever it stands: at the top, inside a function
or under ``TYPE_CHECKING``. ``from package import name`` counts as an import of the submodule
``package.name`` when that is a module, else of the package itself (its ``__init__``).

Layers, bottom up (a module may import its own layer and the ones below):

    leaves   qsample.{errors, rng, problems, cache}: import nothing from qsample
    annealer qsample.annealer.*
    backends qsample.backends.*
    core     qsample (package), qsample.{config, candidates, coupling, modes, pipeline, sampler,
             telemetry}
    tools    qsample.tools.*, qsample.evaluation.*
    adapters qsample.plugins.*
    cli      qsample.cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"qsample": ROOT / "qsample", "qsample.plugins": ROOT / "plugins"}
LAYERS = ("leaves", "annealer", "backends", "core", "tools", "adapters", "cli")
LEAVES = {"qsample.errors", "qsample.rng", "qsample.problems", "qsample.cache"}
CORE = {"qsample", "qsample.config", "qsample.candidates", "qsample.coupling", "qsample.modes",
        "qsample.pipeline",
        "qsample.sampler", "qsample.telemetry"}


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The qsample modules ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in MODULES else source)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def layer(module: str) -> str:
    if module in LEAVES:
        return "leaves"
    if module in CORE:
        return "core"
    for prefix, name in (("qsample.annealer", "annealer"), ("qsample.backends", "backends"),
                         ("qsample.tools", "tools"), ("qsample.evaluation", "tools"),
                         ("qsample.plugins", "adapters"), ("qsample.cli", "cli")):
        if module == prefix or module.startswith(prefix + "."):
            return name
    raise AssertionError(f"{module} belongs to no layer: add it to tests/test_layers.py")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_every_module_has_a_layer():
    assert len(MODULES) > 30
    for module in MODULES:
        assert layer(module) in LAYERS


def test_no_import_cycles_even_inside_functions():
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    rank = LAYERS.index(layer(module))
    upward = sorted(m for m in GRAPH[module] if LAYERS.index(layer(m)) > rank)
    assert upward == [], f"{module} ({layer(module)}) imports {upward}"


def test_leaves_import_nothing_from_qsample():
    for module in LEAVES:
        assert GRAPH[module] == set(), module


def test_negative_controls_the_checks_catch_a_cycle_and_an_upward_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert LAYERS.index(layer("qsample.tools.fidelity")) > LAYERS.index(layer("qsample.sampler"))
    assert LAYERS.index(layer("qsample.backends.dwave")) < LAYERS.index(layer("qsample.config"))
    source = _imports("qsample.backends.dwave", MODULES["qsample.backends.dwave"])
    assert "qsample.tools.calibration" not in source and "qsample.cache" in source
