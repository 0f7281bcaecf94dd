"""Mutual imitation (METHOD.md): human hand motion and robot motion mapped into each other's action spaces.

Per episode, on the host. A human episode gets, for every robot of the action space, the trajectory that
robot would follow to imitate the hand (end-effector poses, joint positions and targets by inverse
kinematics, gripper commands); a robot episode gets the hand keypoints that would imitate the robot.
`windows.unified_chunk` (vam/input/windows.py) turns these "views" into the mapped slots of a window exactly
as it does an episode's own data. Inverse kinematics runs on native MuJoCo models of the embodiments in
their scenes, built lazily (only runs that map need MuJoCo here).
"""

import dataclasses
import functools
import threading

import numpy as np

from vam import embodiment as embodiment_lib
from vam.embodiment import HAND, mat_to_rot6d, rot6d_to_mat

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
  from vam.sim import embodiments as sim_embodiments  # pylint: disable=g-import-not-at-top
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


def _sim_class(name: str):
  from vam.sim import embodiments as sim_embodiments  # pylint: disable=g-import-not-at-top  (MuJoCo)
  return sim_embodiments.EMBODIMENTS[name]


def _calibration(robot: str) -> np.ndarray:
  """C: hand wrist frame -> robot end-effector frame, mapping the grasp-ready ('down') poses onto each other."""
  return _sim_class(HAND).down_frame.T @ _sim_class(robot).down_frame


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
  """A hand's keypoints (T, 24) -> the robot's view: `eef` (T, 9) poses, `eef_target` (T, 9) the pose each
  step commands (the next one), `state` (T, n + 1) joint positions (IK) + gripper opening, and `action`
  (T, n + 1) joint targets + gripper command, all state-aligned (action t leads to the pose of step t + 1)."""
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
  opening = hand_opening(keypoints)
  joints = solve_joints(robot, eef_pos, rot, mapping.ik_iters)  # joint positions at every step's pose
  # The mapped robot commands the pose it reaches next (the hand has no commanded pose of its own).
  return dict(eef=eef, eef_target=eef[nxt],
              state=np.concatenate([joints, opening[:, None]], axis=-1).astype(np.float32),
              action=np.concatenate([joints[nxt], 1.0 - opening[nxt, None]], axis=-1).astype(np.float32))


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


def map_episode(ep: dict, space: embodiment_lib.ActionSpace, mapping: Mapping | None) -> dict:
  """{embodiment: view} of the other embodiments' mapped trajectories for an episode (see above)."""
  if mapping is None:
    return {}
  name, views = ep["embodiment"], {}
  # Only the simulated robots have the kinematics a mapping needs (robots of converted RLDS datasets do not).
  simulated = lambda n: embodiment_lib.spec(n).kind == "robot"
  if name == HAND and "human_to_robot" in mapping.directions:
    for robot in space.embodiments:
      if simulated(robot):
        views[robot] = human_to_robot(ep["hand_keypoints"], robot, mapping)
  elif simulated(name) and "robot_to_human" in mapping.directions and HAND in space.embodiments:
    views[HAND] = robot_to_human(ep["eef"], ep["action"], name, mapping)
  return views
