"""An RLDS robot dataset in the Open-X style -> an end-effector embodiment (data/rlds_robot): the commanded
poses and gripper commands standardised exactly, bad episodes named and skipped, training in a mixture."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import ROOT, experiment_config
from vam import embodiment as embodiment_lib
from vam.data import rlds_robot

T = 12
NAN_EPISODE = 3


def _euler_from_matrix(r):
  return np.stack([np.arctan2(r[..., 2, 1], r[..., 2, 2]), -np.arcsin(np.clip(r[..., 2, 0], -1, 1)),
                   np.arctan2(r[..., 1, 0], r[..., 0, 0])], -1)


def toy_episode(seed: int) -> dict:
  """Poses (xyz + roll-pitch-yaw), 7-D base-frame delta actions with a +1-open gripper, images."""
  rng = np.random.default_rng(seed)
  pos = np.array([0.4, 0.0, 0.2]) + np.cumsum(rng.normal(scale=0.01, size=(T, 3)), axis=0)
  rpy = np.array([np.pi, 0.0, 0.0]) + np.cumsum(rng.normal(scale=0.05, size=(T, 3)), axis=0)
  rot = rlds_robot.rotation_matrix(rpy, "euler_xyz")
  nxt = np.minimum(np.arange(T) + 1, T - 1)
  delta_rot = _euler_from_matrix(rot[nxt] @ np.swapaxes(rot, -1, -2))
  gripper = np.where(np.arange(T) < T // 2, 1.0, -1.0)  # +1 open, then closed
  opening = np.where(np.arange(T) <= T // 2, 0.08, 0.0)  # metres, a step behind the command
  state = np.concatenate([pos, rpy, opening[:, None], np.zeros((T, 1))], -1).astype(np.float32)
  action = np.concatenate([pos[nxt] - pos, delta_rot, gripper[:, None]], -1).astype(np.float32)
  images = rng.integers(0, 255, size=(T, 72, 96, 3), dtype=np.uint8)
  return dict(pos=pos, rot=rot, state=state, action=action, images=images, gripper=gripper, opening=opening)


class OpenxToy(tfds.core.GeneratorBasedBuilder):
  """A small Open-X-style dataset: nested observation (image, wrist_image, state), 7-D delta eef actions."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "test data"}
  __module__ = "vam.data.openx_toy"  # TFDS looks up a builder's package folder; tests/ is not a package

  def _info(self):
    image = tfds.features.Tensor(shape=(72, 96, 3), dtype=np.uint8)
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset({
            "observation": {"image": image, "wrist_image": image,
                            "state": tfds.features.Tensor(shape=(8,), dtype=np.float32)},
            "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
            "language_instruction": tfds.features.Text(), "is_first": np.bool_, "is_last": np.bool_,
            "is_terminal": np.bool_, "reward": np.float32, "discount": np.float32}),
        "episode_metadata": {"file_path": tfds.features.Text()}}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(6):
      ep = toy_episode(i)
      if i == NAN_EPISODE:
        ep["action"][T // 2, 0] = np.nan
      yield str(i), {"steps": [dict(observation=dict(image=ep["images"][t], wrist_image=ep["images"][t][::-1],
                                                     state=ep["state"][t]),
                                    action=ep["action"][t], language_instruction="put the cup in the sink",
                                    is_first=t == 0, is_last=t == T - 1, is_terminal=t == T - 1, reward=0.0,
                                    discount=1.0) for t in range(T)],
                     "episode_metadata": {"file_path": f"episode_{i}"}}


@pytest.fixture(scope="module")
def rlds_build(tmp_path_factory):
  root = tmp_path_factory.mktemp("rlds")
  OpenxToy(data_dir=str(root / "source")).download_and_prepare(file_format="array_record")
  src, out = str(root / "source" / "openx_toy" / "1.0.0"), str(root / "data")
  cmd = [sys.executable, "-m", "vam.data.build", "--config", "experiments/datasets.py:rlds_robot", "--data_dir", out,
         "--no_preview", f"--config.datasets.rlds_robot.source_dir={src}",
         "--config.datasets.rlds_robot.embodiment=rlds_toy", "--config.datasets.rlds_robot.state_gripper=6",
         "--config.datasets.rlds_robot.gripper_state_open=0.08", "--config.datasets.rlds_robot.val_every=3",
         "--config.datasets.rlds_robot.cameras={'front': 'observation/image', 'wrist': 'observation/wrist_image'}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(src=src, out=out, dir=os.path.join(out, "rlds_robot", "1.0.0"), stderr=proc.stderr)


@pytest.mark.slow
def test_standardised_poses_and_gripper(rlds_build):
  builder = tfds.builder_from_directory(rlds_build["dir"])
  source = tfds.builder_from_directory(rlds_build["src"]).as_data_source(split="train")
  # TFDS shuffles on writing: the source index of each generated episode, from its file_path.
  generated = {i: int(source[i]["episode_metadata"]["file_path"].decode().split("_")[1]) for i in range(len(source))}
  seen = {}
  for split in ("train", "val"):
    src = builder.as_data_source(split=split)
    for i in range(len(src)):
      ep = src[i]
      meta, steps = ep["episode_metadata"], list(ep["steps"])
      k = generated[int(meta["source_episode"].decode().split("[")[1].rstrip("]"))]
      want = toy_episode(k)
      eef = np.stack([s["observation"]["eef"] for s in steps])
      target = np.stack([s["eef_target"] for s in steps])
      np.testing.assert_allclose(eef[:, :3], want["pos"], atol=1e-5)
      np.testing.assert_allclose(embodiment_lib.rot6d_to_mat(eef[:, 3:]), want["rot"], atol=1e-5)
      np.testing.assert_allclose(target[:-1], eef[1:], atol=1e-4)  # a delta action commands the next pose
      action = np.stack([s["action"] for s in steps])[:, 0]
      np.testing.assert_array_equal(action, (want["gripper"] < 0).astype(np.float32))  # ours: 1 closed
      opening = np.stack([s["observation"]["state"] for s in steps])[:, 9]
      np.testing.assert_allclose(opening, want["opening"] / 0.08, atol=1e-6)
      front = np.stack([s["observation"]["image_front"] for s in steps])
      assert front.shape == (T, 64, 64, 3) and "image_wrist" in steps[0]["observation"]
      assert meta["embodiment"].decode() == "rlds_toy" and steps[0]["language_instruction"] == b"put the cup in the sink"
      seen[k] = split
  assert sorted(seen) == [0, 1, 2, 4, 5] and list(seen.values()).count("val") == 2  # every 3rd; 3 refused
  report = json.load(open(os.path.join(rlds_build["dir"], "conversion_report.json")))
  (rejected,) = report["rejected"]
  nan_index = next(i for i, k in generated.items() if k == NAN_EPISODE)
  assert rejected["file"].endswith(f"[train][{nan_index}]") and rejected["key"] == "action"
  assert "non-finite values (NaN/inf) at step 6" in rejected["problem"]
  stats = json.load(open(os.path.join(rlds_build["dir"], "normalization.json")))
  assert stats["rlds_toy"]["action_names"] == ["gripper"] and stats["rlds_toy"]["num_episodes"] == 3


def test_spec_checks_and_rotations():
  with pytest.raises(ValueError, match="embodiment='bridge': must be rlds_<name>"):
    rlds_robot.Spec(embodiment="bridge")
  with pytest.raises(ValueError, match=r"action_rotation=\[3, 6\) holds 3 values; quaternion_xyzw needs 4"):
    rlds_robot.Spec(action_rotation_format="quaternion_xyzw")
  with pytest.raises(ValueError, match="action_convention='velocity'"):
    rlds_robot.Spec(action_convention="velocity")
  rng = np.random.default_rng(0)
  rpy = rng.uniform(-1, 1, size=(5, 3))
  r = rlds_robot.rotation_matrix(rpy, "euler_xyz")
  np.testing.assert_allclose(_euler_from_matrix(r), rpy, atol=1e-9)
  from scipy.spatial.transform import Rotation  # pylint: disable=g-import-not-at-top
  q = Rotation.from_matrix(r).as_quat()  # xyzw
  np.testing.assert_allclose(rlds_robot.rotation_matrix(q, "quaternion_xyzw"), r, atol=1e-9)
  np.testing.assert_allclose(rlds_robot.rotation_matrix(np.roll(q, 1, -1), "quaternion_wxyz"), r, atol=1e-9)
  np.testing.assert_allclose(rlds_robot.rotation_matrix(Rotation.from_matrix(r).as_rotvec(), "axis_angle"), r,
                             atol=1e-9)
  np.testing.assert_allclose(Rotation.from_euler("xyz", rpy).as_matrix(), r, atol=1e-9)  # extrinsic x, y, z
  assert embodiment_lib.ActionSpace(("arm6", "rlds_toy")).layout()["slots"][-1] == dict(
      name="rlds_toy_eef", embodiment="rlds_toy", kind="eef", start=17, size=10)


@pytest.mark.slow
def test_trains_in_a_mixture_with_simulated_robots(tiny_data_dir, rlds_build, tmp_path):
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  mixed = tmp_path / "mixed"
  mixed.mkdir()
  for name in ("sim_robot", "sim_human"):
    os.symlink(os.path.join(tiny_data_dir, name), mixed / name)
  os.symlink(os.path.join(rlds_build["out"], "rlds_robot"), mixed / "rlds_robot")
  overrides = {"data.mixture": "{'sim_robot': 1.0, 'rlds_robot': 1.0, 'sim_human': 0.0}",
               "data.embodiments": ["human_hand", "arm6", "rlds_toy"], "model.privileged_aux": 0.0,
               "total_steps": 4, "checkpoint_every": 4}
  config = experiment_config("quickstart.py:tiny", data_dir=str(mixed), **overrides)
  space, _, loader = train_lib.make_inputs(config)
  w = next(s for s in loader.sources if s.episodes.dir.endswith("rlds_robot/1.0.0"))[0]
  slot = space.slot("rlds_toy", "eef").slice
  assert w["action_mask"][:, slot].all() and not np.delete(w["action_mask"], np.r_[slot], axis=1).any()
  assert np.isfinite(w["actions"]).all() and np.abs(w["actions"]).max() < 10
  from vam.input import windows  # pylint: disable=g-import-not-at-top
  src = next(s for s in loader.sources if s.episodes.dir.endswith("rlds_robot/1.0.0"))
  ep = src.episodes.episode(0)
  hold = windows.reference_chunks(ep, 7, 4, space)["hold"][:, slot]  # holding: no motion, the gripper as it is
  np.testing.assert_allclose(hold[:, :3], 0.0, atol=1e-6)
  np.testing.assert_allclose(hold[:, 9], 1.0 - ep["state"][7, 9], atol=1e-6)
  w = str(tmp_path / "w")
  result = train_lib.train(config, w)
  assert np.isfinite(result["loss"])
  # Judged offline (no simulator for it): per-slot errors for its end-effector slot; closed loop is refused.
  from vam.eval import evaluate, offline, restore  # pylint: disable=g-import-not-at-top
  errors = offline.action_error(restore.load(w), str(mixed), 8, 8, 0, 2)
  assert errors["rlds_toy_eef"]["entries"] > 0 and np.isfinite(errors["rlds_toy_eef"]["rmse_native"])
  with pytest.raises(ValueError, match=r"config.eval.embodiments=\['rlds_toy'\]: \['rlds_toy'\] have no simulator"):
    evaluate.evaluate(w, overrides=[("eval.embodiments", "['rlds_toy']")])
