"""The suite's own machinery: pytest-xdist's groups reach its scheduler, so a group's tests run
on one worker (one vLLM server, one Triton interpreter run at a time). Under pytest 9 with
pytest-xdist 3.8 they silently did not (pyproject.toml pins pytest < 9)."""

import pytest

pytestmark = pytest.mark.xdist_group("suite-probe")


def test_an_xdist_group_reaches_the_scheduler(request):
    if not hasattr(request.config, "workerinput") or not request.config.getvalue("loadgroup"):
        pytest.skip("runs under pytest -n N --dist loadgroup (make test)")
    assert request.node.nodeid.endswith("@suite-probe"), request.node.nodeid
