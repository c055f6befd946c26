"""The vLLM engine of `qsample ab`: one request per sample through ``vllm.LLM``.

``plain`` arms are vLLM's own sampling (temperature, top-k, top-p, min-p, request seed);
``qsample`` arms opt in to the qsample plugin with ``extra_args`` (`qsample.plugins.vllm`).
Fidelity data come from vLLM's top-k logprobs, which are the model's raw log-probabilities
before any processor: the target over the top-k candidates is exact (it is shift-invariant),
and the chosen token's log-probability is the model's at T = 1.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch

from qsample.evaluation.config import Arm
from qsample.evaluation.runner import score_steps


class VLLMEngine:
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

    def generate(self, prompt: str, arm: Arm, seed: int, max_new_tokens: int,
                 keep_steps: int = 0) -> dict[str, Any]:
        from vllm import SamplingParams

        cfg = arm.config
        k = min(cfg.top_k, self.max_top_k)
        params: dict[str, Any] = {"max_tokens": max_new_tokens, "seed": seed, "logprobs": k,
                                  "temperature": cfg.temperature, "top_k": cfg.top_k,
                                  "top_p": cfg.top_p, "min_p": cfg.min_p}
        if arm.kind == "qsample":
            params["extra_args"] = {"qsample": 1, "qsample_mode": cfg.mode,
                                    "qsample_backend": cfg.backend_name, "qsample_seed": seed}
        start = time.perf_counter()
        output = self.llm.generate([prompt], SamplingParams(**params), use_tqdm=False)[0]
        seconds = time.perf_counter() - start
        completion = output.outputs[0]
        chosen = torch.tensor(list(completion.token_ids), dtype=torch.long)
        vocab = max(self.vocab, int(chosen.max()) + 1 if chosen.numel() else 0)
        rows = torch.full((chosen.numel(), vocab), -math.inf)
        chosen_logprob = []
        for t, step in enumerate(completion.logprobs or []):
            for token, logprob in step.items():
                if token < vocab:
                    rows[t, token] = logprob.logprob
            chosen_logprob.append(float(step[int(chosen[t])].logprob))
        return {"text": completion.text, "token_ids": chosen.tolist(), "seconds": seconds,
                **score_steps(rows, chosen, arm, seed, keep_steps, chosen_logprob)}
