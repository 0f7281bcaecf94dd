# Two commands do everything: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo
STAMP  := $(VENV)/.installed

.PHONY: setup demo data stage1 video video-eval test test-fast bench gpu-bench ladder long video-horizon demos readout reliability clean

setup: $(STAMP)

# Exact versions come from requirements.lock (reproducible); setup.py carries the ranges.
$(STAMP): setup.py requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

# JAX's persistent compilation cache: later runs skip most XLA compilation.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax

# The whole method on the quickstart datasets (reach and push), end to end (README: "What make demo does"):
# datasets -> stage 1 (video autoencoder, stored latents, video model) -> stage 2 (the VAM's action decoder
# with human <-> robot mutual imitation) -> the image baseline -> closed-loop evaluation of both -> one table.
# Fresh workdirs each time (`python -m vam.train` itself resumes); the last line is `report: <path>`.
demo: setup data
	rm -rf $(OUT)/autoencoder $(OUT)/video $(OUT)/vam $(OUT)/baseline $(OUT)/comparison
	$(MAKE) --no-print-directory stage1
	$(BIN)/python -m vam.train --config experiments/mutual_pretrain.py --workdir $(OUT)/vam --config.data_dir=$(OUT)/data \
	    --config.model.video_workdir=$(OUT)/video
	$(BIN)/python -m vam.train --config experiments/quickstart.py --workdir $(OUT)/baseline --config.data_dir=$(OUT)/data
	$(BIN)/python -m vam.eval --workdir $(OUT)/vam
	$(BIN)/python -m vam.eval --workdir $(OUT)/vam --agent foresight --config.eval.offline_windows=0
	$(BIN)/python -m vam.eval --workdir $(OUT)/baseline
	@echo "datasets: $(OUT)/data   preview: $(OUT)/data/preview.mp4   video model: $(OUT)/video (eval: make video-eval)"
	$(BIN)/python -m vam.eval.compare --run vam=$(OUT)/vam --run baseline=$(OUT)/baseline \
	    --run "vam_true_future=$(OUT)/vam/eval_foresight" --out $(OUT)/comparison

data: setup
	$(BIN)/python -m vam.data.build --config experiments/datasets.py:quickstart --data_dir $(OUT)/data --overwrite

# Stage 1 on the quickstart datasets: the video autoencoder, its stored latents and the video model.
stage1: setup
	test -d $(OUT)/data/sim_robot || $(MAKE) data
	$(BIN)/python -m vam.train --config experiments/autoencoder.py --workdir $(OUT)/autoencoder --config.data_dir=$(OUT)/data
	$(BIN)/python -m vam.train.latents --autoencoder $(OUT)/autoencoder --data_dir $(OUT)/data --overwrite
	$(BIN)/python -m vam.train --config experiments/video_pretrain.py --workdir $(OUT)/video --config.data_dir=$(OUT)/data \
	    --config.model.autoencoder_workdir=$(OUT)/autoencoder

# Stage 1 from scratch and its evaluation (PSNR/SSIM of predicted future frames vs copying the last frame;
# side-by-side videos).
video: setup
	rm -rf $(OUT)/autoencoder $(OUT)/video
	$(MAKE) --no-print-directory stage1
	$(MAKE) --no-print-directory video-eval

video-eval: setup
	$(BIN)/python -m vam.eval --workdir $(OUT)/video

# Two pytest workers (pytest-xdist), one file each at a time: most of a test's time is XLA compiling, which runs
# on one core, so two workers use both (a full run: 36 -> 29 min on 2 cores, each worker building the shared
# session fixtures once).
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 tests

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: setup
	test -d $(OUT)/data/sim_robot || $(MAKE) data
	$(BIN)/python -m benchmarks.train --config experiments/quickstart.py --config.data_dir=$(OUT)/data \
	    --out benchmarks/results/train.json
	# The baseline's and the VAM's train steps, current recipe vs old side by side, and where their time goes
	# (trace in out/profile/<model>; README "Train-step speed").
	$(BIN)/python -m benchmarks.step --recipes current,old,bf16 --profile out/profile --out benchmarks/results/step.json
	$(BIN)/python -m benchmarks.video_dit --out benchmarks/results/video_dit.json
	$(BIN)/python -m benchmarks.vam --out benchmarks/results/vam.json
	$(BIN)/python -m benchmarks.scaling --out benchmarks/results/scaling.json
	$(BIN)/python -m benchmarks.datagen --out benchmarks/results/datagen.json
	$(BIN)/python -m benchmarks.egodex_convert --out benchmarks/results/egodex_convert.json
	test -d $(OUT)/baseline/checkpoints || $(BIN)/python -m vam.train --config experiments/quickstart.py \
	    --workdir $(OUT)/baseline --config.data_dir=$(OUT)/data
	$(BIN)/python -m benchmarks.eval --workdir $(OUT)/baseline --out benchmarks/results/eval.json
	# The policy server's latency: the demo's baseline and a 2-step VAM of the demo's config (compute does not
	# depend on the weights) on the demo's stage-1 video model.
	test -d $(OUT)/video/checkpoints || $(MAKE) --no-print-directory stage1
	test -d out/bench/vam/checkpoints || $(BIN)/python -m vam.train --config experiments/mutual_pretrain.py \
	    --workdir out/bench/vam --config.data_dir=$(OUT)/data --config.model.video_workdir=$(OUT)/video \
	    --config.total_steps=2 --config.checkpoint_every=2
	$(BIN)/python -m benchmarks.serve --baseline $(OUT)/baseline --vam out/bench/vam --out benchmarks/results/serve.json

