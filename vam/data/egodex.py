"""EgoDex episodes (egocentric human video with ARKit hand poses) -> the `human_hand` episodes vam trains on.

Layout read (one episode = two files side by side, any folder depth under the source root, e.g.
`<part>/<task>/<i>.mp4` and `<part>/<task>/<i>.hdf5`):
  <i>.mp4                      the egocentric video (30 Hz in EgoDex), one frame per pose row
  <i>.hdf5  camera/intrinsic   (3, 3) pinhole matrix in pixels of the video
            transforms/camera  (N, 4, 4) camera-to-world pose per frame (ARKit: x right, y up, looking along -z,
                               the same camera axes as our simulated cameras)
            transforms/<joint> (N, 4, 4) world-frame pose per frame of every ARKit skeleton joint: per hand
                               (`left`/`right` prefix) the wrist `<side>Hand` and per finger the metacarpal,
                               knuckle, intermediate base/tip and tip joints (`rightIndexFingerTip`, ...)
            confidences/<joint> (N,) optional tracking confidence in [0, 1]
            attrs              `llm_description` (the instruction), `task`, ...

What one converted hand gives (`convert`; per control step k, at the frame nearest k * source_hz / control_hz):
  hand_keypoints (T, 24)  wrist position (3), wrist 6D rotation (6), five fingertips (thumb, index, middle, ring,
                          little; 15), in the output `frame`: `first_camera` (the camera frame of the episode's
                          first frame: fixed for the episode, so head motion does not show up as hand motion) or
                          `world` (ARKit's gravity-aligned world frame)
  thumb_knuckle (T, 3)    the thumb's knuckle, same frame
  eef / eef_target (T, 9) the wrist pose now / after the step; `state` (T, 9) = the wrist pose (the hand's
                          proprio); `action` (T, 24) the keypoints after the step (the last step holds)
  hand_valid (T,)         every used joint's confidence >= `min_confidence` (windows mask the rest out)
  camera_extrinsics (T, 4, 4) camera-to-output-frame pose per step; images (T, h, w, 3) centre-cropped to a
                          square and resized; intrinsics (3, 3) of those images

The wrist frame is ours (vam/sim/embodiments/human_hand.py: +x along the fingers, +z out of the back of the
hand, +y = z x x, towards the thumb on a right hand). `wrist_frame='keypoints'` (default) builds it from the
joints themselves -- x from the wrist to the midpoint of the index and little knuckles, y from the little to
the index knuckle (right hand; the reverse on a left hand), orthogonalised -- so it does not depend on ARKit's
joint-axis convention. `wrist_frame='transform'` uses the wrist joint's rotation times the fixed correction
`wrist_rotation` (row-major 3x3: our axes written in the ARKit wrist joint's axes).

Bad input raises `EpisodeError`, naming the file and the key (missing joint, NaN pose, mismatched frame
counts, unreadable or truncated video); the dataset builder records it and goes on with the other episodes.
"""

import dataclasses
import os

import numpy as np

from vam.data import video_io
from vam.data.video_io import EpisodeError  # pylint: disable=unused-import  (part of this module's interface)
from vam.sim import geometry

