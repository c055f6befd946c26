"""`batched-sa`: qsample's own batched annealer (`qsample.annealer`) as a backend.

All B rows of a step are annealed in one call on the structured one-hot path, O(1) per flip,
with R independent chains per row keyed by the row's counter-RNG key, so a row's reads do not
depend on its batch neighbours. ``ground`` anneals over the request's ``beta_range`` with
Metropolis acceptance (as neal); ``thermal`` runs Gibbs chains at the fixed beta = 1.
``backend_params`` may set ``acceptance`` ("metropolis" or "gibbs") and ``order``
("sequential" or "random").

A step with coupled sibling groups (`OneHotProblems.siblings`) runs `anneal_coupled` instead,
still one call for all rows: a flip stays O(1) by counting, per group, the siblings on each
token; rows in no group are annealed exactly as on the one-hot path.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..annealer import anneal_coupled, anneal_onehot
from ..problems import OneHotProblems
from .base import Backend, Failures, SolveRequest, SolveResult


class BatchedSABackend(Backend):
    """The native batched simulated annealer (CPU kernels; one call per step)."""

    name = "batched-sa"
    tasks = ("ground", "thermal")
    params = ("acceptance", "order")
    couplings = True
    probe = True

    def settings(self, request: SolveRequest) -> dict[str, Any]:
        thermal = request.task == "thermal"
        return {
            "betas": request.betas(),
            "acceptance": request.params.get("acceptance", "gibbs" if thermal else "metropolis"),
            "order": request.params.get("order", "sequential"),
        }

    def solve(self, problems: OneHotProblems, request: SolveRequest) -> SolveResult:
        start = time.perf_counter()
        weights = np.where(problems.variable_mask, problems.weights, 0.0)
        siblings = problems.siblings
        if siblings is None:
            result = anneal_onehot(weights, problems.penalty, problems.sizes,
                                   num_reads=request.num_reads, keys=request.keys,
                                   **request.settings)
        else:
            result = anneal_coupled(weights, problems.penalty, problems.sizes,
                                    groups=siblings.groups, slots=siblings.slots,
                                    strength=siblings.strength, num_reads=request.num_reads,
                                    keys=request.keys, **request.settings)
        seconds = time.perf_counter() - start
        batch, reads = result.states.shape[:2]
        return SolveResult(result.states, np.ones((batch, reads), bool), Failures.none(batch),
                           seconds, 1)
