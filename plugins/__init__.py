"""Framework adapters for qsample, importable as ``qsample.plugins.<name>``.

The core (``qsample``) knows nothing of transformers or vLLM; each adapter here is a thin layer
that turns a framework's logits hook into `qsample.QuantumSampler.sample` calls.
"""