SIDES = ("right", "left")
HANDS = ("right", "left", "both")
FRAMES = ("first_camera", "world")
WRIST_FRAMES = ("keypoints", "transform")
FINGERS = ("Thumb", "IndexFinger", "MiddleFinger", "RingFinger", "LittleFinger")
# The mapping's frame rotation R_h (row-major; config.data.mapping.frame_rotation) from the `first_camera` frame
# (x right, y up, looking along -z) to a robot's base frame (x forward, y left, z up): robot x = -camera z,
# robot y = -camera x, robot z = camera y. It assumes a level first view; EgoDex's `world` frame is
# gravity-aligned (y up) but its heading is arbitrary, so `first_camera` is the frame to map from.
CAMERA_TO_ROBOT = (0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def joint_names(side: str) -> dict:
  """The ARKit joints one hand's conversion reads: {role: transforms key}."""
  return dict(wrist=f"{side}Hand", **{f"tip{i}": f"{side}{f}Tip" for i, f in enumerate(FINGERS)},
              thumb_knuckle=f"{side}ThumbKnuckle", index_knuckle=f"{side}IndexFingerKnuckle",
              little_knuckle=f"{side}LittleFingerKnuckle")


@dataclasses.dataclass(frozen=True)
class Options:
  hand: str = "right"  # which hand one converted episode follows (`hands` of the builder may ask for both)
  frame: str = "first_camera"
  wrist_frame: str = "keypoints"
  wrist_rotation: tuple = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
  source_hz: float = 30.0  # the poses' (and the video's) frame rate
  control_hz: float = 10.0  # the output step rate (our simulated control rate)
  image_size: tuple = (64, 64)  # (w, h) of the stored images
  min_confidence: float = 0.5
  frame_tolerance: int = 0  # video frames may differ from pose rows by this many (the extra ones are dropped)

  def __post_init__(self):
    for field, value, valid in (("hand", self.hand, SIDES), ("frame", self.frame, FRAMES),
                                ("wrist_frame", self.wrist_frame, WRIST_FRAMES)):
      if value not in valid:
        raise ValueError(f"config.datasets.egodex.{field}={value!r}; valid: {list(valid)}")
    if not (self.source_hz > 0 and self.control_hz > 0 and self.control_hz <= self.source_hz):
      raise ValueError(f"config.datasets.egodex: control_hz={self.control_hz} must be in (0, source_hz="
                       f"{self.source_hz}]")
    r = np.asarray(self.wrist_rotation, float)
    if r.size != 9 or not np.allclose(r.reshape(3, 3) @ r.reshape(3, 3).T, np.eye(3), atol=1e-4) or \
        np.linalg.det(r.reshape(3, 3)) < 0:
      raise ValueError(f"config.datasets.egodex.wrist_rotation={self.wrist_rotation} is not a row-major 3x3 rotation")


def find_episodes(root: str) -> tuple[list, list]:
  """([(hdf5, mp4)] of every complete episode under `root`, sorted; [(path, problem)] of unpaired files)."""
  if not os.path.isdir(root):
    raise ValueError(f"config.datasets.egodex.source_dir={root!r} is not a directory")
  pairs, unpaired = [], []
  for folder, _, files in os.walk(root):
    stems = {os.path.splitext(f)[0] for f in files if f.endswith((".hdf5", ".mp4"))}
    for stem in stems:
      h5, mp4 = os.path.join(folder, stem + ".hdf5"), os.path.join(folder, stem + ".mp4")
      if os.path.exists(h5) and os.path.exists(mp4):
        pairs.append((h5, mp4))
      else:
        have = h5 if os.path.exists(h5) else mp4
        unpaired.append((have, f"no {os.path.basename(mp4 if have == h5 else h5)} beside it"))
  return sorted(pairs), sorted(unpaired)


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if isinstance(value, np.ndarray):
    return _text(value.reshape(-1)[0]) if value.size else ""
  return str(value)


def read_poses(path: str, side: str) -> dict:
  """One hand's joints, the camera and the text of an EgoDex `.hdf5`: {role: (N, 4, 4)}, `camera` (N, 4, 4),
  `intrinsic` (3, 3), `confidence` (N,) (the least confident used joint; 1 without confidences), `attrs`."""
  import h5py  # pylint: disable=g-import-not-at-top  (only conversions need it)
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise EpisodeError(path, "file", f"not a readable HDF5 file ({e})") from None
  with f:
    def array(key, shape):
      if key not in f:
        raise EpisodeError(path, key, "missing")
      x = np.asarray(f[key], np.float64)
      if x.shape[1:] != shape[1:] or (shape[0] and x.shape[0] != shape[0]):
        raise EpisodeError(path, key, f"shape {x.shape}, expected {('N',) + shape[1:] if not shape[0] else shape}")
      bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
      if bad.any():
        where = f" at frame {int(np.argmax(bad))}" if shape[0] == 0 else ""
        raise EpisodeError(path, key, f"non-finite values (NaN/inf){where}")
      return x

    camera = array("transforms/camera", (0, 4, 4))
    out = dict(camera=camera, intrinsic=array("camera/intrinsic", (3, 3)))
    n = len(camera)
    confidence = np.ones(n)
    for role, joint in joint_names(side).items():
      key = f"transforms/{joint}"
      out[role] = array(key, (0, 4, 4))
      if len(out[role]) != n:
        raise EpisodeError(path, key, f"{len(out[role])} frames, but transforms/camera has {n} (mismatched frame "
                           "counts)")
      if f"confidences/{joint}" in f:
        c = np.asarray(f[f"confidences/{joint}"], np.float64).reshape(-1)
        if len(c) != n:
          raise EpisodeError(path, f"confidences/{joint}", f"{len(c)} values, but transforms/camera has {n} frames")
        confidence = np.minimum(confidence, np.nan_to_num(c, nan=0.0))
    out["confidence"] = confidence
    out["attrs"] = {k: _text(v) for k, v in f.attrs.items()}
  return out


def wrist_rotations(poses: dict, side: str, opts: Options) -> np.ndarray:
  """(N, 3, 3) world-frame rotations of our wrist frame (see the module docstring)."""
  if opts.wrist_frame == "transform":
    return poses["wrist"][:, :3, :3] @ np.asarray(opts.wrist_rotation, np.float64).reshape(3, 3)
  wrist = poses["wrist"][:, :3, 3]
  index, little = poses["index_knuckle"][:, :3, 3], poses["little_knuckle"][:, :3, 3]
  x = (index + little) / 2 - wrist
  y = (index - little) if side == "right" else (little - index)
  x /= np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)
  y = y - np.sum(x * y, axis=-1, keepdims=True) * x
  y /= np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-9)
  return np.stack([x, y, np.cross(x, y)], axis=-1)


