#!/usr/bin/env bash
# Cloud TPU VM pods: one command runs `python -m vam.train` on every worker of the pod (each worker is one
# JAX process; vam/distributed.py joins them through the TPU metadata, no flags needed).
#
#   launch/tpu_pod.sh setup  <tpu-name> <zone> [<git-url>]      # clone this repo and `make setup` on all workers
#   launch/tpu_pod.sh train  <tpu-name> <zone> <config> <workdir> [--config.key=value ...]
#   launch/tpu_pod.sh eval   <tpu-name> <zone> <workdir> [vam.eval flags ...]   (worker 0, on its CPU: the
#                                                                        batch renderer needs CPU or NVIDIA)
#
# Workdirs and data must be on storage every worker sees (a gs:// bucket through gcsfuse, or Filestore).
# On TPUs the simulator runs MJX impl='jax' (physics only; see README "Simulation backends").
set -euo pipefail
job=${1:?usage: launch/tpu_pod.sh setup|train|eval <tpu-name> <zone> ...}
tpu=${2:?missing tpu name}
zone=${3:?missing zone}
shift 3
REPO_DIR=${REPO_DIR:-vam}
ssh_all() { gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$1"; }
quote() { [ $# -eq 0 ] || printf '%q ' "$@"; }
case "$job" in
  setup)
    url=${1:-$(git config --get remote.origin.url)}
    ssh_all "test -d $REPO_DIR || git clone $(quote "$url") $REPO_DIR; cd $REPO_DIR && git pull --ff-only && make setup && .venv/bin/pip install -q 'jax[tpu]'"
    ;;
  train)
    config=${1:?missing config}; workdir=${2:?missing workdir}; shift 2
    ssh_all "cd $REPO_DIR && JAX_COMPILATION_CACHE_DIR=\$PWD/.cache/jax .venv/bin/python -m vam.train --config $(quote "$config") --workdir $(quote "$workdir") $(quote "$@")"
    ;;
  eval)
    workdir=${1:?missing workdir}; shift
    gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=0 \
        --command "cd $REPO_DIR && JAX_PLATFORMS=cpu .venv/bin/python -m vam.eval --workdir $(quote "$workdir") $(quote "$@")"
    ;;
  *) echo "unknown job '$job' (valid: setup, train, eval)" >&2; exit 2 ;;
esac
