"""`gantry`: a Cartesian gantry (x, y, z slides and a yaw wrist) carrying the same parallel gripper.

A second robot morphology for cross-embodiment work: same end-effector semantics as `arm6`, very
different joint space. Native action (5): absolute x, y, z slide targets (m), yaw target (rad), and
the gripper command in [0, 1]. Proprio (5): the four joint positions and the gripper opening.
"""

import dataclasses

import jax.numpy as jnp
import mujoco
import numpy as np

from vam.sim import geometry
from vam.sim.embodiments import base

_JOINTS = ("x", "y", "z", "yaw")
_OPENING = 0.045
_CARRIAGE_HEIGHT = 0.42  # carriage above the table top; the gripper hangs below it


@dataclasses.dataclass
class Gantry(base.Embodiment):
  name = "gantry"
  kind = "robot"
  action_names = ("x", "y", "z", "yaw", "gripper")
  down_frame = np.diag([1.0, -1.0, -1.0])

  def build(self, spec, mount):
    p = self.p
    top = np.array(mount) + np.array([0.3, 0.0, _CARRIAGE_HEIGHT])
    rail = spec.worldbody.add_body(name=p("rail"), pos=list(top))
    rail.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.35, 0.015, 0.015], pos=[0, 0, 0.1],
                  rgba=base.ROBOT_DARK, contype=0, conaffinity=0)
    body = rail
    axes = {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1]}
    ranges = {"x": [-0.32, 0.32], "y": [-0.35, 0.35], "z": [-0.38, 0.0]}
    for j in ("x", "y", "z"):
      body = body.add_body(name=p(j), gravcomp=1.0)
      body.add_joint(name=p(j), type=mujoco.mjtJoint.mjJNT_SLIDE, axis=axes[j], range=ranges[j],
                     damping=300.0, armature=0.1)
      body.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.01, 0, 0], mass=0.3, group=3,
                    contype=0, conaffinity=0)  # carriage mass (not rendered)
    body.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.03, 0.03, 0.02], pos=[0, 0, 0.1],
                  rgba=base.ROBOT_GREY, mass=0.5, contype=0, conaffinity=0)
    body.add_geom(type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=[0, 0, 0.1, 0, 0, 0.02], size=[0.015, 0, 0],
                  rgba=base.ROBOT_GREY, mass=0.2, contype=0, conaffinity=0)
    wrist = body.add_body(name=p("yaw"), gravcomp=1.0, quat=[0, 1, 0, 0])  # gripper points down
    wrist.add_joint(name=p("yaw"), type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 0, 1], range=[-3.1, 3.1],
                    damping=8.0, armature=0.02)
    gripper = wrist.add_body(name=p("gripper"), gravcomp=1.0)
    base.add_parallel_gripper(gripper, p(""), _OPENING)
    for j in ("x", "y", "z"):
      base.add_position_actuator(spec, p(j), p(j), ranges[j], kp=3000.0, force=300.0)
    base.add_position_actuator(spec, p("yaw"), p("yaw"), [-3.1, 3.1], kp=60.0, force=20.0)
    base.add_gripper_actuators(spec, p(""), _OPENING)

  def joint_names(self):
    return [self.p(j) for j in _JOINTS] + [self.p("finger_l"), self.p("finger_r")]

  def actuator_names(self):
    return self.joint_names()

  def home_qpos(self, m):
    # Home: gripper 20 cm lower than the carriage, centred under it, open.
    return np.array([0.0, 0.0, -0.15, 0.0, _OPENING, _OPENING])

  def gripper_opening(self, d):
    return (d.qpos[self.qpos_adr[4]] + d.qpos[self.qpos_adr[5]]) / (2 * _OPENING)

  def proprio(self, d):
    return jnp.concatenate([d.qpos[self.qpos_adr[:4]], self.gripper_opening(d)[None]])

  def ctrl_from_action(self, action):
    finger = _OPENING * (1.0 - jnp.clip(action[4], 0.0, 1.0))
    return jnp.clip(jnp.concatenate([action[:4], jnp.stack([finger, finger])]), self.ctrl_low, self.ctrl_high)

  def track_pose(self, d, pos, mat, close, rot_gain=1.0):
    """Differential IK with the same damped-least-squares step as the arm (the Jacobian is constant here)."""
    cur_pos, cur_mat = self.eef_pose(d)
    perr = pos - cur_pos
    perr = perr * jnp.minimum(1.0, 0.06 / (jnp.linalg.norm(perr) + 1e-9))
    err = jnp.concatenate([perr, rot_gain * geometry.orientation_error(mat, cur_mat)])
    jac = base.site_jacobian(d, self.jnt_ids[:4], self.jnt_type[:4], cur_pos)
    dq = base.dls_ik_step(jac, err, damping=0.02)
    return jnp.concatenate([d.qpos[self.qpos_adr[:4]] + dq, jnp.atleast_1d(close)])
