"""The unified action space (METHOD.md): one action vector with a slot per embodiment, and a mask.

Slots (in this order, sizes from the embodiments' definitions):
  human_hand        24  wrist position (3), wrist 6D rotation (6), five fingertip positions (15)
  <robot>_eef       10  end-effector position (3), 6D rotation (6), gripper command (1)   per robot
  <robot>_joints     n  the robot's native action: absolute joint targets + gripper          per robot

Pose slots are expressed relative to the *current* pose, in the current frame: for a chunk target at
step t+k, position `R_t^T (p_{t+k} - p_t)`, rotation `R_t^T R_{t+k}` as 6D, fingertips `R_t^T (tip - p_t)`
(the hand's frame is its wrist). A sample fills the slots of its own embodiment (and, with mutual
imitation, the mapped slots of another); `mask` marks the valid dimensions and losses are masked means.

All functions here are numpy (host side, used by the input pipeline and the evaluation harness).
"""

import dataclasses
import functools
import threading

import numpy as np

from vam.sim import embodiments as sim_embodiments
from vam.sim import geometry

HAND = "human_hand"
HAND_DIM = 24
EEF_DIM = 10
DEFAULT_EMBODIMENTS = ("human_hand", "arm6", "gantry")


@dataclasses.dataclass(frozen=True)
class Slot:
  name: str
  embodiment: str
  kind: str  # hand | eef | joints
  start: int
  size: int

  @property
  def slice(self) -> slice:
    return slice(self.start, self.start + self.size)


class ActionSpace:
  """The layout of the unified action vector for a set of embodiments."""

  def __init__(self, embodiment_names=DEFAULT_EMBODIMENTS):
    slots, start = [], 0
    for name in embodiment_names:
      if name not in sim_embodiments.EMBODIMENTS:
        raise ValueError(f"unknown embodiment {name!r}; valid embodiments: {sorted(sim_embodiments.EMBODIMENTS)}")
      cls = sim_embodiments.EMBODIMENTS[name]
      parts = [(name, "hand", HAND_DIM)] if cls.kind == "human" else [
          (f"{name}_eef", "eef", EEF_DIM), (f"{name}_joints", "joints", len(cls.action_names))]
      for slot_name, kind, size in parts:
        slots.append(Slot(slot_name, name, kind, start, size))
        start += size
    self.embodiments = tuple(embodiment_names)
    self.slots = {s.name: s for s in slots}
    self.dim = start

  def own_slots(self, embodiment: str) -> list[Slot]:
    if embodiment not in self.embodiments:
      raise ValueError(f"embodiment {embodiment!r} is not in this action space {list(self.embodiments)}")
    return [s for s in self.slots.values() if s.embodiment == embodiment]

  def mask(self, *slot_names: str) -> np.ndarray:
    m = np.zeros(self.dim, bool)
    for n in slot_names:
      m[self.slots[n].slice] = True
    return m

  def embodiment_mask(self, embodiment: str) -> np.ndarray:
    return self.mask(*[s.name for s in self.own_slots(embodiment)])

  def layout(self) -> dict:
    """JSON-able description (stored with checkpoints)."""
    return dict(dim=self.dim, embodiments=list(self.embodiments),
                slots=[dataclasses.asdict(s) for s in self.slots.values()])


# ---- relative poses (numpy) --------------------------------------------------------------------------
# The one 6D-rotation convention (numpy in, numpy out).
rot6d_to_mat = geometry.mat_from_rot6d
mat_to_rot6d = geometry.rot6d_from_mat


def relative_pose(current: np.ndarray, future: np.ndarray) -> np.ndarray:
  """current (9,) [pos; rot6d], future (H, 9) -> (H, 9) in the current frame."""
  p0, r0 = current[:3], rot6d_to_mat(current[3:9])
  p, r = future[:, :3], rot6d_to_mat(future[:, 3:9])
  return np.concatenate([(p - p0) @ r0, mat_to_rot6d(np.einsum("ji,hjk->hik", r0, r))], axis=-1)


def absolute_pose(current: np.ndarray, relative: np.ndarray) -> np.ndarray:
  """Inverse of `relative_pose`: (9,), (H, 9) -> (H, 9) in the world frame."""
  p0, r0 = current[:3], rot6d_to_mat(current[3:9])
  p = p0 + relative[:, :3] @ r0.T
  r = np.einsum("ij,hjk->hik", r0, rot6d_to_mat(relative[:, 3:9]))
  return np.concatenate([p, mat_to_rot6d(r)], axis=-1)


