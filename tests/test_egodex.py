"""EgoDex-layout human video -> `human_hand` episodes (data/egodex): keypoints, images and masks against the
simulated hand the files were written from, bad files named and skipped, and training in a mixture."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import egodex_files
from conftest import ROOT, experiment_config
from vam.data import egodex

GOOD = (("part1", 0), ("part1", 1), ("part1", 2), ("part1", 3))
LOW_CONFIDENCE = (2,)  # right-hand steps of one episode tracked below the threshold
# What each bad file must be refused for: (file that is named, key).
EXPECTED_REJECTIONS = {"missing_joint": (".hdf5", "transforms/rightThumbTip"), "truncated_video": (".mp4", "video"),
                       "nan_pose": (".hdf5", "transforms/rightHand"),
                       "frame_counts": (".hdf5", "transforms/rightIndexFingerTip"), "orphan": (".hdf5", "file")}


@pytest.fixture(scope="module")
def egodex_build(tiny_data_dir, tmp_path_factory):
  """Writes 4 good episodes (both hands) from the tiny sim_human dataset, 4 bad ones and an orphan pose file,
  then converts them with the CLI (world frame, both hands). val_every=10 with 8 episodes picks the last by
  path, a bad one, and falls back to the closest earlier good one: part1's 4th."""
  root = tmp_path_factory.mktemp("egodex")
  src, out = root / "source", root / "data"
  episodes = egodex_files.sim_episodes(tiny_data_dir)
  written = {f"part1/{ep['task']}/{i}": ep for i, ep in enumerate(episodes[:4])}
  low = sorted(written)[0]  # the first episode by path: a train one
  for stem, ep in written.items():
    egodex_files.write_episode(str(src / os.path.dirname(stem)), os.path.basename(stem), ep,
                               low_confidence=LOW_CONFIDENCE if stem == low else ())
  for fault in egodex_files.FAULTS:
    egodex_files.write_episode(str(src / "part2" / "bad"), fault, episodes[0], fault=fault)
  h5, _ = egodex_files.write_episode(str(src / "part2" / "orphan"), "orphan", episodes[0])
  os.remove(h5.replace(".hdf5", ".mp4"))
  cmd = [sys.executable, "-m", "vam.data.build", "--config", "experiments/datasets.py:egodex", "--data_dir", str(out),
         "--no_preview", f"--config.datasets.egodex.source_dir={src}", "--config.datasets.egodex.hands=both",
         "--config.datasets.egodex.frame=world"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(src=str(src), out=str(out), dir=str(out / "egodex" / "1.0.0"), written=written, low=low,
              stderr=proc.stderr)


def _episodes(dataset_dir: str, split: str) -> list:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  src = tfds.builder_from_directory(dataset_dir).as_data_source(split=split)
  return [src[i] for i in range(len(src))]


def _psnr(a, b) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.mark.slow
def test_converted_episodes_match_the_simulated_hand(egodex_build):
  seen = set()
  for split in ("train", "val"):
    for ep in _episodes(egodex_build["dir"], split):
      meta = ep["episode_metadata"]
      rel, side = meta["source_file"].decode(), meta["hand"].decode()
      sim = egodex_build["written"][rel]
      steps = list(ep["steps"])
      obs = [s["observation"] for s in steps]
      keypoints = np.stack([o["hand_keypoints"] for o in obs])
      expected = egodex_files.expected_keypoints(sim, side)
      assert keypoints.shape == expected.shape, (rel, side)
      np.testing.assert_allclose(keypoints, expected, atol=1e-4, err_msg=f"{rel} {side}")
      actions = np.stack([s["action"] for s in steps])
      np.testing.assert_allclose(actions[:-1], keypoints[1:], atol=1e-6)  # the next step's keypoints
      np.testing.assert_allclose(np.stack([o["state"] for o in obs]), keypoints[:, :9], atol=1e-6)
      assert _psnr(np.stack([o["image_front"] for o in obs]), sim["images"]) > 28, (rel, side)
      valid = np.array([o["hand_valid"] for o in obs])
      masked = set(LOW_CONFIDENCE) if rel == egodex_build["low"] and side == "right" else set()
      assert set(np.flatnonzero(~valid)) == masked, (rel, side)
      assert steps[0]["language_instruction"].decode() == sim["instruction"]
      assert meta["embodiment"].decode() == "human_hand" and meta["task"].decode() == sim["task"]
      np.testing.assert_allclose(meta["camera_front_extrinsics"], sim["camera"], atol=1e-5)
      np.testing.assert_allclose(meta["camera_front_intrinsics"], sim["intrinsics"], rtol=1e-5)  # square 64x64
      seen.add((split, rel, side))
  assert len(seen) == 8 and sum(s == "val" for s, _, _ in seen) == 2  # 4 episodes x 2 hands; the 4th is val


@pytest.mark.slow
def test_bad_files_are_named_and_skipped(egodex_build):
  report = json.load(open(os.path.join(egodex_build["dir"], "conversion_report.json")))
  assert report["accepted"] == {"train": 6, "val": 2}
  rejected = {os.path.splitext(os.path.basename(r["file"]))[0]: r for r in report["rejected"]}
  assert set(rejected) == set(EXPECTED_REJECTIONS)
  for name, (ext, key) in EXPECTED_REJECTIONS.items():
    r = rejected[name]
    assert r["file"].endswith(ext) and r["key"] == key, r
    assert f"skipped {r['file']}: {key}" in egodex_build["stderr"]
  assert "mismatched" in rejected["frame_counts"]["problem"] and "NaN" in rejected["nan_pose"]["problem"]
  assert "truncated" in rejected["truncated_video"]["problem"]
  assert report["source_frames"] > 0 and report["source_frames_per_s"] > 0
  stats = json.load(open(os.path.join(egodex_build["dir"], "normalization.json")))
  hand = stats["human_hand"]
  assert hand["action_names"][:3] == ["wrist_x", "wrist_y", "wrist_z"] and len(hand["action_names"]) == 24
  assert hand["num_episodes"] == 6


def test_camera_frame_and_wrist_transform(tiny_data_dir, tmp_path):
  """first_camera frame with the wrist joint's own rotation times a correction: the simulated hand's pose seen
  from its camera."""
  ep = egodex_files.sim_episodes(tiny_data_dir)[0]
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  correction = q * np.sign(np.linalg.det(q))
  h5, mp4 = egodex_files.write_episode(str(tmp_path), "0", ep, correction=correction)
  out = egodex.convert(h5, mp4, egodex.Options(frame="first_camera", wrist_frame="transform",
                                               wrist_rotation=tuple(correction.reshape(-1))))
  world_to_cam = np.linalg.inv(ep["camera"])
  kp = ep["keypoints"]
  points = kp[:, [0, 1, 2, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]].reshape(len(kp), 6, 3)
  expected_points = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
  got = out["hand_keypoints"]
  np.testing.assert_allclose(got[:, [0, 1, 2] + list(range(9, 24))].reshape(len(kp), 6, 3), expected_points, atol=1e-4)
  from vam.embodiment import rot6d_to_mat  # pylint: disable=g-import-not-at-top
  np.testing.assert_allclose(rot6d_to_mat(got[:, 3:9]), world_to_cam[:3, :3] @ rot6d_to_mat(kp[:, 3:9]), atol=1e-4)
  np.testing.assert_allclose(out["camera_extrinsics"][0], np.eye(4), atol=1e-5)  # the first camera is the frame


def test_bad_options_and_folders(tmp_path):
  with pytest.raises(ValueError, match="config.datasets.egodex.frame='robot'"):
    egodex.Options(frame="robot")
  with pytest.raises(ValueError, match="config.datasets.egodex.wrist_rotation"):
    egodex.Options(wrist_frame="transform", wrist_rotation=(1.0,) * 9)
  with pytest.raises(ValueError, match="control_hz"):
    egodex.Options(control_hz=60.0)
  with pytest.raises(ValueError, match="config.datasets.egodex.source_dir=.* is not a directory"):
    egodex.find_episodes(str(tmp_path / "nope"))
  (tmp_path / "junk.hdf5").write_bytes(b"not hdf5")
  (tmp_path / "junk.mp4").write_bytes(b"not mp4")
  with pytest.raises(egodex.EpisodeError, match=r"junk.hdf5: file: not a readable HDF5"):
    egodex.convert(str(tmp_path / "junk.hdf5"), str(tmp_path / "junk.mp4"), egodex.Options())


def test_bad_videos(tiny_data_dir, tmp_path):
  import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top
  ep = egodex_files.sim_episodes(tiny_data_dir)[0]
  h5, mp4 = egodex_files.write_episode(str(tmp_path), "0", ep)
  frames = list(imageio.mimread(mp4))
  imageio.mimwrite(mp4, frames, fps=60, macro_block_size=1)
  with pytest.raises(egodex.EpisodeError, match=r"0.mp4: video: 60 frames/s, but config source_hz=30"):
    egodex.convert(h5, mp4, egodex.Options())
  with open(mp4, "wb") as f:
    f.write(b"\x00" * 4096)
  with pytest.raises(egodex.EpisodeError, match=r"0.mp4: video: cannot be decoded"):
    egodex.convert(h5, mp4, egodex.Options())


def _mixture_dir(tiny_data_dir, egodex_build, tmp_path) -> str:
  mixed = tmp_path / "mixed"
  mixed.mkdir()
  os.symlink(os.path.join(tiny_data_dir, "sim_robot"), mixed / "sim_robot")
  os.symlink(os.path.join(egodex_build["out"], "egodex"), mixed / "egodex")
  return str(mixed)


@pytest.mark.slow
def test_windows_with_relative_mapping(tiny_data_dir, egodex_build, tmp_path):
  """Converted human video beside robot demos: mapped into the robot's slots with origin `relative` and the
  camera-to-robot rotation; low-confidence steps masked; no privileged state in any window."""
  from vam import embodiment as embodiment_lib  # pylint: disable=g-import-not-at-top
  from vam import mapping as mapping_lib  # pylint: disable=g-import-not-at-top
  from vam.input import pipeline, windows  # pylint: disable=g-import-not-at-top
  mixed = _mixture_dir(tiny_data_dir, egodex_build, tmp_path)
  spec = windows.WindowSpec(context_frames=2, future_frames=0, action_horizon=8, proprio_dim=17)
  space = embodiment_lib.ActionSpace(("human_hand", "arm6"))
  mapping = mapping_lib.Mapping(directions=("human_to_robot",), origin="relative",
                                frame_rotation=egodex.CAMERA_TO_ROBOT)
  entries = [pipeline.DatasetEntry("sim_robot", f"{mixed}/sim_robot/1.0.0", 1.0),
             pipeline.DatasetEntry("egodex", f"{mixed}/egodex/1.0.0", 1.0)]
  p = pipeline.InputPipeline(entries, spec, space, mapping=mapping)
  assert p.without_privileged == [f"{mixed}/egodex/1.0.0"] and not p.spec.privileged
  human = p.sources[1]
  arm, hand = space.embodiment_mask("arm6"), space.embodiment_mask("human_hand")
  w = human[0]
  assert "privileged" not in w and np.isfinite(w["actions"]).all()
  assert w["action_mask"][0][hand].all() and w["action_mask"][0][arm].any()  # own slots and the mapped robot's
  # The right hand of one episode is tracked below the threshold at step 2: the window at t = 0 keeps its
  # first chunk step (the keypoints of step 1 relative to step 0), masks the second (step 2), its own slots and
  # the mapped ones alike, and keeps the third (step 3: both ends tracked).
  e = next(i for i in range(len(human.episodes)) if not human.episodes.episode(i)["hand_valid"].all())
  assert np.flatnonzero(~human.episodes.episode(e)["hand_valid"]).tolist() == list(LOW_CONFIDENCE)
  w0 = human[int(np.flatnonzero((human.index[:, 0] == e) & (human.index[:, 1] == 0))[0])]
  assert w0["action_mask"][0][hand].all() and w0["action_mask"][0][arm].any()
  assert not w0["action_mask"][1].any() and w0["action_mask"][2][hand].all()
  batch = next(iter(p.dataset(batch_size=8, seed=0)))
  assert np.isfinite(batch["actions"]).all() and "privileged" not in batch


@pytest.mark.slow
def test_trains_in_a_mixture(tiny_data_dir, egodex_build, tmp_path):
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  mixed = _mixture_dir(tiny_data_dir, egodex_build, tmp_path)
  overrides = {"data.mixture": "{'sim_robot': 1.0, 'egodex': 1.0}", "data.embodiments": ["human_hand", "arm6"],
               "total_steps": 4, "checkpoint_every": 4}
  with pytest.raises(ValueError, match="privileged state.*egodex.*privileged_aux=0"):
    train_lib.train(experiment_config("quickstart.py:tiny", data_dir=mixed, **overrides), str(tmp_path / "refused"))
  result = train_lib.train(experiment_config("quickstart.py:tiny", data_dir=mixed, **overrides,
                                             **{"model.privileged_aux": 0.0}), str(tmp_path / "w"))
  assert np.isfinite(result["loss"])


@pytest.mark.slow
def test_vam_mutual_imitation_on_converted_video(stage1, egodex_build, tmp_path):
  """Stage 2 on the frozen tiny video model with the converted human video mapped onto the robot (origin
  `relative`, camera-to-robot rotation): the settings of experiments/mutual_pretrain.py:egodex at tiny size."""
  from vam.train import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  real = experiment_config("mutual_pretrain.py:egodex")
  assert real.data.mapping.origin == "relative" and tuple(real.data.mapping.frame_rotation) == egodex.CAMERA_TO_ROBOT
  assert dict(real.data.mixture) == {"sim_robot": 1.0, "egodex": 1.0} and real.model.privileged_aux == 0
  mixed = _mixture_dir(stage1["data"], egodex_build, tmp_path)
  w = str(tmp_path / "vam")
  train_lib.train(experiment_config("mutual_pretrain.py:tiny", data_dir=mixed, **{
      "model.video_workdir": stage1["video"], "data.embodiments": ["human_hand", "arm6"],
      "data.mixture": "{'sim_robot': 1.0, 'egodex': 1.0}", "data.mapping.directions": ["human_to_robot"],
      "data.mapping.origin": "relative", "data.mapping.frame_rotation": list(egodex.CAMERA_TO_ROBOT),
      "model.privileged_aux": 0.0}), w)
  rows = metrics_lib.read(os.path.join(w, "metrics.jsonl"))
  assert rows and all(np.isfinite(r["own_action_loss"]) and r["mapped_action_loss"] > 0 for r in rows)
