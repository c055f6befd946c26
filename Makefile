# qsample: `make run` sets up and runs the main job; `make test` sets up and runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: setup run test test-fast lint docs bench

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/qsample generate "Once upon a time, in a small village by the sea," \
		--max-new-tokens 48 --baseline

lint: setup
	$(VENV)/bin/ruff check .

docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(VENV)/site

test: setup lint docs
	$(PY) -m pytest -n 2 --dist loadgroup -q

# the suite without the statistical tests and the slow modules (real servers, models, long runs)
test-fast: setup lint
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not statistical and not slow"

bench: setup
	$(VENV)/bin/qsample bench-anneal --json docs/bench/annealer.json
	$(VENV)/bin/qsample bench --batch 1 8 64 256 --top-k 16 64 256 \
		--combos gumbel/batched-sa boltzmann/batched-sa gumbel/neal --json docs/bench/sampler_step.json
