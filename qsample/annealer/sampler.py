"""`BatchedSimulatedAnnealingSampler`: the batched annealer as a ``dimod.Sampler``.

Its keyword arguments are dwave-neal's (``num_reads``, ``num_sweeps``, ``beta_range``,
``beta_schedule_type``, ``beta_schedule``, ``seed``, ``randomize_order``,
``proposal_acceptance_criteria``), so it can replace ``SimulatedAnnealingSampler`` in any
Ocean code, and `sample_batch` anneals many BQMs in one kernel call.

Example:
    >>> import dimod
    >>> from qsample.annealer import BatchedSimulatedAnnealingSampler
    >>> bqms = [dimod.generators.ran_r(1, 16, seed=s) for s in range(100)]
    >>> sampler = BatchedSimulatedAnnealingSampler()
    >>> sets = sampler.sample_batch(bqms, num_reads=10, num_sweeps=1000, seed=0)
    >>> len(sets), len(sets[0])
    (100, 10)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import dimod
import numpy as np

from ..errors import ConfigError
from .core import anneal_dense, beta_schedule

_SCHEDULE_TYPES = ("geometric", "linear", "custom")
_CRITERIA = {"Metropolis": "metropolis", "Gibbs": "gibbs"}


class BatchedSimulatedAnnealingSampler(dimod.Sampler):
    """Simulated annealing of dense BQMs, all problems and reads of a call in one kernel.

    Energies are computed on the binary model: x^T J x + h x + offset with J symmetric
    (each pair's bias split in two halves). SPIN models are converted to BINARY and the samples
    back; samples are the same configurations, energies are the BQM's own.
    """

    @property
    def parameters(self) -> dict[str, list]:
        names = ("num_reads", "num_sweeps", "beta_range", "beta_schedule", "seed",
                 "randomize_order", "proposal_acceptance_criteria", "keep_best", "engine")
        return {"beta_schedule_type": ["beta_schedule_options"], **{n: [] for n in names}}

    @property
    def properties(self) -> dict[str, Any]:
        return {"beta_schedule_options": _SCHEDULE_TYPES}

    def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: Any) -> dimod.SampleSet:
        """Anneal one BQM; keyword arguments as `sample_batch`."""
        return self.sample_batch([bqm], **kwargs)[0]

    def sample_batch(self, bqms: Sequence[dimod.BinaryQuadraticModel], *, num_reads: int = 1,
                     num_sweeps: int = 1000, beta_range: tuple[float, float] | None = None,
                     beta_schedule_type: str = "geometric", beta_schedule: Any = None,
                     seed: int | None = None, randomize_order: bool = False,
                     proposal_acceptance_criteria: str = "Metropolis", keep_best: bool = False,
                     engine: str = "auto") -> list[dimod.SampleSet]:
        """Anneal every BQM of ``bqms`` in one kernel call; one SampleSet per BQM.

        Args:
            bqms: binary quadratic models (any vartypes, any sizes up to the largest).
            num_reads: independent chains per BQM.
            num_sweeps: sweeps per chain (ignored for ``beta_schedule_type="custom"``).
            beta_range: (hot, cold); default: neal's ``default_beta_range`` of each BQM.
            beta_schedule_type: ``"geometric"``, ``"linear"`` or ``"custom"`` (``beta_schedule``).
            seed: problem b's reads depend only on (seed, b, read).
            randomize_order: random spin order instead of sequential sweeps.
            proposal_acceptance_criteria: ``"Metropolis"`` or ``"Gibbs"``.
            keep_best: return only each BQM's lowest-energy read.
            engine: ``"auto"``, ``"numba"`` or ``"triton"`` (`qsample.annealer.anneal_dense`).
        """
        if beta_schedule_type not in _SCHEDULE_TYPES:
            raise ConfigError("beta_schedule_type", beta_schedule_type,
                              "one of " + ", ".join(map(repr, _SCHEDULE_TYPES)))
        if proposal_acceptance_criteria not in _CRITERIA:
            raise ConfigError("proposal_acceptance_criteria", proposal_acceptance_criteria,
                              "'Metropolis' or 'Gibbs'")
        if len(bqms) == 0:
            return []
        binaries = [bqm.binary if bqm.vartype is dimod.SPIN else bqm for bqm in bqms]
        labels = [list(bqm.variables) for bqm in binaries]
        sizes = np.array([max(len(v), 1) for v in labels], dtype=np.int64)
        width = int(sizes.max())
        linear = np.zeros((len(bqms), width))
        quadratic = np.zeros((len(bqms), width, width))
        offset = np.zeros(len(bqms))
        for b, bqm in enumerate(binaries):
            h, (rows, cols, biases), offset[b] = bqm.to_numpy_vectors(labels[b])
            linear[b, : len(h)] = h
            np.add.at(quadratic[b], (rows, cols), biases / 2.0)
            np.add.at(quadratic[b], (cols, rows), biases / 2.0)
        betas = self._betas(bqms, beta_schedule_type, beta_schedule, beta_range, num_sweeps)
        start = time.perf_counter()
        out = anneal_dense(linear, quadratic, offset, sizes, betas=betas, num_reads=num_reads,
                           acceptance=_CRITERIA[proposal_acceptance_criteria],
                           order="random" if randomize_order else "sequential", seed=seed,
                           keep_best=keep_best, engine=engine)
        seconds = time.perf_counter() - start
        states = np.asarray(out.states.cpu() if hasattr(out.states, "cpu") else out.states)
        betas = np.broadcast_to(betas, (len(bqms), betas.shape[-1]))
        timing = {"batch_seconds": seconds, "problems_in_call": len(bqms)}
        sets = []
        for b, bqm in enumerate(bqms):
            samples = states[b, :, : len(labels[b])]
            if bqm.vartype is dimod.SPIN:
                samples = 2 * samples.astype(np.int8) - 1
            info = {"beta_range": [float(betas[b, 0]), float(betas[b, -1])],
                    "timing": dict(timing)}
            sets.append(dimod.SampleSet.from_samples_bqm((samples, labels[b]), bqm, info=info))
        return sets

    @staticmethod
    def _betas(bqms, schedule_type, schedule, beta_range, num_sweeps) -> np.ndarray:
        if schedule_type == "custom":
            if schedule is None:
                raise ConfigError("beta_schedule", None, "an array of inverse temperatures "
                                  "for beta_schedule_type 'custom'")
            return beta_schedule(0, schedule)
        if schedule is not None:
            raise ConfigError("beta_schedule", schedule,
                              "None unless beta_schedule_type is 'custom'")
        if beta_range is not None:
            return beta_schedule(num_sweeps, schedule_type, tuple(beta_range))
        from dwave.samplers.sa.sampler import default_beta_range  # neal's, per BQM

        return np.stack([beta_schedule(num_sweeps, schedule_type, tuple(default_beta_range(bqm)))
                         for bqm in bqms])
