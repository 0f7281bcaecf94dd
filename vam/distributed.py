"""Multi-process start-up: `jax.distributed.initialize` from the launcher's environment.

Call `initialize()` first thing in an entry point, before anything touches a JAX device. Where the process
topology comes from, first match wins:

  explicit   VAM_COORDINATOR_ADDRESS (host:port of process 0), VAM_NUM_PROCESSES, VAM_PROCESS_ID, or the same
             as `vam.train` flags; set by `launch/local.py` and the Kubernetes manifest. On Kubernetes
             (Indexed Jobs, JobSet) VAM_PROCESS_ID may be left out: JOB_COMPLETION_INDEX is used.
  detected   SLURM (several tasks in SLURM_NTASKS), Cloud TPU VM pods (several TPU_WORKER_HOSTNAMES), Open MPI
             (OMPI_COMM_WORLD_SIZE > 1): JAX's own cluster detection fills in everything
             (`jax.distributed.initialize()` without arguments). VAM_DISTRIBUTED=auto forces it,
             VAM_DISTRIBUTED=off disables all of this.
  otherwise  one process: nothing to do.

On CPU, cross-process collectives go through gloo (what `launch/local.py` and the multi-host tests use).
"""

import dataclasses
import os

import jax

from vam import log as log_lib

logging = log_lib.get("vam.distributed")


@dataclasses.dataclass(frozen=True)
class Topology:
  coordinator_address: str | None  # None: let JAX detect the cluster
  num_processes: int | None
  process_id: int | None
  source: str  # what decided it: explicit | slurm | tpu | mpi | auto


def _env_int(env, key: str) -> int | None:
  value = env.get(key, "")
  if value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {key}={value!r} is not an integer") from None


def topology(env=None, coordinator_address: str | None = None, num_processes: int | None = None,
             process_id: int | None = None) -> Topology | None:
  """What `initialize` would do for this environment and these flags (None: a single process)."""
  env = os.environ if env is None else env
  mode = env.get("VAM_DISTRIBUTED", "").lower()
  if mode in ("off", "0", "false"):
    return None
  address = coordinator_address or env.get("VAM_COORDINATOR_ADDRESS") or None
  count = num_processes if num_processes is not None else _env_int(env, "VAM_NUM_PROCESSES")
  index = process_id if process_id is not None else _env_int(env, "VAM_PROCESS_ID")
  if index is None:
    index = _env_int(env, "JOB_COMPLETION_INDEX")  # Kubernetes Indexed Job / JobSet replica index
  if address or count:
    missing = [name for name, v in (("VAM_COORDINATOR_ADDRESS / --coordinator_address", address),
                                    ("VAM_NUM_PROCESSES / --num_processes", count),
                                    ("VAM_PROCESS_ID / --process_id", index)) if v is None]
    if missing:
      raise ValueError(f"multi-process start-up needs all of the coordinator address, the process count and "
                       f"this process's id; missing: {', '.join(missing)}")
    if not 0 <= index < count:
      raise ValueError(f"process id {index} is outside [0, {count}) (VAM_PROCESS_ID / --process_id)")
    if ":" not in address:
      raise ValueError(f"coordinator address {address!r} must be host:port (VAM_COORDINATOR_ADDRESS)")
    return Topology(address, count, index, "explicit")
  if mode == "auto":
    return Topology(None, None, None, "auto")
  if (_env_int(env, "SLURM_NTASKS") or 1) > 1 and "SLURM_JOB_ID" in env:
    return Topology(None, None, None, "slurm")
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return Topology(None, None, None, "tpu")
  if (_env_int(env, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
    return Topology(None, None, None, "mpi")
  return None


_initialized = False


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the process group this environment describes (see the module docstring); True if it did.
  Idempotent: a second call does nothing."""
  global _initialized
  if _initialized:
    return True
  topo = topology(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
  if topo is None:
    return False
  # gloo carries CPU collectives across processes (no effect on GPU/TPU backends); must precede backend init.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if topo.source == "explicit":
    jax.distributed.initialize(coordinator_address=topo.coordinator_address, num_processes=topo.num_processes,
                               process_id=topo.process_id)
  else:
    jax.distributed.initialize()
  _initialized = True
  logging.info("process %d of %d (%s start-up), %d local / %d global devices", jax.process_index(),
               jax.process_count(), topo.source, jax.local_device_count(), jax.device_count())
  return True
