"""The training spine: mesh-shape invariance, exact resume, metrics/checkpoint layout, bad inputs."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from vam import checkpoints, config as config_lib
from vam.train import metrics as metrics_lib
from vam.train import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "quickstart.py") + ":tiny"


def _config(data_dir, **overrides):
  base = dict(data_dir=data_dir, total_steps="4", log_every="1", checkpoint_every="2")
  base.update(overrides)
  return config_lib.load(CONFIG, [(k, str(v)) for k, v in base.items()])


def _losses(workdir):
  return [r["loss"] for r in metrics_lib.read(os.path.join(workdir, "metrics.jsonl"))]


def _restore_params(workdir, step):
  import orbax.checkpoint as ocp
  mngr = checkpoints.manager(workdir, read_only=True)
  out = mngr.restore(step, args=ocp.args.Composite(**{checkpoints.STATE: ocp.args.StandardRestore(),
                                                      checkpoints.EMA: ocp.args.StandardRestore()}))
  return jax.device_get(out[checkpoints.STATE]), jax.device_get(out[checkpoints.EMA])


def _tree_digest(root):
  digest = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      digest[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
  return digest


@pytest.mark.slow
def test_two_mesh_shapes_give_the_same_losses(tiny_data_dir, tmp_path):
  a = train_lib.train(_config(tiny_data_dir, total_steps=3, **{"mesh.data": 8}), str(tmp_path / "a"))
  train_lib.train(_config(tiny_data_dir, total_steps=3, **{"mesh.data": 2, "mesh.fsdp": 4}), str(tmp_path / "b"))
  la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
  assert len(la) == 3 and np.all(np.isfinite(la))
  np.testing.assert_allclose(la, lb, rtol=2e-4)
  assert a["flops_per_step"] > 0 and 0 < a["mfu"] < 1.5
  rows = metrics_lib.read(os.path.join(tmp_path / "a", "metrics.jsonl"))
  for key in ("loss", "lr", "grad_norm", "step_time", "examples_per_s", "mfu"):
    assert key in rows[-1]
  assert os.listdir(tmp_path / "a" / "tensorboard")


@pytest.mark.slow
def test_resume_is_exact(tiny_data_dir, tmp_path):
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  train_lib.train(_config(tiny_data_dir), straight)
  train_lib.train(_config(tiny_data_dir), split, stop_after=2)
  assert checkpoints.manager(split, read_only=True).all_steps() == [2]
  train_lib.train(_config(tiny_data_dir), split)  # resumes from step 2
  state_a, ema_a = _restore_params(straight, 4)
  state_b, ema_b = _restore_params(split, 4)
  assert int(state_a["step"]) == int(state_b["step"]) == 4
  for x, y in zip(jax.tree.leaves((state_a, ema_a)), jax.tree.leaves((state_b, ema_b))):
    np.testing.assert_array_equal(x, y)
  data = lambda w: open(os.path.join(w, "checkpoints", "4", "data", "process_0-of-1.json")).read()
  assert data(straight) == data(split)  # the same position in the same data order
  np.testing.assert_array_equal(_losses(straight), _losses(split))
  assets = json.load(open(os.path.join(split, "checkpoints", "4", "assets", "metadata")))  # orbax JSON item
  assert assets["format"] == checkpoints.FORMAT and assets["action_space"]["dim"] > 0
  assert "normalization" in assets and assets["config"]["data_dir"] == tiny_data_dir


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused_and_workdir_untouched(tiny_data_dir, tmp_path):
  w = str(tmp_path / "w")
  train_lib.train(_config(tiny_data_dir, total_steps=2), w)
  before = _tree_digest(w)
  with pytest.raises(checkpoints.CheckpointError, match=r"config\.model\.decoder\.width.*checkpoint has 32"):
    train_lib.train(_config(tiny_data_dir, total_steps=4, **{"model.decoder.width": 48}), w)
  assert _tree_digest(w) == before


@pytest.mark.slow
def test_nan_loss_stops_with_provenance(tiny_data_dir, tmp_path):
  w = str(tmp_path / "w")
  cfg = _config(tiny_data_dir, total_steps=6, checkpoint_every=100, **{"optimizer.lr": 1e30,
                                                                        "optimizer.warmup_steps": 0,
                                                                        "optimizer.schedule": "constant"})
  with pytest.raises(train_lib.NonFiniteLossError, match=r"at step \d.*sim_(robot|human) episode \d+ step \d+"):
    train_lib.train(cfg, w)
  assert not checkpoints.manager(w, read_only=True).all_steps()  # nothing non-finite was saved
  assert any(f.startswith("nonfinite_step") for f in os.listdir(w))


def _cli(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", "vam.train", *args], cwd=cwd, capture_output=True, text=True,
                        timeout=600)


def test_unknown_config_key_fails_before_writing(tmp_path):
  proc = _cli("--config", CONFIG, "--workdir", str(tmp_path / "w"), "--config.optimizer.learning_rate=1")
  assert proc.returncode != 0
  assert "unknown config key 'optimizer.learning_rate'" in proc.stderr and "'lr'" in proc.stderr
  assert not os.path.exists(tmp_path / "w")


def test_missing_dataset_dir_is_named(tmp_path):
  proc = _cli("--config", CONFIG, "--workdir", str(tmp_path / "w"), f"--config.data_dir={tmp_path}/nowhere")
  assert proc.returncode != 0
  assert f"config.data_dir='{tmp_path}/nowhere' does not exist" in proc.stderr.splitlines()[-1]
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_nan_actions_in_data_are_named(tiny_data_dir, tmp_path):
  """A dataset whose stored actions hold a NaN: training fails naming the dataset, episode and field."""
  import tensorflow_datasets as tfds
  src_dir = os.path.join(tiny_data_dir, "sim_robot", "1.0.0")
  source_builder = tfds.builder_from_directory(src_dir)
  source = source_builder.as_data_source(split="train")

  class SimRobot(tfds.core.GeneratorBasedBuilder):  # the same features, NaN actions at step 1 of every episode
    VERSION = tfds.core.Version("1.0.0")
    pkg_dir_path = tmp_path  # TFDS looks for metadata files beside the builder's module; this one has none

    def _info(self):
      return self.dataset_info_from_configs(features=source_builder.info.features)

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(len(source)):
        ep = dict(source[i])
        ep["steps"] = [dict(s) for s in ep["steps"]]
        ep["steps"][1]["action"] = np.full_like(ep["steps"][1]["action"], np.nan)
        yield i, ep

  bad = str(tmp_path / "bad")
  SimRobot(data_dir=bad).download_and_prepare(file_format="array_record")
  shutil.copy(os.path.join(src_dir, "normalization.json"), os.path.join(bad, "sim_robot", "1.0.0"))
  cfg = _config(bad, **{"data.mixture": "{'sim_robot': 1.0}"})
  with pytest.raises(ValueError, match=r"sim_robot.*split train episode \d+: non-finite values in action"):
    train_lib.train(cfg, str(tmp_path / "w"))


def test_schedule_warmup_cosine_and_ema():
  import ml_collections
  import jax.numpy as jnp
  from vam.train import optim
  cfg = ml_collections.ConfigDict(dict(name="adamw", lr=1e-3, schedule="cosine", warmup_steps=10,
                                       final_lr_fraction=0.1, b1=0.9, b2=0.95, weight_decay=0.0, grad_clip=1.0))
  _, lr = optim.make(cfg, total_steps=100)
  assert float(lr(0)) == 0.0 and abs(float(lr(10)) - 1e-3) < 1e-9 and abs(float(lr(100)) - 1e-4) < 1e-9
  ema = optim.ema_update({"w": jnp.zeros(3)}, {"w": jnp.ones(3)}, step=jnp.int32(0), decay=0.999)
  np.testing.assert_allclose(ema["w"], 0.9)  # warm-up: decay (1 + 0) / (10 + 0) = 0.1 at step 0
  with pytest.raises(ValueError, match="config.optimizer.schedule"):
    optim.make(ml_collections.ConfigDict(dict(cfg, schedule="linear")), total_steps=100)


@pytest.mark.slow
def test_keeps_newest_n_plus_every_mth(tiny_data_dir, tmp_path):
  w = str(tmp_path / "w")
  train_lib.train(_config(tiny_data_dir, total_steps=7, checkpoint_every=1, keep_checkpoints=2, keep_every=3,
                          log_every=7), w)
  assert checkpoints.manager(w, read_only=True).all_steps() == [3, 6, 7]
