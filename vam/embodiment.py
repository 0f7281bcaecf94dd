"""The one action contract (METHOD.md), free of MuJoCo: what every model predicts and every robot executes.

Embodiments (a plain table, `EMBODIMENTS`): a robot's native action is its joint targets followed by one
gripper command; its proprio is its joint positions followed by the gripper opening. The human hand has
no executable action here (its data is keypoints).

Gripper convention (the only place it is stated): a gripper *command* is in [0, 1], 0 = open, 1 = closed;
the proprio's gripper *opening* is in [0, 1], 1 = open, 0 = closed. Commands are always absolute.

The unified action vector has a slot per embodiment, in the order of the action space:
  human_hand        24  wrist position (3), wrist 6D rotation (6), five fingertip positions (15)
  <robot>_eef       10  end-effector position (3), 6D rotation (6), gripper command (1)
  <robot>_joints   n+1  joint-target deltas (n) from the current joint positions, gripper command (1)
Everything a robot executes is relative to its state when the chunk was planned (step t), so "hold still"
is the zero action: for chunk step k (action t+k), the eef slot holds the pose that action commands (the
forward kinematics of its joint targets, `steps/eef_target`) relative to the current pose (displacement
`p - p_t` in world axes, rotation `R_t^T R` as 6D), the joint slot holds `target_{t+k} - q_t`, and the hand
slot (data, never executed) holds the wrist pose reached after step t+k relative to the current one (the same
way) and the fingertips in the current wrist frame (`R_t^T (tip - p_t)`).
A sample fills its own embodiment's slots (and, with mutual imitation, the mapped slots of another);
masks mark the valid dimensions and losses are masked means.

`Normalizer` maps slots and proprio to unit scale with per-embodiment statistics; it works on numpy (the
input pipeline) and jax.numpy (jitted evaluation) alike, and is rebuilt from the dict saved in every
checkpoint. `native_commands` is the one way back: a normalised unified chunk + the robot's current state ->
the commands it executes (`control='joints'`: absolute joint targets + gripper, its native action;
`control='eef'`: world-frame end-effector pose targets + gripper, for a differential-IK controller).
The human <-> robot mapping of mutual imitation (inverse kinematics) lives in `vam/mapping.py`.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

from vam.sim import geometry

HAND = "human_hand"
HAND_DIM = 24
EEF_DIM = 10  # pose (9) + gripper command
POSE_DIM = 9
CONTROLS = ("joints", "eef")  # which slot a robot executes


def proprio_width(proprio_dim: int, with_eef: bool) -> int:
  """The model's proprio input: the padded native state, then (`config.data.proprio_eef`) the end-effector
  pose (position + 6D rotation, standardised)."""
  return proprio_dim + (POSE_DIM if with_eef else 0)


@dataclasses.dataclass(frozen=True)
class EmbodimentSpec:
  # robot (simulated: joints and an end effector) | robot_eef (a robot of a converted RLDS dataset, known by its
  # end-effector poses and gripper only) | human
  kind: str
  joints: tuple[str, ...] = ()  # robots: the joint targets of the native action (the gripper command follows)

  @property
  def action_names(self) -> tuple[str, ...]:
    return self.joints + ("gripper",) if self.kind in ("robot", "robot_eef") else ()


# Mirrors the simulated embodiments' native actions (vam/sim/embodiments; a test keeps them in step).
EMBODIMENTS = {
    "human_hand": EmbodimentSpec("human"),
    "arm6": EmbodimentSpec("robot", ("q_yaw", "q_shoulder", "q_elbow", "q_roll", "q_wrist", "q_tool")),
    "gantry": EmbodimentSpec("robot", ("x", "y", "z", "yaw")),
}
DEFAULT_EMBODIMENTS = ("human_hand", "arm6", "gantry")


# Robots of converted RLDS datasets (data/rlds_robot) are named `rlds_<dataset>`: the name alone defines them
# (an end-effector slot, no joints, no simulator), so checkpoints restore their action space like ours.
EXTERNAL_PREFIX = "rlds_"


def spec(name: str) -> EmbodimentSpec:
  if name in EMBODIMENTS:
    return EMBODIMENTS[name]
  if name.startswith(EXTERNAL_PREFIX) and len(name) > len(EXTERNAL_PREFIX):
    return EmbodimentSpec("robot_eef")
  raise ValueError(f"unknown embodiment {name!r}; valid embodiments: {sorted(EMBODIMENTS)} or "
                   f"{EXTERNAL_PREFIX}<name> (a converted RLDS robot dataset)")


def _xp(x):
  return np if isinstance(x, (np.ndarray, np.generic, float, int)) else jnp


# ---- slot layout -------------------------------------------------------------------------------------
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
      s = spec(name)
      parts = ([(name, "hand", HAND_DIM)] if s.kind == "human" else [(f"{name}_eef", "eef", EEF_DIM)] +
               ([(f"{name}_joints", "joints", len(s.action_names))] if s.kind == "robot" else []))
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

  def slot(self, embodiment: str, kind: str) -> Slot:
    for s in self.own_slots(embodiment):
      if s.kind == kind:
        return s
    raise ValueError(f"embodiment {embodiment!r} has no {kind!r} slot (robots have 'eef' and 'joints')")

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


# ---- relative poses and joints (numpy or jax.numpy) ---------------------------------------------------
rot6d_to_mat = geometry.mat_from_rot6d  # the one 6D-rotation convention
mat_to_rot6d = geometry.rot6d_from_mat


def relative_pose(current, future):
  """current (..., 9) [pos; rot6d], future (..., H, 9) -> (..., H, 9): the displacement `p - p_t` (world axes)
  and the rotation `R_t^T R` (in the current frame). Translations stay in world axes so that an error in the
  current orientation never turns into an error of where to go."""
  xp = _xp(current)
  r0 = rot6d_to_mat(current[..., 3:9])
  rot = xp.einsum("...ji,...hjk->...hik", r0, rot6d_to_mat(future[..., 3:9]))
  return xp.concatenate([future[..., :3] - current[..., None, :3], mat_to_rot6d(rot)], axis=-1)


def absolute_pose(current, relative):
  """Inverse of `relative_pose`: (..., 9), (..., H, 9) -> (..., H, 9) in the world frame."""
  xp = _xp(current)
  r0 = rot6d_to_mat(current[..., 3:9])
  rot = xp.einsum("...ij,...hjk->...hik", r0, rot6d_to_mat(relative[..., 3:9]))
  return xp.concatenate([current[..., None, :3] + relative[..., :3], mat_to_rot6d(rot)], axis=-1)


def relative_hand(current, future):
  """Hand keypoints current (24,), future (H, 24) -> (H, 24): the wrist pose as `relative_pose`, the fingertips
  in the current wrist frame (the hand's shape, whatever its pose)."""
  pose = relative_pose(current[:9], future[:, :9])
  p0, r0 = current[:3], rot6d_to_mat(current[3:9])
  tips = (future[:, 9:].reshape(-1, 5, 3) - p0) @ r0
  return np.concatenate([pose, tips.reshape(-1, 15)], axis=-1)


def absolute_hand(current, relative):
  pose = absolute_pose(current[:9], relative[:, :9])
  p0, r0 = current[:3], rot6d_to_mat(current[3:9])
  tips = p0 + relative[:, 9:].reshape(-1, 5, 3) @ r0.T
  return np.concatenate([pose, tips.reshape(-1, 15)], axis=-1)


def relative_joints(joints, targets):
  """Current joint positions (..., n) and absolute targets (..., H, n + 1) (joints + gripper command) ->
  (..., H, n + 1): joint deltas from the current positions, the gripper command unchanged."""
  n = joints.shape[-1]
  xp = _xp(targets)
  return xp.concatenate([targets[..., :n] - joints[..., None, :], targets[..., n:]], axis=-1)


def absolute_joints(joints, relative):
  """Inverse of `relative_joints`."""
  n = joints.shape[-1]
  xp = _xp(relative)
  return xp.concatenate([relative[..., :n] + joints[..., None, :], relative[..., n:]], axis=-1)


def joint_positions(name: str, state):
  """A robot's joint positions (..., n) from its proprio (..., S) (the joints come first)."""
  return state[..., :len(spec(name).joints)]


def gripper_opening(name: str, state):
  """A robot's gripper opening (..., 1) from its proprio: after the joints (simulated robots) or after the
  end-effector pose (robots of converted RLDS datasets, whose state is pose (9) + opening)."""
  s = spec(name)
  start = POSE_DIM if s.kind == "robot_eef" else len(s.joints)
  return state[..., start:start + 1]


# ---- normalisation -------------------------------------------------------------------------------------
NORM_MODES = ("quantile", "mean_std")


# Smallest half-width of an action dimension's map. A dimension the demos barely move (a robot that keeps its
# gripper's yaw moves the 6D rotation components by ~1e-4) would otherwise turn any other source's value --
# a human hand's wrist turn mapped onto it, a policy's small error -- into a huge normalised one.
MIN_ACTION_SCALE = 0.05


def _affine(stat: dict, mode: str, idx=slice(None), floor: float = 0.0):
  """(center, half-width) of a summary's values (per dimension, or (H, D) for a `_by_step` summary); a
  constant dimension keeps scale 1, the others at least `floor`."""
  if mode == "quantile":
    lo, hi = np.asarray(stat["q01"])[..., idx], np.asarray(stat["q99"])[..., idx]
    center, half = (hi + lo) / 2, (hi - lo) / 2
  else:
    center, half = np.asarray(stat["mean"])[..., idx], np.asarray(stat["std"])[..., idx]
  return center, np.where(half > 1e-6, np.maximum(half, floor), 1.0)


def _pad_last(x, width, value=0.0):
  xp = _xp(x)
  return xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])], constant_values=value)


