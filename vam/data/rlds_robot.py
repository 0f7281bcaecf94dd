"""A robot dataset in RLDS (Open-X-Embodiment style) -> episodes of a new end-effector embodiment `rlds_<name>`.

The source is any TFDS dataset directory in array_record format (`tfds.builder_from_directory`), with steps
holding images, a state vector, an action vector and an instruction. A small standardisation spec (`Spec`, a
section of experiments/datasets.py) says where each piece is and what convention the actions follow:

  cameras          {our camera: source key}, e.g. {front: observation/image, wrist: observation/wrist_image}
  state_key        e.g. observation/state, with `state_position` / `state_rotation` ([start, stop) slices)
                   and `state_rotation_format`; `state_gripper` (index, -1: none) the gripper *opening*, with
                   `gripper_state_open` / `gripper_state_closed` its values fully open / closed
  action_key       e.g. action; `action_convention`: delta_eef (position and rotation increments applied to the
                   current pose, in the base frame or the tool frame: `delta_frame`) | absolute_eef (the target
                   pose itself); `action_position`, `action_rotation` slices, `action_rotation_format`;
                   `action_gripper` index, `gripper_open` / `gripper_closed` the command values for open/closed
                   (Open-X: +1 open, -1 closed for many datasets; 0/1 for others)
  instruction_key  a step key (language_instruction) or `episode_metadata/<key>`
Rotation formats: euler_xyz (roll, pitch, yaw; R = Rz Ry Rx), quaternion_xyzw, quaternion_wxyz, axis_angle,
rot6d (our first-two-columns form), matrix (9, row-major).

What an episode becomes (ours, vam/data/rlds.py's layout): `eef` (T, 9) the pose (position + 6D rotation),
`eef_target` (T, 9) the pose each action commands, `action` (T, 1) our gripper command (0 open, 1 closed),
`state` (T, 10) the pose and the gripper opening in [0, 1] (0: closed), images centre-cropped to a square and
resized. The robot has no joints and no simulator: the unified action space gives it one end-effector slot
(relative pose + gripper), trained like our robots' eef slots; mutual imitation does not map onto it.
"""

import dataclasses

import numpy as np

from vam.data.video_io import EpisodeError
from vam.embodiment import EXTERNAL_PREFIX, mat_to_rot6d, rot6d_to_mat

ROTATION_FORMATS = {"euler_xyz": 3, "quaternion_xyzw": 4, "quaternion_wxyz": 4, "axis_angle": 3, "rot6d": 6,
                    "matrix": 9}
CONVENTIONS = ("delta_eef", "absolute_eef")
DELTA_FRAMES = ("base", "tool")


@dataclasses.dataclass(frozen=True)
class Spec:
  embodiment: str = "rlds_robot"
  cameras: tuple = (("front", "observation/image"),)
  state_key: str = "observation/state"
  state_position: tuple = (0, 3)
  state_rotation: tuple = (3, 6)
  state_rotation_format: str = "euler_xyz"
  state_gripper: int = -1
  gripper_state_open: float = 1.0
  gripper_state_closed: float = 0.0
  action_key: str = "action"
  action_convention: str = "delta_eef"
  delta_frame: str = "base"
  action_position: tuple = (0, 3)
  action_rotation: tuple = (3, 6)
  action_rotation_format: str = "euler_xyz"
  action_gripper: int = 6
  gripper_open: float = 1.0
  gripper_closed: float = -1.0
  instruction_key: str = "language_instruction"
  image_size: tuple = (64, 64)

  def __post_init__(self):
    key = "config.datasets.rlds_robot"
    if not self.embodiment.startswith(EXTERNAL_PREFIX) or len(self.embodiment) <= len(EXTERNAL_PREFIX):
      raise ValueError(f"{key}.embodiment={self.embodiment!r}: must be {EXTERNAL_PREFIX}<name>")
    for field, value, valid in (("action_convention", self.action_convention, CONVENTIONS),
                                ("delta_frame", self.delta_frame, DELTA_FRAMES),
                                ("state_rotation_format", self.state_rotation_format, ROTATION_FORMATS),
                                ("action_rotation_format", self.action_rotation_format, ROTATION_FORMATS)):
      if value not in valid:
        raise ValueError(f"{key}.{field}={value!r}; valid: {list(valid)}")
    for field, (a, b), fmt in (("state_position", self.state_position, None),
                               ("action_position", self.action_position, None),
                               ("state_rotation", self.state_rotation, self.state_rotation_format),
                               ("action_rotation", self.action_rotation, self.action_rotation_format)):
      want = 3 if fmt is None else ROTATION_FORMATS[fmt]
      if b - a != want:
        raise ValueError(f"{key}.{field}=[{a}, {b}) holds {b - a} values; {fmt or 'a position'} needs {want}")
    if self.gripper_open == self.gripper_closed or (self.state_gripper >= 0 and
                                                    self.gripper_state_open == self.gripper_state_closed):
      raise ValueError(f"{key}: the gripper's open and closed values must differ")
    if not self.cameras:
      raise ValueError(f"{key}.cameras is empty: name at least the primary camera's image key")


