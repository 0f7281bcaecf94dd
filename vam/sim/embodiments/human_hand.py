"""`human_hand`: a floating right hand (6-DoF wrist) with five articulated fingers, skin-coloured.

The wrist frame is palm-down: +x along the fingers, +y towards the thumb, +z out of the back of the
hand. Native action (17): wrist targets (x, y, z slides in m from the mount; yaw, pitch, roll in rad)
and eleven finger-joint targets (thumb abduction/MCP/IP, then MCP and PIP flexion of the index,
middle, ring and little fingers). Proprio (17): the same joints' positions.

Sites: `wrist`, `thumb_knuckle` and the five fingertips `tip_{thumb,index,middle,ring,little}`; the
24-D human action of METHOD.md (wrist position, wrist 6D rotation, five fingertip positions) is
`keypoints(d)`.
"""

import dataclasses

import jax.numpy as jnp
import mujoco
import numpy as np

from vam.sim import geometry
from vam.sim.embodiments import base

_WRIST = ("x", "y", "z", "yaw", "pitch", "roll")
_FINGERS = ("index", "middle", "ring", "little")
_FINGER_Y = (0.027, 0.009, -0.009, -0.027)
_FINGER_LEN = ((0.042, 0.03), (0.045, 0.032), (0.042, 0.03), (0.036, 0.026))
TIPS = ("thumb",) + _FINGERS
# Finger-joint targets (thumb abd, mcp, ip, then mcp/pip per finger): open hand and closed grasp.
# Open: fingers forward above a block, thumb swung back (its tip stays above the table at grasp height).
# Closed: a side pinch -- the fingers hang straight down as a wall on the block's far face and the thumb
# presses its near face, so nothing hooks under the block (it can be set down and let go cleanly).
_OPEN = np.array([0.0, -0.8, 0.0] + [0.15, 0.1] * 4)
_CLOSED = np.array([-0.2, 0.45, 0.0] + [1.45, 0.3] * 4)
_THUMB = np.arange(11) < 3


