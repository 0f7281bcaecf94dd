"""Writes EgoDex-layout episodes (`<i>.mp4` + `<i>.hdf5`, ARKit joint names) from the simulated hand's own
recorded episodes, so a converter's output can be checked against keypoints known exactly.

The 10 Hz simulated steps become 30 Hz frames (step k at frame 3k; positions interpolated between steps,
images repeated), in the world frame the simulator uses, with its (fixed) front camera as `transforms/camera`.
The wrist joint's rotation is written as R_sim C^T, so that a converter applying the correction C recovers the
simulator's wrist frame; the knuckles sit where a keypoint-built frame equals the simulator's exactly.
"""

import os

import h5py
import imageio.v2 as imageio
import numpy as np
import tensorflow_datasets as tfds

from vam.data import egodex
from vam.embodiment import rot6d_to_mat

UPSAMPLE = 3  # 10 Hz steps -> 30 Hz frames
KNUCKLE = np.array([0.09, 0.027, 0.0])  # index knuckle in the wrist frame (the little knuckle mirrors its y)
LEFT_OFFSET = np.array([0.0, 0.25, 0.0])  # the left hand: the right one's motion, shifted
FAULTS = ("missing_joint", "truncated_video", "nan_pose", "frame_counts")


def sim_episodes(data_dir: str, split: str = "train") -> list[dict]:
  """The simulated hand's episodes of a built `sim_human` dataset: keypoints, thumb knuckle, images, camera."""
  src = tfds.builder_from_directory(os.path.join(data_dir, "sim_human", "1.0.0")).as_data_source(split=split)
  out = []
  for i in range(len(src)):
    ep = src[i]
    steps, meta = list(ep["steps"]), ep["episode_metadata"]
    out.append(dict(
        keypoints=np.stack([s["observation"]["hand_keypoints"] for s in steps]).astype(np.float64),
        thumb_knuckle=np.stack([s["observation"]["thumb_knuckle"] for s in steps]).astype(np.float64),
        images=np.stack([s["observation"]["image_front"] for s in steps]),
        camera=np.asarray(meta["camera_front_extrinsics"], np.float64),
        intrinsics=np.asarray(meta["camera_front_intrinsics"], np.float64),
        instruction=steps[0]["language_instruction"].decode(), task=meta["task"].decode()))
  return out


def _frames(x: np.ndarray) -> np.ndarray:
  """(T, ...) per step -> (3 (T - 1) + 1, ...) per 30 Hz frame, linearly interpolated."""
  t = np.arange(UPSAMPLE * (len(x) - 1) + 1) / UPSAMPLE
  k = np.minimum(np.floor(t).astype(int), len(x) - 1)
  nxt, w = np.minimum(k + 1, len(x) - 1), (t - k).reshape((-1,) + (1,) * (x.ndim - 1))
  return x[k] * (1 - w) + x[nxt] * w


def _pose(rot, pos):
  m = np.zeros(rot.shape[:-2] + (4, 4))
  m[..., :3, :3], m[..., :3, 3], m[..., 3, 3] = rot, pos, 1.0
  return m


def hand_joints(ep: dict, side: str, correction: np.ndarray) -> dict:
  """{ARKit joint: (N, 4, 4)} of one hand at 30 Hz (the left hand: the right one's motion, shifted)."""
  kp = _frames(ep["keypoints"])
  rot = rot6d_to_mat(ep["keypoints"][np.minimum(np.arange(len(kp)) // UPSAMPLE, len(ep["keypoints"]) - 1), 3:9])
  shift = LEFT_OFFSET if side == "left" else np.zeros(3)
  wrist = kp[:, :3] + shift
  tips = kp[:, 9:].reshape(-1, 5, 3) + shift
  sign = 1.0 if side == "right" else -1.0  # the index knuckle is towards the thumb
  knuckle = lambda y: wrist + np.einsum("nij,j->ni", rot, KNUCKLE * [1, y, 1])
  names = egodex.joint_names(side)
  out = {names["wrist"]: _pose(rot @ correction.T, wrist),
         names["thumb_knuckle"]: _pose(rot, _frames(ep["thumb_knuckle"]) + shift),
         names["index_knuckle"]: _pose(rot, knuckle(sign)), names["little_knuckle"]: _pose(rot, knuckle(-sign))}
  for i, finger in enumerate(egodex.FINGERS):
    out[names[f"tip{i}"]] = _pose(rot, tips[:, i])
    base = wrist if finger == "Thumb" else knuckle(sign * (1.5 - i) / 1.5)  # the other joints: along the finger
    for j, part in enumerate(("Metacarpal", "IntermediateBase", "IntermediateTip") if finger != "Thumb" else
                             ("IntermediateBase", "IntermediateTip")):
      out.setdefault(f"{side}{finger}{part}", _pose(rot, base + (tips[:, i] - base) * (j + 1) / 4))
  return out


def expected_keypoints(ep: dict, side: str) -> np.ndarray:
  """The 24-D keypoints (T, 24) a world-frame conversion of `side` must give (10 Hz steps)."""
  kp = ep["keypoints"].copy()
  if side == "left":
    kp[:, :3] += LEFT_OFFSET
    kp[:, 9:] += np.tile(LEFT_OFFSET, 5)
  return kp


def write_episode(folder: str, stem: str, ep: dict, *, correction=np.eye(3), low_confidence=(), fault=None):
  """Writes `folder/stem.{hdf5,mp4}` (both hands); `low_confidence`: 10 Hz steps whose right-hand joints get
  confidence 0.1; `fault`: one of FAULTS. Returns the two paths."""
  os.makedirs(folder, exist_ok=True)
  h5, mp4 = os.path.join(folder, stem + ".hdf5"), os.path.join(folder, stem + ".mp4")
  joints = {**hand_joints(ep, "right", correction), **hand_joints(ep, "left", correction)}
  n = len(next(iter(joints.values())))
  frames = np.repeat(ep["images"], UPSAMPLE, axis=0)[:n]
  if fault == "truncated_video":
    frames = frames[: n // 2]
  with h5py.File(h5, "w") as f:
    f["camera/intrinsic"] = ep["intrinsics"].astype(np.float32)
    f["transforms/camera"] = np.repeat(ep["camera"][None], n, axis=0).astype(np.float32)
    for name, pose in joints.items():
      if fault == "missing_joint" and name == "rightThumbTip":
        continue
      pose = pose.astype(np.float32)
      if fault == "nan_pose" and name == "rightHand":
        pose[n // 2] = np.nan
      if fault == "frame_counts" and name == "rightIndexFingerTip":
        pose = pose[:-UPSAMPLE]
      f[f"transforms/{name}"] = pose
      conf = np.ones(n, np.float32)
      if name.startswith("right"):
        for k in low_confidence:
          conf[k * UPSAMPLE] = 0.1
      f[f"confidences/{name}"] = conf
    f.attrs["llm_description"] = ep["instruction"]
    f.attrs["task"] = ep["task"]
  imageio.mimwrite(mp4, list(frames), fps=30, macro_block_size=1)
  return h5, mp4
