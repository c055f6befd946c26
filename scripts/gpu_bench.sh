#!/usr/bin/env bash
# Issue 16's GPU measurements, for a machine with a CUDA GPU and this project set up on it
# (`make setup`, plus a CUDA build of torch and triton): the fused device-resident step against
# the torch floors (top-k + softmax + multinomial, and vLLM's exponential race) at
# B in {1, 64, 256} and K in {16, 64, 256}. Targets: step <= 1.5x the floor at B = 256.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/qsample bench --device cuda --batch 1 64 256 --k 16 64 256 \
    --combos gumbel/batched-sa boltzmann/batched-sa --repeats 50 \
    --json docs/bench/gpu_step.json
