#!/usr/bin/env bash
# One-machine launcher: runs a vam entry point inside the project's virtualenv.
#   launch/local.sh data <config> <data_dir> [extra args...]
#   launch/local.sh train <config> <workdir> [--config.key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
make setup >/dev/null
job=${1:?usage: launch/local.sh data|train <config> <dir> [args...]}
shift
case "$job" in
  data)
    config=${1:?missing config}; data_dir=${2:?missing data_dir}; shift 2
    # Large vmapped MJX programs can stall XLA's concurrency-optimised CPU scheduler.
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_enable_concurrency_optimized_scheduler=false"
    exec .venv/bin/python -m vam.data.build --config "$config" --data_dir "$data_dir" "$@"
    ;;
  train)
    config=${1:?missing config}; workdir=${2:?missing workdir}; shift 2
    export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.cache/jax}"
    exec .venv/bin/python -m vam.train --config "$config" --workdir "$workdir" "$@"
    ;;
  *) echo "unknown job '$job' (valid: data, train)" >&2; exit 2 ;;
esac
