"""The measured fidelity figures the backends' warnings quote, in one table.

Each `Measurement` is a run of one backend's default settings in one task, with the figures it
gave, the command that reproduces them and the JSON it wrote, if kept. `fidelity_note` turns an
entry into the warning a `QuantumSampler` gives at construction. docs/fidelity.md shows the runs
in full and refers here; a new run changes the figures here and there together. Distances are
total variation (TV) from the target over the candidates; T = 0.8; "flat" and "peaked" are
`qsample fidelity`'s logits shapes, both measured unless one is named.
"""

from __future__ import annotations

from dataclasses import dataclass

MODE_OF_TASK = {"ground": "gumbel", "thermal": "boltzmann"}  # the mode of each task, for wording


@dataclass(frozen=True)
class Measurement:
    """A backend's measured fidelity in one task, with its default settings.

    Attributes:
        backend: registry name.
        task: ``"ground"`` (mode gumbel) or ``"thermal"`` (mode boltzmann).
        figures: what was measured and what it gave, as the warning quotes it.
        command: the command that measures it.
        source: the JSON the run wrote, from the repository root ("" when not kept).
        faithful_to_k: the largest K measured at the noise floor, so claimed faithful (warned
            above it); None: not claimed faithful, warned at every K.
        about: what the backend is, opening the warning when it is not claimed faithful.
    """

    backend: str
    task: str
    figures: str
    command: str
    source: str = ""
    faithful_to_k: int | None = None
    about: str = ""

    def warning(self, top_k: int) -> str | None:
        """The warning for a sampler at up to ``top_k`` candidates, or None."""
        if self.faithful_to_k is None:
            return (f"backend '{self.backend}' {self.about}: measured {self.figures} "
                    f"('{self.command}'); check your settings with 'qsample fidelity'")
        if top_k <= self.faithful_to_k:
            return None
        return (f"{MODE_OF_TASK[self.task]} mode with backend '{self.backend}' is measured "
                f"faithful only up to K = {self.faithful_to_k} candidates with its default "
                f"settings ({self.figures}); at top_k={top_k} check it with 'qsample fidelity' "
                f"or use top_k <= {self.faithful_to_k}")


_SQA = ("is path-integral Monte Carlo with a transverse field, a stand-in for quantum dynamics, "
        "not a calibrated sampler")
_SQA_COMMAND = "qsample fidelity --mode gumbel boltzmann --backend sqa --top-k 16 --draws 5000"

MEASUREMENTS: tuple[Measurement, ...] = (
    Measurement(
        "batched-sa", "thermal",
        "TV at the noise floor from K = 8 to 256, 20,000 draws each; 0.039 flat at K = 256",
        "qsample fidelity --mode gumbel boltzmann --backend batched-sa --top-k 8 16 64 256 "
        "--shape flat peaked --draws 20000",
        "docs/bench/fidelity_batched_sa.json", faithful_to_k=256),
    Measurement(
        "neal", "thermal",
        "TV 0.041 (flat) and 0.011 (peaked) at K = 256, 20,000 draws: at the noise floor",
        "qsample fidelity --mode gumbel boltzmann --backend neal --top-k 256 --draws 20000",
        "docs/bench/fidelity_neal_k256.json", faithful_to_k=256),
    Measurement(
        "tabu", "ground",
        "TV 0.092 to 0.113 at K = 16 on peaked logits (chi-square p < 1e-187), 20,000 draws "
        "(tabu searches for a fixed time: its figures depend on the machine)",
        "qsample fidelity --mode gumbel --backend tabu --top-k 16 --shape peaked --draws 20000",
        about="is a heuristic optimiser, so gumbel/tabu is not faithful: with its default 1 ms "
              "per row it misses near-tied ground states"),
    Measurement(
        "sqa", "ground",
        "TV 0.019 (flat) and 0.006 (peaked) at K = 16, 5,000 draws: at the noise floor",
        _SQA_COMMAND, about=_SQA),
    Measurement(
        "sqa", "thermal",
        "TV 0.049 at K = 16 on peaked logits (chi-square p = 1e-60), 0.022 on flat, 5,000 draws",
        _SQA_COMMAND, about=_SQA),
)

_BY_KEY = {(m.backend, m.task): m for m in MEASUREMENTS}


def fidelity_note(backend: str, task: str, top_k: int) -> str | None:
    """Why ``task`` on ``backend`` at up to ``top_k`` candidates is not measured faithful, from
    `MEASUREMENTS`; None when it is, or when the backend was not measured."""
    found = _BY_KEY.get((backend, task))
    return found.warning(top_k) if found is not None else None
