"""What every embodiment provides: a body built into an MjSpec, and pure jnp accessors over MJX data.

An embodiment owns its joints, actuators and sites (names prefixed with `<name>/`). After the scene is
compiled, `bind(mj_model)` resolves names to static integer indices so every accessor is a pure
function of `mjx.Data` usable under jit and vmap.
"""

import copy
import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import mujoco
import numpy as np

from vam.sim import geometry

# Colours (RGBA) used by the embodiments.
ROBOT_GREY = (0.55, 0.57, 0.62, 1.0)
ROBOT_DARK = (0.2, 0.2, 0.23, 1.0)
SKIN = (0.87, 0.68, 0.56, 1.0)


@dataclasses.dataclass
class Embodiment:
  """Base class. Subclasses set the class attributes and implement `build`, `proprio` and the expert map."""

  name: ClassVar[str]
  kind: ClassVar[str]  # 'robot' or 'human'
  action_names: ClassVar[tuple[str, ...]]  # one name per dimension of the native action
  # Rotation of the end-effector frame when it points "down" at yaw 0 (grasp-ready).
  down_frame: ClassVar[np.ndarray]
  # Offset (eef frame) from the end-effector site to the point that should meet the object when grasping.
  grasp_offset: ClassVar[np.ndarray] = np.zeros(3)
  expert_rot_gain: ClassVar[float] = 1.0  # fraction of its orientation error the expert corrects per step

  def __post_init__(self):
    self.jnt_ids = None

  # ---- building ---------------------------------------------------------------------------------
  def build(self, spec: mujoco.MjSpec, mount: np.ndarray) -> None:
    raise NotImplementedError

  def p(self, s: str) -> str:
    return f"{self.name}/{s}"

  def bind(self, m: mujoco.MjModel) -> None:
    """Resolves the names of this embodiment's joints, actuators and sites to indices."""
    self.jnt_ids = np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, j) for j in self.joint_names()])
    if (self.jnt_ids < 0).any():
      raise ValueError(f"{self.name}: joints missing from the compiled model")
    self.qpos_adr = np.array(m.jnt_qposadr[self.jnt_ids])
    self.dof_adr = np.array(m.jnt_dofadr[self.jnt_ids])
    self.jnt_type = np.array(m.jnt_type[self.jnt_ids])
    self.act_ids = np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, a) for a in self.actuator_names()])
    self.eef_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, self.p("eef"))
    self.ctrl_low = np.array(m.actuator_ctrlrange[self.act_ids, 0])
    self.ctrl_high = np.array(m.actuator_ctrlrange[self.act_ids, 1])
    self.home = self.home_qpos(m)

  def chain(self, n: int) -> "Embodiment":
    """A bound copy restricted to the first `n` joints (e.g. the arm without its fingers), for IK."""
    view = copy.copy(self)
    view.jnt_ids, view.qpos_adr, view.dof_adr, view.jnt_type = (self.jnt_ids[:n], self.qpos_adr[:n],
                                                                self.dof_adr[:n], self.jnt_type[:n])
    return view

  def joint_names(self) -> list[str]:
    raise NotImplementedError

  def actuator_names(self) -> list[str]:
    raise NotImplementedError

  def home_qpos(self, m: mujoco.MjModel) -> np.ndarray:
    """Joint positions (same order as `joint_names`) at the start of every episode."""
    raise NotImplementedError

  # ---- pure accessors over mjx.Data ----------------------------------------------------------------
  @property
  def action_dim(self) -> int:
    return len(self.action_names)

  def joint_qpos(self, d):
    return d.qpos[self.qpos_adr]

  def eef_pose(self, d):
    """End-effector position (3,) and rotation matrix (3, 3) in the world frame."""
    return d.site_xpos[self.eef_site], d.site_xmat[self.eef_site].reshape(3, 3)

  def eef_vector(self, d):
    """[pos (3); rot6d (6)]: the end-effector pose as stored in datasets."""
    pos, mat = self.eef_pose(d)
    return jnp.concatenate([pos, geometry.rot6d_from_mat(mat)])

  def gripper_opening(self, d):
    """Scalar in [0, 1]: 1 fully open, 0 closed."""
    raise NotImplementedError

  def proprio(self, d):
    raise NotImplementedError

  def ctrl_from_action(self, action):
    """Native action -> actuator controls (clipped to the control ranges)."""
    raise NotImplementedError

  def grasp_point(self, d):
    pos, mat = self.eef_pose(d)
    return pos + mat @ jnp.asarray(self.grasp_offset, jnp.float32)

  def expert_action(self, d, grasp_pos, yaw, close):
    """Scripted-expert map: put the grasp point at `grasp_pos`, pointing down at `yaw`, gripper closed by `close`
    (robots: through `track_pose`; the hand overrides this with direct wrist and finger targets)."""
    mat = geometry.mat_from_yaw(yaw) @ jnp.asarray(self.down_frame, jnp.float32)
    return self.track_pose(d, grasp_pos - mat @ jnp.asarray(self.grasp_offset, jnp.float32), mat, close,
                           self.expert_rot_gain)

  def track_pose(self, d, pos, mat, close, rot_gain=1.0):
    """Robots: native action (joint targets + gripper command) of one differential-IK step that moves the
    end-effector site towards position pos (3,) and rotation mat (3, 3)."""
    raise NotImplementedError(f"{self.name} has no end-effector controller")

  def command_action(self, d, command, control: str):
    """A robot's executed command (vam/embodiment.py `native_commands`) -> its native action: `joints`
    commands are native actions already; `eef` commands (pose (9) + gripper) go through `track_pose`."""
    if control == "joints":
      return command
    return self.track_pose(d, command[:3], geometry.mat_from_rot6d(command[3:9]), command[9])


