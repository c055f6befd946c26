"""Backend plumbing: typed failures, settings resolved once, the table of measured fidelity."""

import re
from pathlib import Path

import numpy as np
import pytest

from qsample import QuantumSampler, SamplerConfig, available_backends
from qsample.backends import FailureKind, Failures, RejectedResult, SolveResult
from qsample.backends.measured import MEASUREMENTS, fidelity_note

ROOT = Path(__file__).resolve().parents[1]


def test_failures_mark_rows_by_kind_with_their_text():
    failures = Failures.none(4)
    assert not failures.failed.any()
    failures.mark_exception([1], TimeoutError("QPU busy"))
    failures.mark_exception(np.array([False, False, True, False]), RejectedResult("bad shape"))
    failures.mark(3, FailureKind.NO_VALID_READ, "no valid one-hot read among 5 reads")
    assert failures.kind.tolist() == [0, FailureKind.RAISED, FailureKind.REJECTED,
                                      FailureKind.NO_VALID_READ]
    assert failures.failed.tolist() == [False, True, True, True]
    assert failures.detail.tolist() == [None, "TimeoutError: QPU busy",
                                        "RejectedResult: bad shape",
                                        "no valid one-hot read among 5 reads"]
    assert FailureKind.NO_VALID_READ.label == "no_valid_read"


def test_a_failed_result_has_no_reads_and_every_row_marked():
    result = SolveResult.from_error(3, 5, ValueError("boom"), seconds=0.5, calls=1)
    assert result.states.shape == (3, 1, 5) and not result.read_mask.any()
    assert (result.failures.kind == FailureKind.RAISED).all()
    assert set(result.failures.detail) == {"ValueError: boom"}


def test_settings_are_resolved_when_the_sampler_is_built():
    sampler = QuantumSampler(SamplerConfig(mode="boltzmann", backend="batched-sa", top_k=8,
                                           backend_params={"order": "random"}))
    settings = sampler.request.settings
    assert (settings["acceptance"], settings["order"]) == ("gibbs", "random")
    assert np.array_equal(settings["betas"], np.ones(sampler.request.num_sweeps))
    neal = QuantumSampler(SamplerConfig(backend="neal", top_k=8,
                                        backend_params={"randomize_order": True}))
    assert neal.request.settings["union"] and neal.request.settings["seeded"]
    assert neal.request.settings["keywords"]["randomize_order"] is True


def test_a_backend_param_value_the_settings_cannot_use_is_a_config_error():
    with pytest.raises(ValueError, match="gamma") as caught:
        QuantumSampler(SamplerConfig(backend="sqa", top_k=8, backend_params={"gamma": "high"}))
    assert caught.value.field == "backend_params"


def test_every_measurement_names_a_backend_task_and_a_command():
    assert len({(m.backend, m.task) for m in MEASUREMENTS}) == len(MEASUREMENTS)
    for m in MEASUREMENTS:
        assert m.backend in available_backends() and m.task in ("ground", "thermal")
        assert m.command.startswith("qsample fidelity ") and m.figures
        assert m.faithful_to_k is not None or m.about  # a warning at every K says what it is
        assert not m.source or (ROOT / m.source).exists()


def test_warnings_quote_the_table():
    for m in MEASUREMENTS:
        k = (m.faithful_to_k or 16) + 1
        note = fidelity_note(m.backend, m.task, k)
        assert m.figures in note and re.search(rf"\b{m.backend}\b", note)
        if m.faithful_to_k is not None:
            assert fidelity_note(m.backend, m.task, m.faithful_to_k) is None
    assert fidelity_note("not-measured", "thermal", 10**6) is None
    assert "qsample/backends/measured.py" in (ROOT / "docs" / "fidelity.md").read_text()
