"""A/B evaluation of annealer sampling against ordinary sampling (`qsample ab`).

Data flow: config (arms, prompts, seeds) -> an engine (`engine.Engine`, in the adapters)
generates every (arm, prompt, sample) with the same prompts and seeds -> the runner scores each
into a record (text, token ids, per-step fidelity data, telemetry) -> metrics per sample, TV
from the engine's own re-sampler -> paired statistics against the baseline arm -> report.
"""
