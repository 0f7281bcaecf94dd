#!/usr/bin/env bash
# GPU readiness, one prepared script (make gpu-bench): on a machine with an NVIDIA GPU that JAX can use, the
# train-step benchmarks in bf16 at the `small` and `base` sizes -- the video DiT (benchmarks.video_dit) and the
# VAM's stage-2 step (benchmarks.vam) -- each with its MFU against the matmul peak measured in the same run and
# against the chip's data-sheet peak (vam/train/metrics.py SPEC_PEAK_FLOPS); then both train steps of
# benchmarks.step (baseline and VAM, current and old recipe). JSON reports go to $OUT (default
# benchmarks/results/gpu).
#
# Without a usable GPU (no nvidia-smi, or JAX sees no CUDA device: install the CUDA build with
#   pip install -c requirements.lock "jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')"
# ), every GPU-only part is skipped with a message saying why, and the same benchmarks run once at tiny sizes on
# the CPU so that the script itself is known to work (tests/test_benchmarks.py runs it so).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"

backend=$($PY -c "import jax; print(jax.default_backend())" 2>/dev/null || echo "none")
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  has_nvidia=1
else
  has_nvidia=0
fi

if [ "$backend" = "gpu" ] || [ "$backend" = "cuda" ]; then
  echo "gpu.sh: JAX backend $backend: bf16 train steps at sizes small and base"
  $PY -m benchmarks.video_dit --sizes small,base --compute_dtype bfloat16 --steps 10 --out "$OUT/video_dit.json"
  $PY -m benchmarks.vam --sizes small,base --compute_dtype bfloat16 --steps 10 --out "$OUT/vam.json"
  $PY -m benchmarks.step --compute_dtype bfloat16 --out "$OUT/step.json"
  $PY - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
for name in ("video_dit", "vam"):
  r = json.load(open(f"{out}/{name}.json"))["results"]
  rows = r["train"] if name == "vam" else {k: v for k, v in r.items() if isinstance(v, dict) and "mfu" in v}
  for size, v in rows.items():
    spec = v.get("mfu_vs_spec")
    print(f"{name:9s} {size:10s} {v['examples_per_s']:9.1f} examples/s  MFU {100 * v['mfu']:5.1f}% of the measured "
          f"bf16 matmul" + (f", {100 * spec:5.1f}% of the data-sheet peak" if spec else ""))
EOF
  exit 0
fi

if [ "$has_nvidia" = 1 ]; then
  echo "gpu.sh: SKIPPED the GPU benchmarks: nvidia-smi sees a GPU but JAX's backend is '$backend' (the CPU build of" \
       "jaxlib); install the CUDA build: pip install -c requirements.lock \"jax[cuda12]==<jax version>\""
else
  echo "gpu.sh: SKIPPED the GPU benchmarks: no NVIDIA GPU here (no nvidia-smi; JAX backend '$backend')"
fi
echo "gpu.sh: CPU check of the same benchmarks at tiny sizes instead (bf16 compute, 1-2 steps)"
$PY -m benchmarks.video_dit --sizes tiny --compute_dtype bfloat16 --steps 1 --batch_size 2 --out "$OUT/video_dit_cpu.json"
$PY -m benchmarks.vam --sizes tiny --compute_dtype bfloat16 --steps 1 --batch_size 2 --repeats 1 --nolatency \
    --out "$OUT/vam_cpu.json"
echo "gpu.sh: CPU check passed (reports in $OUT/*_cpu.json)"