def dls_ik_step(jac, err, damping=0.05):
  """Damped least squares: dq = J^T (J J^T + lambda^2 I)^-1 err.  jac (k, n), err (k,) -> (n,)."""
  k = jac.shape[0]
  return jac.T @ jnp.linalg.solve(jac @ jac.T + damping**2 * jnp.eye(k), err)


def site_jacobian(d, jnt_ids, jnt_type, site_pos):
  """Geometric Jacobian (6, n) of a point for a serial chain of hinge/slide joints, from MJX data.

  Built from the joint axes and anchors MuJoCo already computed (`xaxis`, `xanchor`), so it works
  the same on every MJX backend.
  """
  axes = d.xaxis[jnt_ids]
  anchors = d.xanchor[jnt_ids]
  hinge = jnp.asarray(jnt_type == mujoco.mjtJoint.mjJNT_HINGE)[:, None]
  jp_ = jnp.where(hinge, jnp.cross(axes, site_pos[None] - anchors), axes)
  jr = jnp.where(hinge, axes, 0.0)
  return jnp.concatenate([jp_.T, jr.T], axis=0)


def add_parallel_gripper(body: mujoco.MjsBody, prefix: str, opening: float = 0.045) -> None:
  """A two-finger parallel gripper pointing along the body's +z; fingers slide along +-y.

  Adds slide joints `<prefix>finger_l/r` (0 = closed, `opening` = open) and the `eef` site between the
  fingertips. The fingers carry high-friction pads.
  """
  body.add_geom(name=prefix + "palm", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.02, 0.06, 0.015],
                pos=[0, 0, 0.015], rgba=ROBOT_DARK, mass=0.2)
  for side, sign in (("l", 1.0), ("r", -1.0)):
    f = body.add_body(name=prefix + "finger_" + side, pos=[0, sign * 0.008, 0.03])
    f.add_joint(name=prefix + "finger_" + side, type=mujoco.mjtJoint.mjJNT_SLIDE, axis=[0, sign, 0],
                range=[0, opening], damping=30.0, armature=0.01)
    f.add_geom(name=prefix + "finger_" + side, type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.012, 0.006, 0.035],
               pos=[0, 0, 0.035], rgba=ROBOT_GREY, mass=0.05, friction=[1.5, 0.02, 0.001], condim=4)
  body.add_site(name=prefix + "eef", pos=[0, 0, 0.075], size=[0.005] * 3, rgba=[1, 0, 0, 0])


