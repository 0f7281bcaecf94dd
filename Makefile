# Two commands do everything: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo
STAMP  := $(VENV)/.installed

.PHONY: setup demo data test test-fast bench clean

setup: $(STAMP)

# Exact versions come from requirements.lock (reproducible); setup.py carries the ranges.
$(STAMP): setup.py requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

# JAX's persistent compilation cache: later runs skip most XLA compilation.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax

# Builds the quickstart datasets (both, easy mode, with a preview video), trains the image baseline policy
# on them from scratch (a fresh workdir each time; `python -m vam.train` itself resumes), then evaluates it
# in closed loop; the last line printed is `report: <path to report.json>`.
demo: setup data
	rm -rf $(OUT)/baseline
	$(BIN)/python -m vam.train --config experiments/quickstart.py --workdir $(OUT)/baseline --config.data_dir=$(OUT)/data
	@echo "datasets: $(OUT)/data   preview: $(OUT)/data/preview.mp4   baseline: $(OUT)/baseline"
	$(BIN)/python -m vam.eval --workdir $(OUT)/baseline

data: setup
	$(BIN)/python -m vam.data.build --config experiments/datasets.py:quickstart --data_dir $(OUT)/data --overwrite

test: setup
	$(BIN)/python -m pytest -q tests

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: setup
	test -d $(OUT)/data/sim_robot || $(MAKE) data
	$(BIN)/python -m benchmarks.train --config experiments/quickstart.py --config.data_dir=$(OUT)/data \
	    --out bench_results/train.json
	$(BIN)/python -m benchmarks.datagen --out bench_results/datagen.json
	test -d $(OUT)/baseline/checkpoints || $(BIN)/python -m vam.train --config experiments/quickstart.py \
	    --workdir $(OUT)/baseline --config.data_dir=$(OUT)/data
	$(BIN)/python -m benchmarks.eval --workdir $(OUT)/baseline --out bench_results/eval.json

clean:
	rm -rf out bench_results .pytest_cache
