"""Backends for the tensor-parallel tests, registered on import: the operator config names this
module under ``backend_modules``, so every engine worker registers them too.

- ``rank-random``: each call returns, for every row, a uniformly random candidate drawn from OS
  entropy (not from the row's key), like a QPU whose reads are not a function of a seed; two
  ranks that each called it would disagree.
- ``rank-raises``: each call raises `TimeoutError`, like a QPU that does not answer.

Each call appends "pid rows" to the file named by `CALL_LOG_ENV`, so a test counts the calls
of every process.
"""

from __future__ import annotations

import os

import numpy as np

from qsample.backends import Backend, Failures, SolveResult, register_backend

CALL_LOG_ENV = "QSAMPLE_TEST_CALL_LOG"


def log_call(rows: int) -> None:
    path = os.environ.get(CALL_LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()} {rows}\n")


class RankRandom(Backend):
    name = "rank-random"

    def solve(self, problems, request):
        log_call(problems.batch_size)
        entropy = np.random.default_rng()
        choice = (entropy.random(problems.batch_size) * problems.sizes).astype(np.int64)
        states = np.zeros((problems.batch_size, 1, problems.width), np.int8)
        states[np.arange(problems.batch_size), 0, choice] = 1
        return SolveResult(states, np.ones((problems.batch_size, 1), bool),
                           Failures.none(problems.batch_size), calls=1)


class RankRaises(Backend):
    name = "rank-raises"

    def solve(self, problems, request):
        log_call(problems.batch_size)
        raise TimeoutError("the QPU did not answer")


register_backend(RankRandom.name, RankRandom)
register_backend(RankRaises.name, RankRaises)
