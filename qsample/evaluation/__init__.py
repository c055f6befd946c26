"""A/B evaluation of annealer sampling against ordinary sampling (`qsample ab`).

Data flow: config (arms, prompts, seeds) -> an engine generates every (arm, prompt, sample) with
the same prompts and seeds -> per-sample records (text, token ids, per-step fidelity data,
telemetry) -> metrics per sample -> paired statistics against the baseline arm -> report.
"""