class Normalizer:
  """Per-embodiment affine maps of unified action chunks and of (zero-padded) proprio.

  Built from a dataset's statistics (`from_stats`: mode `quantile` maps [q01, q99] onto [-1, 1], `mean_std`
  standardises; dimensions with no spread keep scale 1, action dimensions at least MIN_ACTION_SCALE) or from a
  checkpoint (`from_dict`). Slot statistics:
  hand <- `hand_relative`; `<robot>_eef` <- `eef_relative` (9) + the gripper command of `action`;
  `<robot>_joints` <- `joints_relative` (n) + the gripper command. With `per_step`, every chunk step k has its
  own offset and scale (`<field>_by_step`): the next step's small motion keeps its resolution beside the
  large motion many steps ahead. Action maps are (H, A) arrays, so they apply to chunks (..., H, A). Affine:
  round trips are exact. Every method takes numpy or jax arrays and returns the same kind. With `proprio_eef`,
  the proprio carries the end-effector pose after the state (standardised by the `eef` statistics): where the
  gripper is relative to what it must reach is then a difference, not forward kinematics to learn.
  """

  def __init__(self, space: ActionSpace, proprio_dim: int, mode: str, action_offset: dict, action_scale: dict,
               state_offset: dict, state_scale: dict, privileged_offset: dict | None = None,
               privileged_scale: dict | None = None, per_step: bool = False, eef_offset: dict | None = None,
               eef_scale: dict | None = None):
    if mode not in NORM_MODES:
      raise ValueError(f"unknown normalisation mode {mode!r}; valid: {list(NORM_MODES)}")
    self.space, self.proprio_dim, self.mode, self.per_step = space, proprio_dim, mode, per_step
    f32 = lambda d: {k: np.asarray(v, np.float32) for k, v in d.items()}
    self.action_offset, self.action_scale = f32(action_offset), f32(action_scale)
    self.state_offset, self.state_scale = f32(state_offset), f32(state_scale)
    self.privileged_offset, self.privileged_scale = f32(privileged_offset or {}), f32(privileged_scale or {})
    self.eef_offset, self.eef_scale = f32(eef_offset or {}), f32(eef_scale or {})
    self.proprio_eef = bool(self.eef_offset)
    self.horizon = next(iter(self.action_offset.values())).shape[0] if self.action_offset else 0

  @classmethod
  def from_stats(cls, stats: dict, space: ActionSpace, proprio_dim: int, mode: str = "quantile",
                 horizon: int = 16, per_step: bool = False, proprio_eef: bool = False) -> "Normalizer":
    """Maps for chunks of `horizon` steps from a dataset's `normalization.json` contents."""
    if mode not in NORM_MODES:
      raise ValueError(f"unknown normalisation mode {mode!r}; valid: {list(NORM_MODES)}")
    a_off, a_scale, s_off, s_scale, p_off, p_scale, e_off, e_scale = {}, {}, {}, {}, {}, {}, {}, {}
    for name in space.embodiments:
      if name not in stats:
        continue
      st = stats[name]
      if horizon > st.get("relative_horizon", 0):
        raise ValueError(f"config.data.action_horizon={horizon} is longer than the {st.get('relative_horizon')} "
                         f"chunk steps the statistics of {name!r} describe (rebuild the dataset)")
      off, scale = np.zeros((horizon, space.dim), np.float32), np.ones((horizon, space.dim), np.float32)
      for slot in space.own_slots(name):
        field = {"hand": "hand_relative", "eef": "eef_relative", "joints": "joints_relative"}[slot.kind]
        try:
          c, h = _affine(st[field + "_by_step"] if per_step else st[field], mode, floor=MIN_ACTION_SCALE)
          if slot.kind != "hand":  # the gripper command (absolute) follows the pose or joint deltas
            c_grip, h_grip = _affine(st["action"], mode, slice(-1, None), floor=MIN_ACTION_SCALE)
            c = np.concatenate([c, np.broadcast_to(c_grip, c.shape[:-1] + (1,))], -1)
            h = np.concatenate([h, np.broadcast_to(h_grip, h.shape[:-1] + (1,))], -1)
        except KeyError as e:
          raise ValueError(f"normalisation statistics for {name!r} lack field {e.args[0]!r} (datasets built by "
                           "an older vam: rebuild them with python -m vam.data.build --overwrite)") from None
        first = lambda x: x if x.ndim == 1 else x[:horizon]  # by step: the chunk's first `horizon` steps
        off[:, slot.slice], scale[:, slot.slice] = first(c), first(h)
      a_off[name], a_scale[name] = off, scale
      c, h = _affine(st["state"], mode)
      if len(c) > proprio_dim:
        raise ValueError(f"{name}: proprio has {len(c)} dims > config.data.proprio_dim={proprio_dim}")
      s_off[name] = np.pad(c, (0, proprio_dim - len(c)))
      s_scale[name] = np.pad(h, (0, proprio_dim - len(c)), constant_values=1.0)
      if "privileged" in st:  # always standardised: task state in metres and a one-hot
        p_off[name], p_scale[name] = _affine(st["privileged"], "mean_std")
      if proprio_eef:
        e_off[name], e_scale[name] = _affine(st["eef"], "mean_std")
    return cls(space, proprio_dim, mode, a_off, a_scale, s_off, s_scale, p_off, p_scale, per_step, e_off, e_scale)

  @classmethod
  def from_dict(cls, d: dict, space: ActionSpace) -> "Normalizer":
    """The normaliser saved in a checkpoint's assets (`to_dict`)."""
    return cls(space, int(d["proprio_dim"]), d["mode"], d["action_offset"], d["action_scale"], d["state_offset"],
               d["state_scale"], d.get("privileged_offset"), d.get("privileged_scale"), d.get("per_step", False),
               d.get("eef_offset"), d.get("eef_scale"))

  def to_dict(self) -> dict:
    lists = lambda m: {k: v.tolist() for k, v in m.items()}
    return dict(mode=self.mode, proprio_dim=self.proprio_dim, per_step=self.per_step,
                action_offset=lists(self.action_offset), action_scale=lists(self.action_scale),
                state_offset=lists(self.state_offset), state_scale=lists(self.state_scale),
                privileged_offset=lists(self.privileged_offset), privileged_scale=lists(self.privileged_scale),
                eef_offset=lists(self.eef_offset), eef_scale=lists(self.eef_scale))

  @property
  def embodiments(self) -> list[str]:
    return sorted(self.action_offset)

  def _check(self, name):
    if name not in self.action_offset:
      raise ValueError(f"no normalisation statistics for embodiment {name!r} (have {self.embodiments})")

  def _maps(self, name, actions):
    self._check(name)
    h = actions.shape[-2]
    if h > self.horizon:
      raise ValueError(f"a chunk of {h} steps is longer than the normaliser's {self.horizon}")
    return self.action_offset[name][:h], self.action_scale[name][:h]

  def normalize_actions(self, name, actions):
    """Unified chunk (..., H, A), native units -> normalised."""
    off, scale = self._maps(name, actions)
    return ((actions - off) / scale).astype(np.float32)

  def denormalize_actions(self, name, actions):
    off, scale = self._maps(name, actions)
    return (actions * scale + off).astype(np.float32)

  @property
  def proprio_width(self) -> int:
    return proprio_width(self.proprio_dim, self.proprio_eef)

  def normalize_state(self, name, state, eef=None):
    """Native proprio (..., S) [+ end-effector pose eef (..., 9)] -> the model's proprio (..., proprio_width):
    the state normalised and zero-padded to proprio_dim, then (with `proprio_eef`) the pose standardised."""
    self._check(name)
    out = ((_pad_last(state, self.proprio_dim) - self.state_offset[name]) / self.state_scale[name]).astype(np.float32)
    if not self.proprio_eef:
      return out
    if eef is None:
      raise ValueError("this normaliser's proprio includes the end-effector pose (data.proprio_eef): pass eef")
    pose = ((eef - self.eef_offset[name]) / self.eef_scale[name]).astype(np.float32)
    return _xp(out).concatenate([out, pose], axis=-1)

  def normalize_privileged(self, name, privileged):
    """The simulator's true task state (..., D) standardised (the privileged-state policy's input)."""
    if name not in self.privileged_offset:
      raise ValueError(f"no statistics of the privileged state for {name!r}: rebuild the dataset with this vam")
    return ((privileged - self.privileged_offset[name]) / self.privileged_scale[name]).astype(np.float32)

  def action_scale_table(self) -> np.ndarray:
    """(E, H, A) action scales by embodiment id (ones for embodiments without statistics)."""
    ones = np.ones((self.horizon, self.space.dim), np.float32)
    return np.stack([self.action_scale.get(e, ones) for e in self.space.embodiments])


