"""Compile (first run) or load (later runs) every CPU kernel of the batched annealer.

numba compiles a kernel the first time it is called with a given signature and keeps the machine
code in its on-disk cache (``cache=True``: ``__pycache__`` next to ``qsample/annealer/cpu.py``,
or ``$NUMBA_CACHE_DIR``). `warm_up` makes those first calls on tiny problems, one per kernel
variant the samplers use (one-hot, dense and sparse model and the fused sampling step x
Metropolis/Gibbs x sequential/random order, the best-read reduction, and the coupled model, whose
flags are arguments), so that set-up pays
the compilation once (``qsample warm-up``,
run by ``scripts/setup.sh``) and a new process only loads the cached code.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from .. import rng
from .core import ACCEPTANCE, ORDERS, anneal_coupled, anneal_dense, anneal_onehot, anneal_sparse
from .step import KernelMode, sample_step

WARM_UP_READS = 2  # two reads, so that the best-read reduction runs too
WARM_UP_BETAS = np.array([0.5, 1.0])


def warm_up() -> dict[str, float]:
    """Run every CPU kernel variant once on a two-variable problem (the smallest each model
    accepts); seconds per variant (compile or cache load)."""
    models = {
        "onehot": lambda **kw: anneal_onehot(np.array([[0.0, 1.0]]), 1.0, **kw),
        "dense": lambda **kw: anneal_dense(np.array([[0.0, -1.0]]),
                                           np.array([[[0.0, 2.0], [2.0, 0.0]]]), **kw),
        "sparse": lambda keep_best, **kw: anneal_sparse(
            np.array([0.0, -1.0]), np.array([0, 2]), np.array([0, 1, 2]), np.array([1, 0]),
            np.array([2.0, 2.0]), **kw),
    }
    seconds: dict[str, float] = {}
    for acceptance, order in itertools.product(ACCEPTANCE, ORDERS):
        for model, run in models.items():
            start = time.perf_counter()
            run(betas=WARM_UP_BETAS, num_reads=WARM_UP_READS, seed=0, acceptance=acceptance,
                order=order, keep_best=True)
            seconds[f"{model}/{acceptance}/{order}"] = time.perf_counter() - start
        start = time.perf_counter()
        sample_step(np.array([[1.0, 0.0]], np.float32), np.array([[0, 1]]), rng.row_keys(0, 0, 1),
                    temperature=1.0, top_p=1.0, min_p=0.0, penalty=1.0,
                    mode=KernelMode(perturb=True, keep_lowest=True),  # both modes' code runs
                    betas=WARM_UP_BETAS.copy(), num_reads=WARM_UP_READS, acceptance=acceptance,
                    order=order)
        seconds[f"step/{acceptance}/{order}"] = time.perf_counter() - start
    start = time.perf_counter()
    anneal_coupled(np.array([[0.0, 1.0], [0.0, 1.0]]), 1.0, groups=np.array([0, 0]),
                   slots=np.array([[0, 1], [0, 1]]), strength=np.array([1.0]),
                   betas=WARM_UP_BETAS, num_reads=WARM_UP_READS, seed=0)
    seconds["coupled"] = time.perf_counter() - start
    return seconds
