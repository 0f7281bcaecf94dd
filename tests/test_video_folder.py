"""A folder of plain videos -> image-only episodes (data/video_folder): frames at the control rate, instructions
from a .txt or instructions.json, bad files named and skipped, the video model trains on it, action models
refuse it."""

import json
import os
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

import egodex_files
from conftest import ROOT, experiment_config
from vam.data import video_folder, video_io


def _write(path, frames, fps):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  imageio.mimwrite(path, list(frames), fps=fps, macro_block_size=1)


@pytest.fixture(scope="module")
def video_build(tiny_data_dir, tmp_path_factory):
  """Three good videos of the simulated hand (30 Hz with each 10 Hz step thrice, 10 Hz, 30 Hz), a corrupt one
  and a one-frame one; converted with the CLI (the last good video by path goes to val)."""
  root = tmp_path_factory.mktemp("videos")
  src, out = root / "source", root / "data"
  eps = egodex_files.sim_episodes(tiny_data_dir)
  _write(str(src / "kitchen" / "clip0.mp4"), np.repeat(eps[0]["images"], 3, axis=0), 30)
  (src / "kitchen" / "clip0.txt").write_text("  wipe the\ntable  \n")
  _write(str(src / "lab" / "clip1.mp4"), eps[1]["images"], 10)
  _write(str(src / "zoo" / "clip2.mp4"), np.repeat(eps[2]["images"], 3, axis=0), 30)
  (src / "instructions.json").write_text(json.dumps({"lab/clip1.mp4": "open the drawer"}))
  (src / "bad").mkdir()
  (src / "bad" / "corrupt.mp4").write_bytes(b"\x00" * 4096)
  _write(str(src / "bad" / "short.mp4"), eps[0]["images"][:1], 10)
  cmd = [sys.executable, "-m", "vam.data.build", "--config", "experiments/datasets.py:video_folder", "--data_dir",
         str(out), "--no_preview", f"--config.datasets.video_folder.source_dir={src}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(src=str(src), out=str(out), dir=str(out / "video_folder" / "1.0.0"), episodes=eps, stderr=proc.stderr)


def _psnr(a, b) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.mark.slow
def test_videos_become_image_only_episodes(video_build):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder_from_directory(video_build["dir"])
  expected = {"kitchen/clip0.mp4": (0, "wipe the table", "train"), "lab/clip1.mp4": (1, "open the drawer", "train"),
              "zoo/clip2.mp4": (2, "", "val")}
  seen = {}
  for split in ("train", "val"):
    src = builder.as_data_source(split=split)
    for i in range(len(src)):
      ep = src[i]
      meta, steps = ep["episode_metadata"], list(ep["steps"])
      rel = meta["source_file"].decode()
      k, instruction, want_split = expected[rel]
      images = np.stack([s["observation"]["image_front"] for s in steps])
      sim = video_build["episodes"][k]["images"]
      assert images.shape == sim.shape and _psnr(images, sim) > 28, rel  # 30 Hz -> 10 Hz: each step once
      assert steps[0]["language_instruction"].decode() == instruction and split == want_split
      assert meta["embodiment"].decode() == "human_hand" and meta["task"].decode() == rel.split("/")[0]
      seen[rel] = float(meta["source_hz"])
  assert seen == {"kitchen/clip0.mp4": 30.0, "lab/clip1.mp4": 10.0, "zoo/clip2.mp4": 30.0}
  report = json.load(open(os.path.join(video_build["dir"], "conversion_report.json")))
  rejected = {os.path.basename(r["file"]): r for r in report["rejected"]}
  assert set(rejected) == {"corrupt.mp4", "short.mp4"} and {r["key"] for r in rejected.values()} == {"video"}
  assert "cannot be decoded" in rejected["corrupt.mp4"]["problem"]
  assert "fewer than two steps" in rejected["short.mp4"]["problem"]
  assert "video_folder: skipped" in video_build["stderr"]


def test_clips_and_bad_settings(tiny_data_dir, tmp_path):
  images = egodex_files.sim_episodes(tiny_data_dir)[0]["images"]
  path = str(tmp_path / "v.mp4")
  _write(path, np.repeat(images, 3, axis=0), 30)
  clips = video_folder.convert(path, video_folder.Options(clip_seconds=0.2))  # 2 steps per clip
  lengths = [len(c["images"]) for c in clips]
  assert sum(lengths) == len(images) - (len(images) % 2 == 1) and set(lengths) == {2}
  assert [c["first_frame"] for c in clips] == [6 * i for i in range(len(clips))]
  with pytest.raises(video_io.EpisodeError, match="v.mp4: video: 30 frames/s is below config control_hz=60"):
    video_folder.convert(path, video_folder.Options(control_hz=60.0))
  with pytest.raises(ValueError, match="config.datasets.video_folder.source_dir=.* is not a directory"):
    video_folder.find_videos(str(tmp_path / "nope"))
  (tmp_path / "instructions.json").write_text('{"v.mp4": 3}')
  with pytest.raises(ValueError, match=r"instructions.json: entry 'v.mp4': the instruction must be a string"):
    video_folder.read_instructions(str(tmp_path))
  (tmp_path / "instructions.json").write_text("{not json")
  with pytest.raises(ValueError, match="instructions.json: not a readable JSON object"):
    video_folder.read_instructions(str(tmp_path))


def _mixture_dir(data_dir, video_build, tmp_path) -> str:
  mixed = tmp_path / "mixed"
  mixed.mkdir()
  for name in ("sim_robot", "sim_human"):
    os.symlink(os.path.join(data_dir, name), mixed / name)
  os.symlink(os.path.join(video_build["out"], "video_folder"), mixed / "video_folder")
  return str(mixed)


@pytest.mark.slow
def test_video_model_trains_on_it_and_policies_refuse_it(stage1, video_build, tmp_path):
  from vam.train import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  mixed = _mixture_dir(stage1["data"], video_build, tmp_path)
  loader = train_lib.make_inputs(experiment_config("video_pretrain.py:tiny", data_dir=mixed, **{
      "model.autoencoder_workdir": stage1["ae"], "data.embodiments": ["human_hand", "arm6"],
      "data.mixture": "{'sim_human': 1.0, 'video_folder': 1.0}"}))[2]
  assert loader.video_only == [f"{mixed}/video_folder/1.0.0"]
  w = next(s for s in loader.sources if s.episodes.dir.endswith("video_folder/1.0.0"))[0]
  assert not w["action_mask"].any() and not w["proprio"].any() and w["images"].shape[-3:] == (64, 64, 3)
  video = str(tmp_path / "video")
  train_lib.train(experiment_config("video_pretrain.py:tiny", data_dir=mixed, **{
      "model.autoencoder_workdir": stage1["ae"], "total_steps": 4, "data.embodiments": ["human_hand", "arm6"],
      "data.mixture": "{'sim_human': 1.0, 'video_folder': 1.0}"}), video)
  rows = metrics_lib.read(os.path.join(video, "metrics.jsonl"))
  assert rows and all(np.isfinite(r["loss"]) for r in rows)
  with pytest.raises(ValueError, match="video_folder.*no actions.*image_baseline"):
    train_lib.train(experiment_config("quickstart.py:tiny", data_dir=mixed, **{
        "data.mixture": "{'sim_robot': 1.0, 'video_folder': 1.0}", "data.embodiments": ["human_hand", "arm6"],
        "model.privileged_aux": 0.0}), str(tmp_path / "refused"))