def relative_hand(current: np.ndarray, future: np.ndarray) -> np.ndarray:
  """Hand keypoints current (24,), future (H, 24) -> (H, 24) in the current wrist frame."""
  pose = relative_pose(current[:9], future[:, :9])
  p0, r0 = current[:3], rot6d_to_mat(current[3:9])
  tips = (future[:, 9:].reshape(-1, 5, 3) - p0) @ r0
  return np.concatenate([pose, tips.reshape(-1, 15)], axis=-1)


def absolute_hand(current: np.ndarray, relative: np.ndarray) -> np.ndarray:
  pose = absolute_pose(current[:9], relative[:, :9])
  p0, r0 = current[:3], rot6d_to_mat(current[3:9])
  tips = p0 + relative[:, 9:].reshape(-1, 5, 3) @ r0.T
  return np.concatenate([pose, tips.reshape(-1, 15)], axis=-1)


# ---- mutual imitation: human <-> robot mappings (METHOD.md) ---------------------------------------------
# Per episode, on the host. A human episode gets, for every robot of the action space, the trajectory that
# robot would follow to imitate the hand (end-effector poses, gripper commands, joint targets by IK); a
# robot episode gets the hand keypoints that would imitate the robot. `unified_chunk` (vam/input/windows.py)
# turns these "views" into the mapped slots of a window exactly as it does an episode's own data.
DIRECTIONS = ("human_to_robot", "robot_to_human")
ORIGINS = ("absolute", "relative")
ANCHORS = ("grasp", "wrist")


@dataclasses.dataclass(frozen=True)
class Mapping:
  """How hands and robots map onto each other.

  `frame_rotation` R_h (row-major 3x3) rotates human-frame displacements into the robot frame. With
  origin `relative` (METHOD.md, for human video whose frame is unrelated to the robot's) the robot's
  grasp point follows the hand anchor's displacement from the episode start, starting from the robot's
  home pose: p(t) = p_home + R_h (anchor(t) - anchor(0)). With `absolute` (the simulated hand shares the
  robots' scenes and world frame) it follows the anchor itself: p(t) = R_h anchor(t) + frame_offset, so
  the mapped joint targets do the task in that scene. The anchor is the hand's grasp point (between thumb
  and fingers, where the robot's fingers close) or its wrist. Orientations map the hand's grasp-ready
  frame onto the robot's (`down_frame`s), the gripper command is 1 - the thumb-index opening, and the
  hand's fingertips come from the gripper opening by interpolating the anatomical open and closed hands.
  """
  directions: tuple[str, ...] = DIRECTIONS
  frame_rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
  frame_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
  origin: str = "absolute"
  anchor: str = "grasp"
  ik_iters: int = 20

  def __post_init__(self):
    for field, value, valid in (("origin", self.origin, ORIGINS), ("anchor", self.anchor, ANCHORS)):
      if value not in valid:
        raise ValueError(f"config.data.mapping.{field}={value!r}; valid: {list(valid)}")
    for d in self.directions:
      if d not in DIRECTIONS:
        raise ValueError(f"config.data.mapping.directions has {d!r}; valid: {list(DIRECTIONS)}")
    r = np.asarray(self.frame_rotation, float).reshape(3, 3) if len(self.frame_rotation) == 9 else None
    if r is None or not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
      raise ValueError(f"config.data.mapping.frame_rotation={self.frame_rotation} is not a row-major 3x3 rotation")

  @property
  def rotation(self) -> np.ndarray:
    return np.asarray(self.frame_rotation, np.float64).reshape(3, 3)

  @classmethod
  def from_config(cls, cfg) -> "Mapping | None":
    """`config.data.mapping` (None or no directions: no mapping)."""
    if cfg is None or not list(cfg.get("directions", [])):
      return None
    return cls(directions=tuple(cfg["directions"]), frame_rotation=tuple(cfg.get("frame_rotation", cls.frame_rotation)),
               frame_offset=tuple(cfg.get("frame_offset", cls.frame_offset)), origin=cfg.get("origin", cls.origin),
               anchor=cfg.get("anchor", cls.anchor), ik_iters=int(cfg.get("ik_iters", cls.ik_iters)))


