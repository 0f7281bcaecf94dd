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


def experiment_config(name: str, **overrides):
  """experiments/<name> (`file.py[:variant]`) with `--config.key=value`-style overrides."""
  from vam import config as config_lib  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS is set)
  return config_lib.load(os.path.join(ROOT, "experiments", name), [(k, str(v)) for k, v in overrides.items()])


@pytest.fixture(scope="session")
def stage1(tiny_data_dir, tmp_path_factory):
  """A tiny trained autoencoder, its stored latents, and a tiny video model trained on them (shared by the
  stage-1 and stage-2 tests)."""
  from vam.train import latents as latents_tool  # pylint: disable=g-import-not-at-top
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("stage1")
  ae = str(root / "ae")
  train_lib.train(experiment_config("autoencoder.py:tiny", data_dir=tiny_data_dir, total_steps=10), ae)
  assert latents_tool.main(["--autoencoder", ae, "--data_dir", tiny_data_dir, "--batch", "16"]) == 0
  video = str(root / "video")
  result = train_lib.train(experiment_config("video_pretrain.py:tiny", data_dir=tiny_data_dir, **{
      "model.autoencoder_workdir": ae, "data.use_latents": True, "total_steps": 10,
      "data.embodiments": ["human_hand", "arm6"]}), video)  # the tiny robot data has arm6 only
  return dict(ae=ae, video=video, data=tiny_data_dir, result=result, root=root)


@pytest.fixture(scope="session")
def tiny_baseline(tiny_data_dir, tmp_path_factory):
  """A tiny image baseline trained 4 steps (a checkpoint to serve, evaluate and benchmark; not a good policy)."""
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  w = str(tmp_path_factory.mktemp("tiny_baseline"))
  train_lib.train(experiment_config("quickstart.py:tiny", data_dir=tiny_data_dir, total_steps=4, log_every=2,
                                    checkpoint_every=4), w)
  return w


@pytest.fixture(scope="session")
def stage2(stage1, tmp_path_factory):
  """A tiny VAM (stage 2) trained 10 steps on the tiny stage-1 video model (tests of stage 2, the policy server's
  benchmark)."""
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  w = str(tmp_path_factory.mktemp("stage2") / "vam")
  result = train_lib.train(experiment_config("mutual_pretrain.py:tiny", data_dir=stage1["data"], **{
      "model.video_workdir": stage1["video"], "data.use_latents": True,
      "data.embodiments": ["human_hand", "arm6"]}), w)  # the tiny robot data has arm6 only
  return dict(stage1, vam=w, vam_result=result)
