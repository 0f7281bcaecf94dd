# Two commands do everything: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

# Exact versions come from requirements.lock (reproducible); setup.py carries the ranges.
$(STAMP): setup.py requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

# Builds the quickstart datasets (both, easy mode) and writes a preview video of recorded episodes.
demo: setup
	$(BIN)/python -m vam.data.build --config experiments/datasets.py:quickstart --data_dir $(OUT)/data --overwrite
	@echo "datasets: $(OUT)/data   preview: $(OUT)/data/preview.mp4"

test: setup
	$(BIN)/python -m pytest -q tests

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: setup
	$(BIN)/python -m benchmarks.datagen --out bench_results/datagen.json

clean:
	rm -rf out bench_results .pytest_cache
