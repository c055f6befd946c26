"""The vLLM engine of `qsample ab`: one request per group through ``vllm.LLM``.

A group of ``arm.n`` continuations is one request with ``n = arm.n`` (vLLM seeds child i with
seed + i). ``plain`` arms are vLLM's own sampling (temperature, top-k, top-p, min-p, request
seed); ``qsample`` arms opt in to the qsample plugin with ``extra_args`` (`qsample.plugins.vllm`):
the arm's mode, backend, seed, reads, sweeps and penalty, and for a coupled arm its coupling and
scope (the plugin couples the children of the request), with the temperature / top-k / top-p /
min-p taken from the request's own settings. Fidelity data come from vLLM's top-k logprobs,
which are the model's raw log-probabilities before any processor: the target over the top-k
candidates is exact (it is shift-invariant), and the chosen token's log-probability is the
model's at T = 1. For the report's TV each arm is re-sampled as vLLM samples it
(`plain_resampler`; qsample arms: qsample's sampler, which the plugin runs).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch

from qsample import SamplerConfig
from qsample.evaluation.config import Arm
from qsample.evaluation.engine import RESAMPLE_SEED, Generation, Resampler, qsample_resampler

from .admission import OPT_IN_KEY


class VLLMEngine:
    """`qsample.evaluation.engine.Engine` on an offline ``vllm.LLM`` with the qsample plugin."""

    def __init__(self, model: str, *, max_top_k: int = 64, max_model_len: int = 512,
                 **llm_kwargs: Any) -> None:
        for key, value in {"VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                           "VLLM_CPU_OMP_THREADS_BIND": "nobind"}.items():
            os.environ.setdefault(key, value)
        from vllm import LLM

        self.max_top_k = max_top_k
        self.llm = LLM(model=model, enforce_eager=True, max_model_len=max_model_len, seed=0,
                       max_logprobs=max_top_k, **llm_kwargs)
        self.vocab = self.llm.get_tokenizer().vocab_size

    def generate(self, prompt: str, arm: Arm, seed: int, max_new_tokens: int
                 ) -> list[Generation]:
        """One request with ``n = arm.n``; each child gets 1/n of the request's time."""
        from vllm import SamplingParams

        cfg = arm.config
        params: dict[str, Any] = {"max_tokens": max_new_tokens, "seed": seed, "n": arm.n,
                                  "logprobs": min(cfg.top_k, self.max_top_k),
                                  "temperature": cfg.temperature, "top_k": cfg.top_k,
                                  "top_p": cfg.top_p, "min_p": cfg.min_p}
        if arm.kind == "qsample":
            settings = {"mode": cfg.mode, "backend": cfg.backend_name, "seed": seed,
                        "num_reads": cfg.num_reads, "num_sweeps": cfg.num_sweeps,
                        "penalty": cfg.penalty}
            if arm.coupled:
                settings.update({name: cfg.to_dict()[name]  # "distinct" for an infinite one
                                 for name in ("coupling", "coupling_scope")})
            params["extra_args"] = {OPT_IN_KEY: 1, **{f"{OPT_IN_KEY}_{name}": value
                                                      for name, value in settings.items()
                                                      if value is not None}}
        start = time.perf_counter()
        output = self.llm.generate([prompt], SamplingParams(**params), use_tqdm=False)[0]
        seconds = (time.perf_counter() - start) / arm.n
        return [self._generation(completion, seconds)
                for completion in sorted(output.outputs, key=lambda c: c.index)]

    def _generation(self, completion: Any, seconds: float) -> Generation:
        """One child's `Generation`: its text, tokens and top-k logprobs as logits rows."""
        chosen = list(completion.token_ids)
        steps = completion.logprobs or []
        # the tokenizer's vocab_size leaves out added tokens, which the logits have
        vocab = max([self.vocab, *(token + 1 for step in steps for token in step)])
        rows = torch.full((len(chosen), vocab), -math.inf)
        chosen_logprob = []
        for t, step in enumerate(steps):
            for token, logprob in step.items():
                rows[t, token] = logprob.logprob
            chosen_logprob.append(float(step[chosen[t]].logprob))
        return Generation(completion.text, chosen, seconds, rows, chosen_logprob)

    def resampler(self, arm: Arm) -> Resampler:
        """The arm's mechanism in this engine: qsample's sampler, or vLLM's."""
        return qsample_resampler(arm) if arm.kind == "qsample" else plain_resampler(arm.config)


def plain_resampler(config: SamplerConfig) -> Resampler:
    """vLLM's sampler at the config's settings, in its order (``vllm/v1/sample/sampler.py``,
    ``Sampler.sample``): x = l / T; min-p, an argmax-invariant logits processor
    (``MinPLogitsProcessor.apply``), drops tokens with softmax(x)_i < min_p max_j softmax(x)_j;
    then top-k, and top-p over the renormalised survivors (``apply_top_k_top_p_pytorch``, the
    reference of the kernels vLLM dispatches to); then one draw per row from softmax."""
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    generator = torch.Generator().manual_seed(RESAMPLE_SEED)

    def sample(logits: torch.Tensor) -> torch.Tensor:
        x = logits.float() / config.temperature
        if config.min_p:
            probs = torch.softmax(x, dim=1)
            x = x.masked_fill(probs < config.min_p * probs.amax(dim=1, keepdim=True), -math.inf)
        rows = x.shape[0]
        k = torch.full((rows,), min(config.top_k, x.shape[1]), dtype=torch.long)
        p = torch.full((rows,), config.top_p) if config.top_p < 1 else None
        x = apply_top_k_top_p_pytorch(x, k, p, allow_cpu_sync=True)
        return torch.multinomial(torch.softmax(x, dim=1), 1, generator=generator)[:, 0]

    return sample
