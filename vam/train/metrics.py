"""Metrics: a JSONL file and TensorBoard event files (process 0 only), and MFU accounting.

MFU = model FLOPs per step / step time / peak FLOP/s. FLOPs come from XLA's cost analysis of the
compiled train step (per device, times the device count). The peak is measured in this process at
start-up with a large matmul: on CPU all forced host devices share one set of cores, so the peak is
one device's; on accelerators it is one device's times the device count.
"""

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


class Writer:
  """Appends one JSON row per log step to `W/metrics.jsonl` and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30)

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in row.items():
      if k != "step" and np.isfinite(v):
        self._tb.add_scalar(k, v, step)

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read(path: str) -> list[dict]:
  """Rows of a metrics.jsonl; a row for a step logged twice (a run resumed before it) keeps the newest."""
  rows = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        rows[row["step"]] = row
  return [rows[s] for s in sorted(rows)]


def measure_peak_flops(size: int | None = None, dtype=None, min_seconds: float = 1.0, min_repeats: int = 5) -> float:
  """Best achieved FLOP/s of a square matmul on this process's first device (times the global device count
  off CPU, where every device is its own chip; forced host-platform CPU devices share the same cores).

  Best of at least `min_repeats` runs and `min_seconds` of timing: on a shared machine a single run can land
  on a busy moment, and an underestimated peak would overstate MFU. Measured once per process and arguments
  (~1-2 s each time; a process that trains several models, like the test suite, reuses it).
  """
  return _measure_peak_flops(size, None if dtype is None else jnp.dtype(dtype).name, min_seconds, min_repeats)


@functools.lru_cache(maxsize=None)
def _measure_peak_flops(size: int | None, dtype: str | None, min_seconds: float, min_repeats: int) -> float:
  device = jax.local_devices()[0]
  on_cpu = device.platform == "cpu"
  size = size or (2048 if on_cpu else 8192)
  dtype = dtype or (jnp.float32 if on_cpu else jnp.bfloat16)
  a = jax.device_put(jnp.ones((size, size), dtype), device)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best, start, runs = float("inf"), time.perf_counter(), 0
  while runs < min_repeats or time.perf_counter() - start < min_seconds:
    t = time.perf_counter()
    matmul(a).block_until_ready()
    best, runs = min(best, time.perf_counter() - t), runs + 1
  per_device = 2.0 * size ** 3 / best
  return per_device if on_cpu else per_device * jax.device_count()


# Dense (no sparsity) peak FLOP/s per chip from the vendors' data sheets, by device kind and dtype: the denominator
# of "MFU against the device's peak" (benchmarks/gpu.sh), beside the measured matmul's.
SPEC_PEAK_FLOPS = {
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},  # SXM; the PCIe card is ~756e12 bf16
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "L4": {"bfloat16": 121e12, "float32": 30e12},
}


def spec_peak_flops(dtype: str = "bfloat16") -> float | None:
  """The data-sheet peak of all devices together for `dtype` (SPEC_PEAK_FLOPS), or None (CPUs, unknown chips)."""
  kind = jax.devices()[0].device_kind
  for name, peaks in SPEC_PEAK_FLOPS.items():
    if name in kind and dtype in peaks:
      return peaks[dtype] * jax.device_count()
  return None


def compiled_flops(compiled) -> float:
  """Total FLOPs of one call of a compiled (possibly SPMD-partitioned) function; NaN if XLA gives none."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return float("nan")
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get("flops", float("nan"))
  return float(flops) * compiled_device_count(compiled)


def compiled_device_count(compiled) -> int:
  """Devices a compiled program runs on (XLA's cost analysis of an SPMD program is per device)."""
  try:
    return len(jax.tree.leaves(compiled.input_shardings)[0].device_set)
  except Exception:  # pylint: disable=broad-except
    return 1


def describe_memory(compiled) -> str:
  """XLA's memory analysis of a compiled function, per device, in MiB."""
  try:
    m = compiled.memory_analysis()
    mib = lambda b: f"{b / 2 ** 20:.1f} MiB"
    return (f"arguments {mib(m.argument_size_in_bytes)}, outputs {mib(m.output_size_in_bytes)} "
            f"(aliased {mib(m.alias_size_in_bytes)}), temporaries {mib(m.temp_size_in_bytes)}")
  except Exception:  # pylint: disable=broad-except
    return "unavailable"
