#!/usr/bin/env bash
# Issue 16's GPU measurements, for a machine with a CUDA GPU and this project set up on it
# (`make setup`, plus a CUDA build of torch and triton): the fused device-resident step against
# the torch floors (top-k + softmax + multinomial, and vLLM's exponential race) at
# B in {1, 64, 256} and K in {16, 64, 256}, then transformers generation tokens/s with and
# without qsample. Targets: step <= 1.5x the floor at B = 256, generation >= 0.97x plain.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/qsample bench --device cuda --batch 1 64 256 --top-k 16 64 256 \
    --combos gumbel/batched-sa boltzmann/batched-sa --repeats 50 \
    --json docs/bench/gpu_step.json
# generation tokens/s with and without qsample on the GPU (target >= 0.97x plain)
.venv/bin/qsample bench-generate --device cuda --batch 1 8 64 \
    --combos gumbel/batched-sa boltzmann/batched-sa --json docs/bench/gpu_generation.json
