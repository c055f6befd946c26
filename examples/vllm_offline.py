"""Annealer sampling in vLLM's offline engine, on the embedded default model.

Run inside the set-up environment: `python examples/vllm_offline.py`.

The qsample plugin is loaded by its entry point (installing qsample is enough). Requests opt in
with `extra_args`; the others in the same batch are sampled by vLLM as usual.
"""

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: quick start
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


def main() -> None:
    from vllm import LLM, SamplingParams

    from qsample.plugins.transformers.models import resolve_model

    llm = LLM(model=resolve_model(None), enforce_eager=True, max_model_len=512, seed=0)
    prompts = ["Once upon a time, a small robot", "The best thing about the sea is"]
    requests = [
        SamplingParams(max_tokens=32, temperature=0.8,
                       extra_args={"qsample_mode": "gumbel", "qsample_top_k": 64,
                                   "qsample_seed": 0}),  # annealer-sampled
        SamplingParams(max_tokens=32, temperature=0.8, seed=0),  # plain vLLM sampling
    ]
    for prompt, output in zip(prompts, llm.generate(prompts, requests), strict=True):
        print(f"{prompt!r} -> {output.outputs[0].text!r}")


if __name__ == "__main__":  # vLLM may spawn workers
    main()
