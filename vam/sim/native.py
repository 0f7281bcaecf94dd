"""Native MuJoCo physics for the MJX env (`EnvConfig.physics='native'`): the CPU path.

On a CPU, MJX Warp runs its physics kernels single-threaded (~1k physics steps/s for this scene) while native
MuJoCo steps the same model ~30x faster on a thread pool (`mujoco.rollout`). With `physics='native'` the env
keeps its MJX data, its jnp experts, observations and the Warp batch renderer, and only the physics substeps of
a control step leave jit: a host callback rolls the whole batch forward natively, then MJX recomputes the
kinematics (body, geom and site poses) the rest of the pipeline reads. Everything else in the MJX data
(contacts, constraint forces, accelerations) is left stale: nothing downstream reads it.

The callback is a `jax.pure_callback` with `vmap_method='expand_dims'`, so `jax.vmap(env.step)` makes one
call per control step for the whole batch.
"""

import os

import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

# What a rollout starts from: everything that evolves or is set per episode (time, qpos, qvel, act, mocap poses,
# ...). The output state of `mujoco.rollout` has the same layout.
STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


def state_layout(m: mujoco.MjModel, spec: int = STATE_SPEC) -> dict[int, slice]:
  """Slices of each component bit of `spec` in a MuJoCo state vector (components are stored in bit order)."""
  layout, offset = {}, 0
  for i in range(int(mujoco.mjtState.mjNSTATE.value)):
    bit = 1 << i
    if spec & bit:
      size = mujoco.mj_stateSize(m, bit)
      layout[bit] = slice(offset, offset + size)
      offset += size
  if offset != mujoco.mj_stateSize(m, spec):
    raise RuntimeError(f"MuJoCo state layout mismatch: {offset} != mj_stateSize {mujoco.mj_stateSize(m, spec)}")
  return layout


class NativePhysics:
  """Steps a batch of worlds of one compiled model `substeps` physics steps at constant controls.

      qpos, qvel, act = physics(qpos (B, nq), qvel (B, nv), act (B, na), ctrl (B, nu), mocap_pos (B, nmocap, 3),
                                mocap_quat (B, nmocap, 4))

  numpy in, float32 numpy out. Threads: `nthread` (default: every core).
  """

  def __init__(self, m: mujoco.MjModel, substeps: int, nthread: int | None = None):
    self.m, self.substeps = m, substeps
    nthread = nthread or os.cpu_count() or 1
    self._datas = [mujoco.MjData(m) for _ in range(nthread)]
    self._pool = mj_rollout.Rollout(nthread=nthread)
    self._layout = state_layout(m)
    self._nstate = mujoco.mj_stateSize(m, STATE_SPEC)
    s = mujoco.mjtState
    self._fields = ((s.mjSTATE_QPOS, 0), (s.mjSTATE_QVEL, 1), (s.mjSTATE_ACT, 2), (s.mjSTATE_MOCAP_POS, 4),
                    (s.mjSTATE_MOCAP_QUAT, 5))

  def __call__(self, qpos, qvel, act, ctrl, mocap_pos, mocap_quat):
    arrays = [np.asarray(a, np.float64) for a in (qpos, qvel, act, ctrl, mocap_pos, mocap_quat)]
    b = arrays[0].shape[0]
    state = np.zeros((b, self._nstate))
    for bit, i in self._fields:
      if bit in self._layout:
        state[:, self._layout[bit]] = arrays[i].reshape(b, -1)
    control = np.repeat(arrays[3][:, None], self.substeps, axis=1)
    out, _ = self._pool.rollout(self.m, self._datas, state, control, control_spec=mujoco.mjtState.mjSTATE_CTRL,
                                nstep=self.substeps)
    last = out[:, -1]
    pick = lambda bit, like: (last[:, self._layout[bit]].reshape(like.shape) if bit in self._layout
                              else np.zeros(like.shape)).astype(np.float32)
    s = mujoco.mjtState
    return pick(s.mjSTATE_QPOS, arrays[0]), pick(s.mjSTATE_QVEL, arrays[1]), pick(s.mjSTATE_ACT, arrays[2])