@dataclasses.dataclass
class HumanHand(base.Embodiment):
  name = "human_hand"
  kind = "human"
  action_names = tuple(f"wrist_{j}" for j in _WRIST) + ("thumb_abd", "thumb_mcp", "thumb_ip") + tuple(
      f"{f}_{j}" for f in _FINGERS for j in ("mcp", "pip"))
  down_frame = np.eye(3)
  # Point between the closed thumb and finger wall, low enough that the curled fingertips clear the
  # table: where a grasped block's centre sits.
  grasp_offset = np.array([0.073, 0.0, -0.065])

  def build(self, spec, mount):
    p = self.p
    self._mount = np.array(mount, float)
    root = spec.worldbody.add_body(name=p("root"), pos=list(mount))
    body = root
    axes = {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1], "yaw": [0, 0, 1], "pitch": [0, 1, 0],
            "roll": [1, 0, 0]}
    for j in _WRIST:
      slide = j in ("x", "y", "z")
      body = body.add_body(name=p("w_" + j), gravcomp=1.0)
      body.add_joint(name=p(j), type=mujoco.mjtJoint.mjJNT_SLIDE if slide else mujoco.mjtJoint.mjJNT_HINGE,
                     axis=axes[j], range=[-0.6, 0.6] if slide else [-3.1, 3.1],
                     damping=200.0 if slide else 8.0, armature=0.05 if slide else 0.01)
      body.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.01, 0, 0], mass=0.05, rgba=[0, 0, 0, 0],
                    contype=0, conaffinity=0, group=3)
    palm = body
    palm.add_site(name=p("wrist"), size=[0.006] * 3, rgba=[1, 0, 0, 0])
    palm.add_site(name=p("eef"), size=[0.006] * 3, rgba=[1, 0, 0, 0])
    palm.add_geom(name=p("palm"), type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.045, 0.04, 0.012], pos=[0.05, 0, 0],
                  rgba=base.SKIN, mass=0.3, friction=[1.5, 0.02, 0.001], condim=4)
    palm.add_geom(type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=[-0.06, 0, 0, 0.0, 0, 0], size=[0.022, 0, 0],
                  rgba=base.SKIN, mass=0.1, contype=0, conaffinity=0)  # forearm stub (visual)
    # Thumb: hangs below the rear of the palm, flexes forward towards the fingers.
    tb = palm.add_body(name=p("thumb_base"), pos=[0.022, 0.012, -0.014], gravcomp=1.0)
    tb.add_joint(name=p("thumb_abd"), type=mujoco.mjtJoint.mjJNT_HINGE, axis=[1, 0, 0], range=[-0.5, 0.5],
                 damping=0.3, armature=0.001)
    tb.add_joint(name=p("thumb_mcp"), type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, -1, 0], range=[-0.8, 1.2],
                 damping=0.3, armature=0.001)
    tb.add_site(name=p("thumb_knuckle"), size=[0.006] * 3, rgba=[1, 0, 0, 0])
    self._phalanx(tb, p("thumb_prox"), [0, 0, -0.036], 0.011)
    td = tb.add_body(name=p("thumb_dist"), pos=[0, 0, -0.036], gravcomp=1.0)
    td.add_joint(name=p("thumb_ip"), type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, -1, 0], range=[0.0, 1.2],
                 damping=0.3, armature=0.001)
    self._phalanx(td, p("thumb_dist"), [0, 0, -0.028], 0.01)
    td.add_site(name=p("tip_thumb"), pos=[0, 0, -0.036], size=[0.005] * 3, rgba=[1, 0, 0, 0])
    for f, y, (l1, l2) in zip(_FINGERS, _FINGER_Y, _FINGER_LEN):
      prox = palm.add_body(name=p(f + "_prox"), pos=[0.095, y, 0], gravcomp=1.0)
      prox.add_joint(name=p(f + "_mcp"), type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 1, 0], range=[-0.2, 1.6],
                     damping=0.3, armature=0.001)
      self._phalanx(prox, p(f + "_prox"), [l1, 0, 0], 0.0085)
      dist = prox.add_body(name=p(f + "_dist"), pos=[l1, 0, 0], gravcomp=1.0)
      dist.add_joint(name=p(f + "_pip"), type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 1, 0], range=[0.0, 1.7],
                     damping=0.3, armature=0.001)
      self._phalanx(dist, p(f + "_dist"), [l2, 0, 0], 0.0078)
      dist.add_site(name=p("tip_" + f), pos=[l2 + 0.007, 0, 0], size=[0.005] * 3, rgba=[1, 0, 0, 0])
    for j in _WRIST:
      slide = j in ("x", "y", "z")
      base.add_position_actuator(spec, p(j), p(j), [-0.6, 0.6] if slide else [-3.1, 3.1],
                                 kp=2500.0 if slide else 60.0, force=300.0 if slide else 30.0)
    for j in self.joint_names()[6:]:
      base.add_position_actuator(spec, j, j, [-1.0, 1.8], kp=4.0, force=1.2)

  @staticmethod
  def _phalanx(body, name, end, radius):
    body.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=[0, 0, 0] + list(end),
                  size=[radius, 0, 0], rgba=base.SKIN, mass=0.01, friction=[1.5, 0.02, 0.001], condim=4)

  def joint_names(self):
    fingers = ["thumb_abd", "thumb_mcp", "thumb_ip"] + [f"{f}_{j}" for f in _FINGERS for j in ("mcp", "pip")]
    return [self.p(j) for j in _WRIST + tuple(fingers)]

  def actuator_names(self):
    return self.joint_names()

  def bind(self, m):
    super().bind(m)
    site = lambda s: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, self.p(s))
    self.wrist_site = site("wrist")
    self.knuckle_site = site("thumb_knuckle")
    self.tip_sites = np.array([site("tip_" + t) for t in TIPS])
    self.mount = np.array(m.body_pos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, self.p("root"))])

  def home_qpos(self, m):
    return np.concatenate([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], _OPEN])

  def gripper_opening(self, d):
    """Thumb-index fingertip distance mapped to [0, 1] (0.02 m -> 0, 0.12 m -> 1)."""
    tips = d.site_xpos[self.tip_sites]
    return jnp.clip((jnp.linalg.norm(tips[0] - tips[1]) - 0.02) / 0.10, 0.0, 1.0)

  def proprio(self, d):
    return d.qpos[self.qpos_adr]

  def keypoints(self, d):
    """The 24-D human hand action: wrist position (3), wrist 6D rotation (6), fingertips (5 x 3)."""
    mat = d.site_xmat[self.wrist_site].reshape(3, 3)
    return jnp.concatenate([d.site_xpos[self.wrist_site], geometry.rot6d_from_mat(mat),
                            d.site_xpos[self.tip_sites].reshape(-1)])

  def thumb_knuckle(self, d):
    return d.site_xpos[self.knuckle_site]

  def ctrl_from_action(self, action):
    return jnp.clip(action, self.ctrl_low, self.ctrl_high)

  def expert_action(self, d, grasp_pos, yaw, close):
    """Direct wrist and finger targets: the wrist pose that puts the grasp point at `grasp_pos`.

    `close` in [0, 0.5] curls the fingers, (0.5, 1] then brings in the thumb: a grasp sets the finger
    wall before the thumb squeezes against it, and 0.5 releases the thumb's squeeze before the fingers.
    """
    rot = geometry.mat_from_yaw(yaw)
    wrist_target = grasp_pos - rot @ jnp.asarray(self.grasp_offset, jnp.float32)
    pos, _ = self.eef_pose(d)
    step = wrist_target - pos
    step = step * jnp.minimum(1.0, 0.06 / (jnp.linalg.norm(step) + 1e-9))
    slides = (pos + step) - jnp.asarray(self.mount, jnp.float32)
    amount = jnp.where(jnp.asarray(_THUMB), jnp.clip(2 * close - 1, 0, 1), jnp.clip(2 * close, 0, 1))
    fingers = jnp.asarray(_OPEN, jnp.float32) + amount * jnp.asarray(_CLOSED - _OPEN, jnp.float32)
    return jnp.concatenate([slides, jnp.stack([yaw, 0.0 * yaw, 0.0 * yaw]), fingers])