def rotation_matrix(x: np.ndarray, fmt: str) -> np.ndarray:
  """(..., k) rotations in `fmt` -> (..., 3, 3)."""
  x = np.asarray(x, np.float64)
  if fmt == "euler_xyz":
    r, p, y = x[..., 0], x[..., 1], x[..., 2]
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.stack([np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
                     np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
                     np.stack([-sp, cp * sr, cp * cr], -1)], -2)
  if fmt in ("quaternion_xyzw", "quaternion_wxyz"):
    q = x if fmt == "quaternion_xyzw" else np.concatenate([x[..., 1:], x[..., :1]], -1)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    i, j, k, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([np.stack([1 - 2 * (j * j + k * k), 2 * (i * j - k * w), 2 * (i * k + j * w)], -1),
                     np.stack([2 * (i * j + k * w), 1 - 2 * (i * i + k * k), 2 * (j * k - i * w)], -1),
                     np.stack([2 * (i * k - j * w), 2 * (j * k + i * w), 1 - 2 * (i * i + j * j)], -1)], -2)
  if fmt == "axis_angle":
    angle = np.linalg.norm(x, axis=-1, keepdims=True)
    axis = x / np.maximum(angle, 1e-12)
    kx = np.zeros(x.shape[:-1] + (3, 3))
    kx[..., 0, 1], kx[..., 0, 2], kx[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    kx = kx - np.swapaxes(kx, -1, -2)
    a = angle[..., None]
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx
  if fmt == "rot6d":
    return rot6d_to_mat(x)
  return x.reshape(x.shape[:-1] + (3, 3))


def _field(step: dict, key: str, path: str):
  node = step
  for part in key.split("/"):
    if not isinstance(node, dict) or part not in node:
      raise EpisodeError(path, key, "missing")
    node = node[part]
  return node


def _resize(images: np.ndarray, size: tuple) -> np.ndarray:
  """(T, H, W, 3) -> (T, h, w, 3): centre square crop, area (box) resize."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  (imageio's dependency)
  t, hh, ww = images.shape[:3]
  s = min(hh, ww)
  y0, x0 = (hh - s) // 2, (ww - s) // 2
  crop = images[:, y0:y0 + s, x0:x0 + s]
  if crop.shape[1:3] == (size[1], size[0]):
    return np.ascontiguousarray(crop)
  return np.stack([np.asarray(Image.fromarray(f).resize(tuple(size), Image.BOX)) for f in crop])


def convert(episode: dict, spec: Spec, path: str) -> dict:
  """One source episode ({steps: [...], episode_metadata?}) -> our arrays (module docstring). `path` names the
  episode in errors ("<dataset dir>[split][index]")."""
  steps = list(episode["steps"])
  if len(steps) < 2:
    raise EpisodeError(path, "steps", f"{len(steps)} steps: fewer than two")
  vec = lambda key: np.stack([np.asarray(_field(s, key, path), np.float64).reshape(-1) for s in steps])
  state, action = vec(spec.state_key), vec(spec.action_key)
  for key, x in ((spec.state_key, state), (spec.action_key, action)):
    if not np.isfinite(x).all():
      bad = int(np.argmax(~np.isfinite(x).all(axis=1)))
      raise EpisodeError(path, key, f"non-finite values (NaN/inf) at step {bad}")
  need_s = max(spec.state_position[1], spec.state_rotation[1], spec.state_gripper + 1)
  need_a = max(spec.action_position[1], spec.action_rotation[1], spec.action_gripper + 1)
  for key, x, need in ((spec.state_key, state, need_s), (spec.action_key, action, need_a)):
    if x.shape[1] < need:
      raise EpisodeError(path, key, f"{x.shape[1]} values per step, but the spec reads {need}")
  pos = state[:, slice(*spec.state_position)]
  rot = rotation_matrix(state[:, slice(*spec.state_rotation)], spec.state_rotation_format)
  a_pos = action[:, slice(*spec.action_position)]
  a_rot = rotation_matrix(action[:, slice(*spec.action_rotation)], spec.action_rotation_format)
  if spec.action_convention == "absolute_eef":
    t_pos, t_rot = a_pos, a_rot
  elif spec.delta_frame == "base":
    t_pos, t_rot = pos + a_pos, a_rot @ rot
  else:  # tool frame: the increment is expressed in the current gripper's axes
    t_pos, t_rot = pos + np.einsum("tij,tj->ti", rot, a_pos), rot @ a_rot
  command = np.clip((action[:, spec.action_gripper] - spec.gripper_open) /
                    (spec.gripper_closed - spec.gripper_open), 0.0, 1.0)
  if spec.state_gripper >= 0:
    opening = np.clip((state[:, spec.state_gripper] - spec.gripper_state_closed) /
                      (spec.gripper_state_open - spec.gripper_state_closed), 0.0, 1.0)
  else:  # no measured opening: the last command's
    opening = 1.0 - np.concatenate([[0.0], command[:-1]])
  eef = np.concatenate([pos, mat_to_rot6d(rot)], -1)
  images = {}
  for camera, key in spec.cameras:
    frames = np.stack([np.asarray(_field(s, key, path)) for s in steps])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
      raise EpisodeError(path, key, f"images of shape {frames.shape[1:]} {frames.dtype}; expected (H, W, 3) uint8")
    images[camera] = _resize(frames, spec.image_size)
  text = _field(episode if spec.instruction_key.startswith("episode_metadata/") else steps[0],
                spec.instruction_key, path)
  instruction = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
  return dict(images=images, eef=eef.astype(np.float32),
              eef_target=np.concatenate([t_pos, mat_to_rot6d(t_rot)], -1).astype(np.float32),
              state=np.concatenate([eef, opening[:, None]], -1).astype(np.float32),
              action=command[:, None].astype(np.float32), instruction=instruction, source_frames=len(steps))
