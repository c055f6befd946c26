"""The examples run (the quickstart is `make run` itself and takes about a minute, so it is
left to that command)."""

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_custom_sampler_example_runs(capsys):
    runpy.run_path(str(EXAMPLES / "custom_sampler.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("tokens:") == 5
    assert '"fallbacks": 0' in out and "backend_timing" in out


def test_annealer_example_runs(capsys):
    runpy.run_path(str(EXAMPLES / "annealer_vs_neal.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("best-energy hit rate") == 2