@dataclasses.dataclass
class _Kinematics:
  """An embodiment in its scene (native MuJoCo), for forward kinematics and IK on the host."""
  emb: object
  model: object
  data: object
  home_site: np.ndarray  # end-effector site at the home pose (3,)
  home_pos: np.ndarray  # grasp point at the home pose (3,)


_BUILD_LOCK = threading.Lock()  # grain reads windows from several threads


def _kinematics(name: str) -> _Kinematics:
  with _BUILD_LOCK:
    return _build_kinematics(name)


@functools.lru_cache(maxsize=None)
def _build_kinematics(name: str) -> _Kinematics:
  import mujoco  # pylint: disable=g-import-not-at-top
  from vam.sim import scene  # pylint: disable=g-import-not-at-top  (builds a MuJoCo model: only when mapping)
  emb = sim_embodiments.get(name)
  m = scene.build_spec(emb).compile()
  emb.bind(m)
  d = mujoco.MjData(m)
  d.qpos[emb.qpos_adr] = emb.home
  mujoco.mj_kinematics(m, d)
  mat = d.site_xmat[emb.eef_site].reshape(3, 3).copy()
  site = d.site_xpos[emb.eef_site].copy()
  return _Kinematics(emb, m, d, site, site + mat @ emb.grasp_offset)


def _hand_shape():
  with _BUILD_LOCK:
    return _build_hand_shape()


@functools.lru_cache(maxsize=None)
def _build_hand_shape():
  """The anatomical function's ends: fingertips in the wrist frame (5, 3) with the hand open and closed,
  and their thumb-index distances (m)."""
  import mujoco  # pylint: disable=g-import-not-at-top
  from vam.sim.embodiments import human_hand  # pylint: disable=g-import-not-at-top
  k = _build_kinematics(HAND)
  tips = {}
  for which, fingers in (("open", human_hand._OPEN), ("closed", human_hand._CLOSED)):  # pylint: disable=protected-access
    k.data.qpos[k.emb.qpos_adr] = np.concatenate([np.zeros(6), fingers])
    mujoco.mj_kinematics(k.model, k.data)
    p0, r0 = k.data.site_xpos[k.emb.wrist_site], k.data.site_xmat[k.emb.wrist_site].reshape(3, 3)
    tips[which] = (k.data.site_xpos[k.emb.tip_sites] - p0) @ r0
  dist = {w: float(np.linalg.norm(t[0] - t[1])) for w, t in tips.items()}
  return tips["open"], tips["closed"], dist["open"], dist["closed"]


def hand_opening(keypoints: np.ndarray) -> np.ndarray:
  """Hand keypoints (T, 24) -> opening (T,) in [0, 1]: the thumb-index distance between the closed (0) and
  open (1) anatomical hands."""
  _, _, d_open, d_closed = _hand_shape()
  tips = keypoints[:, 9:].reshape(-1, 5, 3)
  d = np.linalg.norm(tips[:, 0] - tips[:, 1], axis=-1)
  return np.clip((d - d_closed) / (d_open - d_closed), 0.0, 1.0)


def _hand_anchor(keypoints: np.ndarray, anchor: str):
  """(T, 24) -> anchor positions (T, 3) and wrist rotations (T, 3, 3)."""
  from vam.sim.embodiments import human_hand  # pylint: disable=g-import-not-at-top
  wrist, rot = keypoints[:, :3].astype(np.float64), rot6d_to_mat(keypoints[:, 3:9].astype(np.float64))
  if anchor == "wrist":
    return wrist, rot
  return wrist + rot @ human_hand.HumanHand.grasp_offset, rot


def _calibration(robot: str) -> np.ndarray:
  """C: hand wrist frame -> robot end-effector frame, mapping the grasp-ready ('down') poses onto each other."""
  return sim_embodiments.EMBODIMENTS[HAND].down_frame.T @ sim_embodiments.EMBODIMENTS[robot].down_frame


