"""Rotation helpers shared by the sim, the experts and the action space (jit-safe; the 6D helpers also
take numpy arrays and then stay in numpy).

Conventions: quaternions are MuJoCo's [w, x, y, z]; rotation matrices act on column vectors;
the 6D rotation is the first two *columns* of the matrix (Zhou et al. 2019), flattened as
[c0x, c0y, c0z, c1x, c1y, c1z].
"""

import jax.numpy as jnp
import numpy as np


def _xp(x):
  """numpy for numpy inputs (host code, e.g. grain workers), jax.numpy otherwise (jitted code)."""
  return np if isinstance(x, np.ndarray) else jnp


def rot6d_from_mat(mat):
  """(..., 3, 3) -> (..., 6): first two columns."""
  return _xp(mat).concatenate([mat[..., :, 0], mat[..., :, 1]], axis=-1)


def mat_from_rot6d(r6):
  """(..., 6) -> (..., 3, 3) by Gram-Schmidt; exact inverse of `rot6d_from_mat` on rotations."""
  xp = _xp(r6)
  a, b = r6[..., :3], r6[..., 3:]
  c0 = a / xp.linalg.norm(a, axis=-1, keepdims=True)
  b = b - xp.sum(c0 * b, axis=-1, keepdims=True) * c0
  c1 = b / xp.linalg.norm(b, axis=-1, keepdims=True)
  c2 = xp.cross(c0, c1)
  return xp.stack([c0, c1, c2], axis=-1)


def mat_from_yaw(yaw):
  """Rotation about world z. (...,) -> (..., 3, 3)."""
  c, s = jnp.cos(yaw), jnp.sin(yaw)
  z, o = jnp.zeros_like(yaw), jnp.ones_like(yaw)
  return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1), jnp.stack([z, z, o], -1)], -2)


def quat_from_mat(mat):
  """(3, 3) -> (4,) [w, x, y, z], robust branch-free form (Shepperd's method via argmax)."""
  m = mat
  tr = m[0, 0] + m[1, 1] + m[2, 2]
  cands = jnp.stack([
      jnp.array([1.0 + tr, m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]),
      jnp.array([m[2, 1] - m[1, 2], 1.0 + m[0, 0] - m[1, 1] - m[2, 2], m[0, 1] + m[1, 0], m[0, 2] + m[2, 0]]),
      jnp.array([m[0, 2] - m[2, 0], m[0, 1] + m[1, 0], 1.0 - m[0, 0] + m[1, 1] - m[2, 2], m[1, 2] + m[2, 1]]),
      jnp.array([m[1, 0] - m[0, 1], m[0, 2] + m[2, 0], m[1, 2] + m[2, 1], 1.0 - m[0, 0] - m[1, 1] + m[2, 2]]),
  ])
  q = cands[jnp.argmax(jnp.array([tr, m[0, 0], m[1, 1], m[2, 2]]))]
  q = q / jnp.linalg.norm(q)
  return q * jnp.where(q[0] < 0, -1.0, 1.0)


def quat_from_euler_zyx(yaw, pitch, roll):
  """Intrinsic z-y-x (yaw, then pitch, then roll) -> [w, x, y, z]."""
  cy, sy = jnp.cos(yaw / 2), jnp.sin(yaw / 2)
  cp, sp = jnp.cos(pitch / 2), jnp.sin(pitch / 2)
  cr, sr = jnp.cos(roll / 2), jnp.sin(roll / 2)
  return jnp.stack([
      cr * cp * cy + sr * sp * sy,
      sr * cp * cy - cr * sp * sy,
      cr * sp * cy + sr * cp * sy,
      cr * cp * sy - sr * sp * cy,
  ], -1)


def orientation_error(target, current):
  """Axis-angle vector (world frame) rotating `current` onto `target` (both (3, 3)).

  Uses the small-angle-robust form 0.5 * sum_i c_i x t_i, which is exact in direction and
  monotone in angle up to 180 degrees: good enough for damped least squares IK.
  """
  return 0.5 * jnp.sum(jnp.cross(current.T, target.T), axis=0)


def wrap_angle(a):
  return (a + jnp.pi) % (2 * jnp.pi) - jnp.pi