def add_gripper_actuators(spec: mujoco.MjSpec, prefix: str, opening: float = 0.045) -> None:
  for side in ("l", "r"):
    spec.add_actuator(name=prefix + "finger_" + side, target=prefix + "finger_" + side,
                      trntype=mujoco.mjtTrn.mjTRN_JOINT, ctrlrange=[0, opening], ctrllimited=True,
                      forcerange=[-25, 25], forcelimited=True,
                      gainprm=[300] + [0] * 9, biasprm=[0, -300, 0] + [0] * 7,
                      gaintype=mujoco.mjtGain.mjGAIN_FIXED, biastype=mujoco.mjtBias.mjBIAS_AFFINE)


def add_position_actuator(spec, name, joint, ctrlrange, kp, force=None):
  """A position servo `force = kp (ctrl - q)`, optionally force-limited.

  Its damping lives in the joint (`damping=`), not in the actuator's velocity bias: MJX Warp's
  implicit integrator keeps the velocity derivative of a force-limited actuator even when it
  saturates, which can freeze a joint (measured); joint damping is integrated implicitly everywhere.
  """
  kw = dict(forcerange=[-force, force], forcelimited=True) if force else {}
  spec.add_actuator(name=name, target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT,
                    ctrlrange=list(ctrlrange), ctrllimited=True,
                    gainprm=[kp] + [0] * 9, biasprm=[0, -kp, 0] + [0] * 7,
                    gaintype=mujoco.mjtGain.mjGAIN_FIXED, biastype=mujoco.mjtBias.mjBIAS_AFFINE, **kw)


def solve_ik(m: mujoco.MjModel, emb: Embodiment, target_pos, target_mat, q_init, iters=200, data=None,
             q_rest=None, rest_weight: float = 0.0):
  """Host-side IK (native MuJoCo): joint positions of `emb`'s joints putting its end-effector site at
  target_pos (3,) with rotation target_mat (3, 3); damped least squares from q_init, clipped to the ranges.
  `rest_weight` > 0 adds a secondary task pulling the joints towards `q_rest`: redundant or singular
  directions (e.g. two aligned wrist axes) then stay at the rest posture instead of drifting."""
  d = mujoco.MjData(m) if data is None else data
  q = np.array(q_init, float)
  lo, hi = m.jnt_range[emb.jnt_ids].T
  jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
  for _ in range(iters):
    d.qpos[emb.qpos_adr] = q
    mujoco.mj_kinematics(m, d)
    mujoco.mj_comPos(m, d)
    mujoco.mj_jacSite(m, d, jacp, jacr, emb.eef_site)
    jac = np.concatenate([jacp, jacr])[:, emb.dof_adr]
    cur = d.site_xmat[emb.eef_site].reshape(3, 3)
    err = np.concatenate([target_pos - d.site_xpos[emb.eef_site],
                          0.5 * np.sum(np.cross(cur.T, np.asarray(target_mat).T), axis=0)])
    if rest_weight > 0:
      w = np.sqrt(rest_weight)
      jac = np.concatenate([jac, w * np.eye(len(q))])
      err = np.concatenate([err, w * (np.asarray(q_rest) - q)])
    dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-3 * np.eye(len(err)), err)
    q = np.clip(q + dq * min(1.0, 0.2 / (np.abs(dq).max() + 1e-9)), lo, hi)
  return q


def site_position(m: mujoco.MjModel, emb: Embodiment, q, data=None) -> np.ndarray:
  """Forward kinematics (host): the end-effector site position (3,) at joint positions q of `emb`'s joints."""
  d = mujoco.MjData(m) if data is None else data
  d.qpos[emb.qpos_adr] = q
  mujoco.mj_kinematics(m, d)
  return d.site_xpos[emb.eef_site].copy()


def solve_home(m: mujoco.MjModel, emb: Embodiment, target_pos, target_mat, q_init, iters=200):
  """Host-side IK (build time only) for the embodiment's home configuration."""
  q = solve_ik(m, emb, target_pos, target_mat, q_init, iters)
  residual = np.linalg.norm(site_position(m, emb, q) - np.asarray(target_pos))
  if residual > 5e-3:
    raise RuntimeError(f"{emb.name}: home pose unreachable (residual {residual:.3f} m)")
  return q
