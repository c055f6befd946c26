"""What `qsample ab` asks of an engine, and what an engine gives back.

An engine (`qsample.plugins.transformers.ab_engine.TransformersEngine`,
`qsample.plugins.vllm.ab_engine.VLLMEngine`) owns its generation and its re-sampler: it turns a
prompt into a group of ``arm.n`` generations (`Generation`) drawn together (one for ``n = 1``;
siblings coupled as ``arm.config.coupling`` says) and an arm into a `Resampler` that draws
tokens the way that engine samples the arm. The runner and the report do the scoring
(`runner.score_steps`, `runner.tv_estimate`); engines never import them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..sampler import QuantumSampler
from .config import Arm

#: Seed of every re-sampler, so that a report's TV estimates are the same run after run (any
#: fixed value; the generations' own seeds come from the run's seed, `runner.sample_seed`).
RESAMPLE_SEED = 12345

#: logits [N, V] -> token ids [N], one independent draw per row.
Resampler = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Generation:
    """One continuation as an engine produced it.

    Attributes:
        text, token_ids, seconds: the new text, its token ids [T] and the wall time.
        logits: the model's raw logits of each step [T, V]; -inf where the engine only knows
            the top-k, and then ``logprob`` gives each chosen token's log-probability at T = 1.
        record: engine-specific fields (cost, telemetry) copied into the sample's record.
    """

    text: str
    token_ids: list[int]
    seconds: float
    logits: torch.Tensor
    logprob: list[float] | None = None
    record: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """Generates one group of continuations per call and re-samples an arm as it generates it.
    An engine may also have ``features(texts) -> [N, D]`` (its model's embedding, for MAUVE)."""

    def generate(self, prompt: str, arm: Arm, seed: int, max_new_tokens: int
                 ) -> list[Generation]:
        """``arm.n`` continuations of ``prompt`` drawn together from ``seed`` (one call of the
        engine's generation, the siblings coupled as the arm's sampler config says)."""
        ...

    def resampler(self, arm: Arm) -> Resampler: ...


def qsample_resampler(arm: Arm) -> Resampler:
    """A qsample arm's re-sampler, in every engine: `QuantumSampler` at the arm's settings."""
    with warnings.catch_warnings():  # e.g. sqa's distance warning, already shown at generation
        warnings.simplefilter("ignore")
        sampler = QuantumSampler(arm.config.replace(seed=RESAMPLE_SEED), telemetry=False)
    return sampler.sample
