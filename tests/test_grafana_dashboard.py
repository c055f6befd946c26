"""docs/grafana/qsample.json: a valid Grafana dashboard whose every PromQL query names only
series that the vLLM plugin's metrics module (`qsample.plugins.vllm.metrics`) defines, and
that uses each of them."""

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "qsample.json"
METRICS_MODULE = "qsample.plugins.vllm.metrics"
METRICS_FILE = ROOT / "plugins" / "vllm" / "metrics.py"
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRID_COLUMNS = 24
#: the sample names a Prometheus family of each type exposes (``_created`` left out)
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_VARIABLES = re.compile(r"\$\{?\w+\}?")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAMES = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,")


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects: identifiers that are no function
    (followed by ``(``), keyword, label (inside ``{}`` or a grouping), string or variable."""
    text = _STRINGS.sub(" ", expr)
    for pattern in (_MATCHERS, _RANGES, _VARIABLES, _GROUPING):
        text = pattern.sub(" ", text)
    return {name for name, call in _NAMES.findall(text) if not call and name not in _KEYWORDS}


def unknown_metrics(expr: str, known: set[str]) -> set[str]:
    """The series names of ``expr`` (`metric_names`) that are not in ``known``."""
    return metric_names(expr) - known


def _metrics_module() -> ModuleType:
    """`qsample.plugins.vllm.metrics`, loaded from its file when not imported yet: the package's
    ``__init__`` imports vLLM (seconds), the module itself only prometheus_client and qsample.
    It is registered under its own name, so a later import of the package reuses it (its
    counters register once)."""
    pytest.importorskip("prometheus_client")
    if METRICS_MODULE in sys.modules:
        return sys.modules[METRICS_MODULE]
    spec = importlib.util.spec_from_file_location(METRICS_MODULE, METRICS_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[METRICS_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[METRICS_MODULE]
        raise
    return module


def defined_series() -> dict[str, str]:
    """Every series name the metrics module defines (its engine registry and the API server's
    metrics) -> its family name: counters as ``*_total``, histograms as
    ``*_bucket``/``*_sum``/``*_count``."""
    from prometheus_client.metrics import MetricWrapperBase

    module = _metrics_module()
    families = list(module.ENGINE_REGISTRY.collect())
    families += [family for value in vars(module).values()
                 if isinstance(value, MetricWrapperBase) for family in value.collect()]
    return {family.name + suffix: family.name
            for family in families for suffix in SUFFIXES[family.type]}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def series() -> dict[str, str]:
    return defined_series()


def _queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of the panels' targets."""
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_dashboard_is_grafana_json_with_a_prometheus_datasource_variable(dashboard):
    assert dashboard["schemaVersion"] == SCHEMA_VERSION and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    source = variables["DS_PROMETHEUS"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [panel for panel in panels if panel["type"] != "row"]
    assert graphs
    for panel in graphs:
        grid = panel["gridPos"]
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] + grid["w"] <= GRID_COLUMNS
        assert panel["title"] and panel["datasource"] == DATASOURCE
        targets = panel["targets"]
        assert targets, f"panel {panel['title']!r} has no query"
        assert len({t["refId"] for t in targets}) == len(targets)
        for target in targets:
            assert target["datasource"] == DATASOURCE and target["expr"].strip()
            assert target["expr"].count("(") == target["expr"].count(")")


def test_every_query_names_only_series_the_plugin_defines(dashboard, series):
    known = set(series)
    for expr in _queries(dashboard):
        assert metric_names(expr), expr
        assert not unknown_metrics(expr, known), expr
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            (name,) = _LABEL_VALUES.findall(variable["definition"])
            assert name in known, variable["name"]


def test_every_family_the_plugin_defines_has_a_panel(dashboard, series):
    used = {series[name] for expr in _queries(dashboard) for name in metric_names(expr)}
    assert used == set(series.values())


def test_an_unknown_series_is_caught_by_the_same_checker(series):
    """Negative control: a made-up name, a counter without ``_total`` and a histogram's family
    name are unknown; functions, labels, strings and variables are not series."""
    known = set(series)
    expr = ('sum by (reason) (rate(qsample_made_up_rows_total{reason="x"}[$__rate_interval])) '
            "/ sum(rate(qsample_rows[5m])) + histogram_quantile(0.5, qsample_sampler_seconds)")
    assert unknown_metrics(expr, known) == {"qsample_made_up_rows_total", "qsample_rows",
                                            "qsample_sampler_seconds"}
    assert unknown_metrics('sum(rate(qsample_rows_total{instance=~"$instance"}[1m]))',
                           known) == set()
