# qsample: `make run` sets up and runs the main job; `make test` sets up and runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: setup run test lint bench

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/qsample generate "Once upon a time, in a small village by the sea," \
		--max-new-tokens 48 --baseline

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest -n 2 --dist loadgroup -q

bench: setup
	$(VENV)/bin/qsample bench-anneal --json docs/bench/annealer.json
	$(VENV)/bin/qsample bench --batch 1 8 64 256 --k 16 64 256 \
		--combos gumbel/batched-sa boltzmann/batched-sa gumbel/neal --json docs/bench/sampler_step.json