def source_frames(n: int, opts: Options) -> np.ndarray:
  """Indices of the source frames that become control steps (nearest frame to each control time)."""
  return video_io.resample(n, opts.source_hz, opts.control_hz)


def convert(hdf5: str, mp4: str, opts: Options) -> dict:
  """One hand of one EgoDex episode -> the arrays of a `human_hand` episode (module docstring). Raises
  `EpisodeError` on bad input."""
  side = opts.hand
  poses = read_poses(hdf5, side)
  n = len(poses["camera"])
  frames, fps, source_size = video_io.read_video(mp4, opts.image_size)
  if abs(len(frames) - n) > opts.frame_tolerance:
    raise EpisodeError(mp4, "video", f"{len(frames)} frames, but {os.path.basename(hdf5)} has {n} pose frames "
                       "(transforms/camera): truncated or mismatched video")
  if fps and abs(fps - opts.source_hz) > 0.5:
    raise EpisodeError(mp4, "video", f"{fps:g} frames/s, but config source_hz={opts.source_hz:g}")
  n = min(n, len(frames))
  idx = source_frames(n, opts)
  if len(idx) < 2:
    raise EpisodeError(hdf5, "transforms/camera", f"{n} frames: fewer than two control steps at {opts.control_hz:g} Hz")
  world_to_out = np.linalg.inv(poses["camera"][0]) if opts.frame == "first_camera" else np.eye(4)
  rot_out, shift = world_to_out[:3, :3], world_to_out[:3, 3]
  point = lambda role: poses[role][idx, :3, 3] @ rot_out.T + shift
  wrist_rot = rot_out @ wrist_rotations({k: v[idx] for k, v in poses.items() if k not in ("intrinsic", "attrs",
                                                                                        "confidence")}, side, opts)
  wrist = np.concatenate([point("wrist"), geometry.rot6d_from_mat(wrist_rot)], axis=-1)
  keypoints = np.concatenate([wrist] + [point(f"tip{i}") for i in range(5)], axis=-1).astype(np.float32)
  nxt = np.minimum(np.arange(len(idx)) + 1, len(idx) - 1)
  attrs = poses["attrs"]
  task = attrs.get("task") or os.path.basename(os.path.dirname(hdf5))
  instruction = attrs.get("llm_description") or task.replace("_", " ")
  return dict(
      images=frames[idx], hand_keypoints=keypoints, thumb_knuckle=point("thumb_knuckle").astype(np.float32),
      eef=wrist.astype(np.float32), eef_target=wrist[nxt].astype(np.float32), state=wrist.astype(np.float32),
      action=keypoints[nxt], hand_valid=poses["confidence"][idx] >= opts.min_confidence,
      hand_confidence=poses["confidence"][idx].astype(np.float32),
      camera_extrinsics=(world_to_out @ poses["camera"][idx]).astype(np.float32),
      intrinsics=video_io.crop_intrinsics(poses["intrinsic"], source_size, opts.image_size).astype(np.float32),
      source_intrinsics=poses["intrinsic"].astype(np.float32), instruction=instruction, task=task,
      source_frames=n)
