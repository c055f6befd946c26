"""Hugging Face transformers adapter: `QSampleLogitsProcessor` and the default model."""