def merge_stats(*stats: dict) -> dict:
  """Per-embodiment statistics of several datasets; an embodiment may come from one dataset only."""
  out = {}
  for s in stats:
    for name, v in s.items():
      if name in out:
        raise ValueError(f"embodiment {name!r} has statistics in two datasets of the mixture; keep it in one")
      out[name] = v
  return out


# ---- what a robot executes -------------------------------------------------------------------------------
def native_commands(normalizer: Normalizer, embodiment: str, control: str, chunk, state, eef=None):
  """A normalised unified chunk (..., K, A) + the robot's state when it was planned -> what it executes.

  state (..., S): native proprio; eef (..., 9): the current end-effector pose (for `control='eef'`).
  control `joints`: (..., K, n + 1) absolute joint targets + gripper command (the native action);
  control `eef`: (..., K, 10) world-frame end-effector pose targets (position, 6D rotation) + gripper command,
  which the simulator's differential-IK controller tracks (vam/sim/embodiments, `track_pose`)."""
  if control not in CONTROLS:
    raise ValueError(f"control={control!r}; valid: {list(CONTROLS)}")
  if spec(embodiment).kind != "robot":
    raise ValueError(f"embodiment {embodiment!r} is not a robot: it has no commands to execute")
  slot = normalizer.space.slot(embodiment, control)
  native = normalizer.denormalize_actions(embodiment, chunk)[..., slot.slice]
  if control == "joints":
    return absolute_joints(joint_positions(embodiment, state), native)
  if eef is None:
    raise ValueError("control='eef' needs the current end-effector pose")
  xp = _xp(native)
  return xp.concatenate([absolute_pose(eef, native[..., :POSE_DIM]), native[..., POSE_DIM:]], axis=-1)


def hold_chunk(normalizer: Normalizer, embodiment: str, horizon: int, gripper_opening):
  """The normalised unified chunk (H, A) that holds a robot still: zero joint deltas, the identity relative
  pose, and the gripper command matching its current opening (a reference for offline errors)."""
  space = normalizer.space
  chunk = np.zeros((horizon, space.dim), np.float32)
  command = 1.0 - float(gripper_opening)
  for slot in space.own_slots(embodiment):
    if slot.kind == "eef":
      chunk[:, slot.start + 3:slot.start + 9] = [1, 0, 0, 0, 1, 0]
    chunk[:, slot.start + slot.size - 1] = command
  return normalizer.normalize_actions(embodiment, chunk)