def solve_joints(robot: str, pos: np.ndarray, mat: np.ndarray, iters: int = 20) -> np.ndarray:
  """Joint targets (T, n) (the robot's native action without the gripper) putting its end-effector site at
  pos (T, 3) with rotation mat (T, 3, 3): damped least squares, warm-started from the previous step (home
  at t = 0), clipped to the joint ranges; orientation is traded for position where the robot lacks DoF."""
  import mujoco  # pylint: disable=g-import-not-at-top
  from vam.sim.embodiments import base  # pylint: disable=g-import-not-at-top
  k = _kinematics(robot)
  emb = k.emb
  n = emb.action_dim - 1
  arm = emb.chain(n)
  data = mujoco.MjData(k.model)  # per call: grain reads windows from several threads
  q, out = np.array(emb.home[:n], float), np.zeros((len(pos), n), np.float32)
  for t in range(len(pos)):
    q = base.solve_ik(k.model, arm, pos[t], mat[t], q, iters=iters, data=data, q_rest=emb.home[:n],
                      rest_weight=1e-3)
    out[t] = q
  return out


def human_to_robot(keypoints: np.ndarray, robot: str, mapping: Mapping) -> dict:
  """A hand's keypoints (T, 24) -> the robot's view: `eef` (T, 9) poses (state-aligned) and `action` (T, n + 1)
  joint targets + gripper command (action t leads to the pose of step t + 1)."""
  r_h, k = mapping.rotation, _kinematics(robot)
  anchor, wrist_rot = _hand_anchor(keypoints, mapping.anchor)
  if mapping.origin == "absolute":
    grasp = anchor @ r_h.T + np.asarray(mapping.frame_offset)
  else:
    grasp = k.home_pos + (anchor - anchor[:1]) @ r_h.T
  rot = r_h @ wrist_rot @ _calibration(robot)
  eef_pos = grasp - rot @ k.emb.grasp_offset
  eef = np.concatenate([eef_pos, mat_to_rot6d(rot)], axis=-1).astype(np.float32)
  nxt = np.minimum(np.arange(len(keypoints)) + 1, len(keypoints) - 1)
  close = 1.0 - hand_opening(keypoints)[nxt]
  joints = solve_joints(robot, eef_pos[nxt], rot[nxt], mapping.ik_iters)
  return dict(eef=eef, action=np.concatenate([joints, close[:, None]], axis=-1).astype(np.float32))


def robot_to_human(eef: np.ndarray, action: np.ndarray, robot: str, mapping: Mapping) -> dict:
  """A robot's end-effector poses (T, 9) and native actions (T, n + 1) -> the hand's view: `hand_keypoints`
  (T, 24) (wrist pose, fingertips from the gripper opening)."""
  from vam.sim.embodiments import human_hand  # pylint: disable=g-import-not-at-top
  r_h, k = mapping.rotation, _kinematics(robot)
  pos, rot = eef[:, :3].astype(np.float64), rot6d_to_mat(eef[:, 3:9].astype(np.float64))
  grasp = pos + rot @ k.emb.grasp_offset
  if mapping.origin == "absolute":
    anchor = (grasp - np.asarray(mapping.frame_offset)) @ r_h
  else:
    hand = _kinematics(HAND)
    start = hand.home_pos if mapping.anchor == "grasp" else hand.home_site
    anchor = start + (grasp - grasp[:1]) @ r_h
  wrist_rot = r_h.T @ rot @ _calibration(robot).T
  wrist = anchor - wrist_rot @ human_hand.HumanHand.grasp_offset if mapping.anchor == "grasp" else anchor
  # The opening at step t follows the command of step t - 1 (the first step: its own command).
  prev = np.maximum(np.arange(len(eef)) - 1, 0)
  opening = 1.0 - np.clip(action[prev, -1], 0.0, 1.0)
  tips_open, tips_closed, _, _ = _hand_shape()
  local = tips_closed[None] + opening[:, None, None] * (tips_open - tips_closed)[None]
  tips = wrist[:, None] + np.einsum("tij,tkj->tki", wrist_rot, local)
  return dict(hand_keypoints=np.concatenate([wrist, mat_to_rot6d(wrist_rot), tips.reshape(-1, 15)],
                                            axis=-1).astype(np.float32))


def map_episode(ep: dict, space: ActionSpace, mapping: Mapping | None) -> dict:
  """{embodiment: view} of the other embodiments' mapped trajectories for an episode (see above)."""
  if mapping is None:
    return {}
  name, views = ep["embodiment"], {}
  if name == HAND and "human_to_robot" in mapping.directions:
    for robot in space.embodiments:
      if robot != HAND:
        views[robot] = human_to_robot(ep["hand_keypoints"], robot, mapping)
  elif name != HAND and "robot_to_human" in mapping.directions and HAND in space.embodiments:
    views[HAND] = robot_to_human(ep["eef"], ep["action"], name, mapping)
  return views
