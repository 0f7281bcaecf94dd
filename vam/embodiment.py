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
