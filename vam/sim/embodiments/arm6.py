"""`arm6`: a 6-DoF arm (yaw, shoulder, elbow, forearm roll, wrist pitch, tool roll) with a parallel gripper.

Native action (7): six absolute joint-position targets (rad) and a gripper command in [0, 1]
(0 open, 1 closed). Proprio (7): the six joint angles and the gripper opening. End-effector frame:
the `arm6/eef` site between the fingertips, +z along the fingers.
"""

import dataclasses

import jax.numpy as jnp
import mujoco
import numpy as np

from vam.sim import geometry
from vam.sim.embodiments import base

_JOINTS = ("yaw", "shoulder", "elbow", "roll", "wrist", "tool")
_OPENING = 0.045


@dataclasses.dataclass
class Arm6(base.Embodiment):
  name = "arm6"
  kind = "robot"
  action_names = tuple(f"q_{j}" for j in _JOINTS) + ("gripper",)
  down_frame = np.diag([-1.0, 1.0, -1.0])  # tool +z points down, fingers close along world y at yaw 0

  def build(self, spec, mount):
    p = self.p
    b0 = spec.worldbody.add_body(name=p("base"), pos=list(mount))
    b0.add_geom(type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.06, 0.04, 0], pos=[0, 0, 0.04],
                rgba=base.ROBOT_DARK)
    specs = [  # (body pos in parent, joint axis, range, geom fromto (in body), radius)
        ([0, 0, 0.08], [0, 0, 1], [-2.6, 2.6], [0, 0, 0, 0, 0, 0.06], 0.05),
        ([0, 0, 0.06], [0, 1, 0], [-1.8, 1.8], [0, 0, 0, 0, 0, 0.3], 0.035),
        ([0, 0, 0.3], [0, 1, 0], [-2.6, 2.6], [0, 0, 0, 0, 0, 0.26], 0.03),
        ([0, 0, 0.26], [0, 0, 1], [-3.0, 3.0], [0, 0, 0, 0, 0, 0.04], 0.028),
        ([0, 0, 0.04], [0, 1, 0], [-2.2, 2.2], [0, 0, 0, 0, 0, 0.04], 0.025),
        ([0, 0, 0.04], [0, 0, 1], [-3.1, 3.1], [0, 0, 0, 0, 0, 0.01], 0.03),
    ]
    body = b0
    for jname, (pos, axis, rng, fromto, radius) in zip(_JOINTS, specs):
      body = body.add_body(name=p(jname), pos=pos, gravcomp=1.0)
      body.add_joint(name=p(jname), type=mujoco.mjtJoint.mjJNT_HINGE, axis=axis, range=rng,
                     damping=40.0, armature=0.05)
      body.add_geom(type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=fromto, size=[radius, 0, 0],
                    rgba=base.ROBOT_GREY, mass=0.5, contype=0, conaffinity=0)
    hand = body.add_body(name=p("gripper"), pos=[0, 0, 0.02], gravcomp=1.0)
    base.add_parallel_gripper(hand, p(""), _OPENING)
    for j, (_, _, rng, _, _) in zip(_JOINTS, specs):
      base.add_position_actuator(spec, p(j), p(j), rng, kp=400.0, force=80.0)
    base.add_gripper_actuators(spec, p(""), _OPENING)

  def joint_names(self):
    return [self.p(j) for j in _JOINTS] + [self.p("finger_l"), self.p("finger_r")]

  def actuator_names(self):
    return self.joint_names()

  def home_qpos(self, m):
    mount = m.body_pos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, self.p("base"))]
    target = mount + np.array([0.3, 0.0, 0.25])
    # IK only over the six arm joints: bind a temporary view with the arm's indices.
    q = base.solve_home(m, self.chain(6), target, self.down_frame, [0, 0.5, 1.6, 0, 1.0, 0])
    return np.concatenate([q, [_OPENING, _OPENING]])

  def gripper_opening(self, d):
    return (d.qpos[self.qpos_adr[6]] + d.qpos[self.qpos_adr[7]]) / (2 * _OPENING)

  def proprio(self, d):
    return jnp.concatenate([d.qpos[self.qpos_adr[:6]], self.gripper_opening(d)[None]])

  def ctrl_from_action(self, action):
    finger = _OPENING * (1.0 - jnp.clip(action[6], 0.0, 1.0))
    ctrl = jnp.concatenate([action[:6], jnp.stack([finger, finger])])
    return jnp.clip(ctrl, self.ctrl_low, self.ctrl_high)

  # The expert corrects half its orientation error per step (smooth turns); commanded poses are one step away
  # and tracked in full.
  expert_rot_gain = 0.5

  def track_pose(self, d, pos, mat, close, rot_gain=1.0):
    """One damped-least-squares step of the arm towards the end-effector pose (pos (3,), mat (3, 3)); the
    Cartesian step is clipped to 6 cm (the differential-IK controller of the experts and of `eef` control)."""
    cur_pos, cur_mat = self.eef_pose(d)
    perr = pos - cur_pos
    perr = perr * jnp.minimum(1.0, 0.06 / (jnp.linalg.norm(perr) + 1e-9))
    err = jnp.concatenate([perr, rot_gain * geometry.orientation_error(mat, cur_mat)])
    jac = base.site_jacobian(d, self.jnt_ids[:6], self.jnt_type[:6], cur_pos)
    q = d.qpos[self.qpos_adr[:6]]
    dq = base.dls_ik_step(jac, err, damping=0.05)
    return jnp.concatenate([q + dq, jnp.atleast_1d(close)])
