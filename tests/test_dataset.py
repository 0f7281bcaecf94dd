"""Build a tiny dataset with the CLI, read it back with plain TFDS in a process that never imports vam."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = [sys.executable, "-m", "vam.data.build", "--config", "experiments/datasets.py:tiny"]
SMALL = ["--config.tasks=['reach', 'push']", "--config.datasets.sim_robot.episodes_per_task=1",
         "--config.datasets.sim_human.episodes_per_task=2", "--config.preview_episodes=2"]


def _run(args, **kw):
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("datasets"))
  proc = _run(BUILD + ["--data_dir", data_dir] + SMALL)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return data_dir


READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow_datasets as tfds
    out = {}
    for name in ("sim_robot", "sim_human"):
      builder = tfds.builder_from_directory(sys.argv[1] + "/" + name + "/1.0.0")
      src = builder.as_data_source(split="train")
      episodes = []
      for i in range(len(src)):
        ep = src[i]
        steps = list(ep["steps"])
        meta = ep["episode_metadata"]
        obs = steps[0]["observation"]
        episodes.append(dict(
            n=len(steps), embodiment=meta["embodiment"].decode(), task=meta["task"].decode(),
            action_dim=int(meta["action_dim"]), image=list(obs["image_front"].shape),
            image_dtype=str(obs["image_front"].dtype), image_std=float(obs["image_front"].std()),
            first=[bool(s["is_first"]) for s in steps], last=[bool(s["is_last"]) for s in steps],
            instruction=steps[0]["language_instruction"].decode(), keys=sorted(obs),
            action=[float(x) for x in steps[0]["action"]], intrinsics=np.asarray(meta["camera_front_intrinsics"]).tolist(),
            keypoints=list(obs["hand_keypoints"].shape) if "hand_keypoints" in obs else None,
            eef_target=list(np.asarray(steps[0]["eef_target"]).shape), restarts=int(meta["restarts"]),
            privileged=list(obs["privileged"].shape)))
      out[name] = dict(episodes=episodes, val=len(builder.as_data_source(split="val")))
    out["vam_imported"] = any(m == "vam" or m.startswith("vam.") for m in sys.modules)
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_tiny_dataset_reads_back_without_vam(built):
  proc = _run([sys.executable, "-c", READER, built], env={**os.environ, "PYTHONPATH": ""})
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["vam_imported"] is False
  robot, human = out["sim_robot"]["episodes"], out["sim_human"]["episodes"]
  assert {e["embodiment"] for e in robot} == {"arm6", "gantry"} and len(robot) == 4
  assert {e["embodiment"] for e in human} == {"human_hand"} and len(human) == 4
  assert out["sim_robot"]["val"] == 4 and out["sim_human"]["val"] == 2
  for e in robot + human:
    assert e["image"] == [64, 64, 3] and e["image_dtype"] == "uint8" and e["image_std"] > 5
    assert e["first"][0] and not any(e["first"][1:]) and e["last"][-1] and not any(e["last"][:-1])
    assert e["instruction"] and e["task"] in ("reach", "push")
    assert e["intrinsics"][2] == [0, 0, 1]
  assert {e["action_dim"] for e in robot} == {7, 5}
  assert all(e["keypoints"] == [24] for e in human)
  assert all("hand_keypoints" in e["keys"] and "thumb_knuckle" in e["keys"] for e in human)
  assert all(e["eef_target"] == [9] and e["privileged"] == [13] and e["restarts"] >= 0 for e in robot + human)
  for e in robot:  # padded action slots are exactly zero
    assert all(x == 0.0 for x in e["action"][e["action_dim"]:])


@pytest.mark.slow
def test_stats_config_and_preview_written(built):
  stats = json.load(open(os.path.join(built, "sim_robot", "1.0.0", "normalization.json")))
  assert set(stats) == {"arm6", "gantry"}
  assert len(stats["arm6"]["action"]["mean"]) == 7 and len(stats["gantry"]["state"]["q99"]) == 5
  # Relative actions: joint deltas and commanded poses, over all chunk steps and per chunk step.
  assert len(stats["arm6"]["joints_relative"]["q01"]) == 6 and len(stats["gantry"]["eef_relative"]["q99"]) == 9
  assert len(stats["arm6"]["joints_relative_by_step"]["q99"]) == stats["arm6"]["relative_horizon"] == 16
  human = json.load(open(os.path.join(built, "sim_human", "1.0.0", "normalization.json")))
  assert len(human["human_hand"]["hand_keypoints"]["std"]) == 24
  cfg = json.load(open(os.path.join(built, "sim_human", "1.0.0", "build_config.json")))
  assert cfg["variant"] == "tiny" and cfg["tasks"] == ["reach", "push"]
  assert os.path.getsize(os.path.join(built, "preview.mp4")) > 1000


def _digest(folder):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(folder)):
    for f in sorted(files):
      h.update(open(os.path.join(root, f), "rb").read())
  return h.hexdigest()


@pytest.mark.slow
def test_existing_output_is_not_overwritten(built):
  before = _digest(os.path.join(built, "sim_robot"))
  proc = _run(BUILD + ["--data_dir", built] + SMALL)
  assert proc.returncode != 0 and "already exists" in proc.stderr and "--overwrite" in proc.stderr
  assert _digest(os.path.join(built, "sim_robot")) == before


def test_bad_inputs_fail_clearly(tmp_path):
  proc = _run(BUILD[:-1] + ["experiments/datasets.py:huge", "--data_dir", str(tmp_path)])
  assert proc.returncode != 0 and "valid variants" in proc.stderr and "quickstart" in proc.stderr
  proc = _run(BUILD + ["--data_dir", str(tmp_path), "--config.datasets.sim_robot.embodiments=['arm7']"])
  assert proc.returncode != 0 and "arm7" in proc.stderr and "gantry" in proc.stderr
  proc = _run(BUILD + ["--data_dir", str(tmp_path), "--config.tasks=['juggle']"])
  assert proc.returncode != 0 and "juggle" in proc.stderr and "pick_place" in proc.stderr
  proc = _run(BUILD + ["--data_dir", str(tmp_path), "--config.episodes=3"])
  assert proc.returncode != 0 and "unknown config key 'episodes'" in proc.stderr
  proc = _run(BUILD + ["--data_dir", str(tmp_path), "--only", "sim_robt"])
  assert proc.returncode != 0 and "sim_robot" in proc.stderr
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  proc = _run(BUILD + ["--data_dir", str(blocker / "sub")])
  assert proc.returncode != 0 and "cannot create --data_dir" in proc.stderr
