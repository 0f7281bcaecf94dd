"""Test set-up: 8 forced CPU devices (sharding tests), a persistent JAX compilation cache, shared tiny data."""

import os
import subprocess
import sys

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CACHE = os.path.join(ROOT, ".cache", "jax")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """Both datasets, arm6 + human hand on reach and push, 2 train + 1 val episodes per task (~1 min)."""
  d = str(tmp_path_factory.mktemp("tiny_data"))
  cmd = [sys.executable, "-m", "vam.data.build", "--config", "experiments/datasets.py:tiny", "--data_dir", d,
         "--no_preview", "--config.tasks=['reach', 'push']", "--config.datasets.sim_robot.embodiments=['arm6']",
         "--config.datasets.sim_robot.episodes_per_task=2", "--config.datasets.sim_human.episodes_per_task=2"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return d