# GPU readiness (benchmarks/gpu.sh): the bf16 train steps at sizes small and base with MFU against the measured and
# the data-sheet peak on an NVIDIA GPU; elsewhere it says what it skipped and checks itself at tiny sizes on CPU.
gpu-bench: setup
	bash benchmarks/gpu.sh

# The diagnostic ladder on the demo's datasets (README "Diagnostic ladder"): demo replay, the privileged-state
# policy, one-batch overfitting, and the offline errors of the demo's policies next to hold-still / repeat-last.
ladder: setup
	test -d $(OUT)/data/sim_robot || $(MAKE) data
	$(BIN)/python -m benchmarks.ladder --data_dir $(OUT)/data --workdir out/ladder/state \
	    --policies $(OUT)/vam $(OUT)/baseline --out benchmarks/results/ladder.json

# The longer experiment (README "Longer experiment", ~2 h on 2 CPU cores): all four tasks, the baseline's
# success at every checkpoint (the success-versus-step plot is in out/long/baseline/eval/report.html).
LONG ?= out/long
long: setup
	test -d $(LONG)/data/sim_robot || $(BIN)/python -m vam.data.build --config experiments/datasets.py:standard \
	    --data_dir $(LONG)/data
	$(BIN)/python -m vam.train --config experiments/long.py --workdir $(LONG)/baseline --config.data_dir=$(LONG)/data
	$(BIN)/python -m vam.eval --workdir $(LONG)/baseline --watch --watch_timeout=60

# Does stage 1 learn dynamics? (README "Does the video model predict?", ~75 min on 2 CPU cores): the video model
# at frame strides 1-8 and on a smaller autoencoder, each scored by horizon against copy-last-frame.
VH ?= out/v15
video-horizon: setup
	$(BIN)/python experiments/video_horizon.py --data_dir $(LONG)/data --out $(VH)

# Success against demos per task (README "Fewer demos?"), the VAM and the baseline, N = 4-64, 32 episodes per cell,
# on the demo's stage 1 (~4-5 h on 2 CPU cores: 10 runs of 15-30 min): every run of experiments/demos.py (resumable), each VAM also rolled out
# with the true future (--foresight).
demos: setup
	test -d $(OUT)/video/checkpoints || $(MAKE) --no-print-directory stage1
	$(BIN)/python experiments/demos.py --data_dir $(OUT)/data --video_workdir $(OUT)/video --out $(OUT)/demos \
	    --demos 4 8 16 32 64 --episodes 32 --checkpoint_every 3000 --foresight

# Does the decoder read the future? (README; ~1 h on 2 CPU cores): VAM decoders on the demo's video model, one
# readout change each, scored by the future oracle (true future vs context alone) and in closed loop.
readout: setup
	test -d $(OUT)/video/checkpoints || $(MAKE) --no-print-directory stage1
	$(BIN)/python experiments/readout.py --data_dir $(OUT)/data --video_workdir $(OUT)/video --out out/readout

# The reliability campaign (README "Training", faults it survives; ~1 h on 2 CPU cores): random CLI/config
# mistakes; SIGKILL at random moments, inside asynchronous saves and inside the final save, of a 1-process and
# of a 2-process run, then resume (bit-identical to an uninterrupted run); SIGTERM.
reliability: setup
	test -d $(OUT)/data/sim_robot || $(MAKE) data
	$(BIN)/python -m benchmarks.reliability --data_dir $(OUT)/data --out benchmarks/results/reliability.json

clean:
	rm -rf out bench_results .pytest_cache
