"""Data-generation throughput: MJX Warp (physics, batch renderer) vs native MuJoCo, in one run.

    python -m benchmarks.datagen --out benchmarks/results/datagen.json [--embodiment arm6] [--batch 128]
        [--steps 40] [--repeats 2] [--horizon 0]

Measures, for the same scene and expert trajectories:
  warp_physics      env control steps/s and physics steps/s of the jitted batched rollout, no rendering
  warp_rollout      the same with the batch renderer on (frames/s = recorded images/s)
  warp_render       the batch renderer alone (images/s)
  dataset_batch     recording a reach batch and a push batch as the dataset builder does (sorted by task):
                    stopping once every episode is done (segments of vam.sim.rollout.SEGMENT steps) vs running
                    the longest horizon (the previous builder), episodes per second each
  native_physics    mujoco.rollout (C, multi-threaded) replaying the same actions (physics steps/s)
  native_render     mujoco.Renderer (OpenGL via EGL/OSMesa when present) on the same states (images/s)
  native_env_*      the env with `physics='native'` (vam/sim/native.py: native substeps through a host callback,
                    MJX kinematics, the same Warp renderer and jnp experts): the expert rollout without and with
                    frames, and the dataset builder's batches as above
and writes ratios measured side by side, with the machine description: MJX Warp vs native physics, and the
dataset builder's episodes/s with native physics vs MJX Warp physics (what `physics='auto'` buys on a CPU).
"""

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from benchmarks import report
from vam.sim import env as env_lib, rollout, tasks


def _timed(fn, repeats):
  fn()  # warm-up / compile
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / repeats, out


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out", default="benchmarks/results/datagen.json")
  p.add_argument("--embodiment", default="arm6")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=40, help="control steps per rollout")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--horizon", type=int, default=0,
                 help="control steps of the dataset-builder batches (0: the longest of reach's and push's horizons)")
  args = p.parse_args()

  env = env_lib.Env(env_lib.EnvConfig(embodiment=args.embodiment, num_envs=args.batch, physics="mjx"))
  native_env = env_lib.Env(env_lib.EnvConfig(embodiment=args.embodiment, num_envs=args.batch, physics="native"))
  substeps = env.config.substeps
  task_ids = jnp.asarray(np.arange(args.batch) % len(tasks.TASKS), jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(0), args.batch)
  n_ctrl = args.batch * args.steps
  res = {}

  fixed = lambda render, e=env: rollout.rollout(e, keys, task_ids, args.steps, render, segment=args.steps,
                                                early_exit=False)
  t_phys, (first, traj) = _timed(lambda: fixed(False), args.repeats)
  res["warp_physics"] = dict(seconds=t_phys, control_steps_per_s=n_ctrl / t_phys, physics_steps_per_s=n_ctrl * substeps / t_phys)
  t_roll, _ = _timed(lambda: fixed(True), args.repeats)
  res["warp_rollout"] = dict(seconds=t_roll, frames_per_s=n_ctrl / t_roll, physics_steps_per_s=n_ctrl * substeps / t_roll)
  render = jax.jit(env.render)
  t_rend, _ = _timed(lambda: render(first), args.repeats * 3)
  res["warp_render"] = dict(seconds=t_rend, images_per_s=args.batch / t_rend)

  # Native MuJoCo on the same initial states, replaying the expert's actions (as controls).
  m = env.mj_model
  emb = env.embodiment
  data = mujoco.MjData(m)
  qpos0 = np.asarray(first.data.qpos, np.float64)
  mocap_pos, mocap_quat = np.asarray(first.data.mocap_pos), np.asarray(first.data.mocap_quat)
  actions = np.asarray(traj["action"])  # (T, B, A)
  ctrl = np.asarray(jax.vmap(jax.vmap(emb.ctrl_from_action))(jnp.asarray(actions)), np.float64)  # (T, B, nu)
  ctrl = np.repeat(ctrl.transpose(1, 0, 2), substeps, axis=1)  # (B, T*substeps, nu)
  state_size = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_FULLPHYSICS)
  init = np.zeros((args.batch, state_size))
  for b in range(args.batch):
    mujoco.mj_resetData(m, data)
    data.qpos[:], data.mocap_pos[:], data.mocap_quat[:] = qpos0[b], mocap_pos[b], mocap_quat[b]
    mujoco.mj_getState(m, data, init[b], mujoco.mjtState.mjSTATE_FULLPHYSICS)
  threads = os.cpu_count() or 1
  datas = [mujoco.MjData(m) for _ in range(threads)]
  with mj_rollout.Rollout(nthread=threads) as runner:
    t_nat, _ = _timed(lambda: runner.rollout(m, datas, init, ctrl), args.repeats)
  res["native_physics"] = dict(seconds=t_nat, threads=threads, physics_steps_per_s=n_ctrl * substeps / t_nat)

  try:
    renderer = mujoco.Renderer(m, env.config.image_size[1], env.config.image_size[0])
    cam = env.config.cameras[0]
    n_frames = min(args.batch, 64) * 8
    def native_render():
      for i in range(n_frames):
        b = i % args.batch
        data.qpos[:], data.mocap_pos[:], data.mocap_quat[:] = qpos0[b], mocap_pos[b], mocap_quat[b]
        mujoco.mj_forward(m, data)
        renderer.update_scene(data, camera=cam)
        renderer.render()
      return 0
    t_nr, _ = _timed(native_render, 1)
    res["native_render"] = dict(seconds=t_nr, images_per_s=n_frames / t_nr, gl=os.environ.get("MUJOCO_GL"))
  except Exception as e:  # no GL libraries on this machine: report it, keep the other numbers
    res["native_render"] = dict(error=f"{type(e).__name__}: {e}")

  t_nphys, _ = _timed(lambda: fixed(False, native_env), args.repeats)
  res["native_env_physics"] = dict(seconds=t_nphys, control_steps_per_s=n_ctrl / t_nphys,
                                   physics_steps_per_s=n_ctrl * substeps / t_nphys)
  t_nroll, _ = _timed(lambda: fixed(True, native_env), args.repeats)
  res["native_env_rollout"] = dict(seconds=t_nroll, frames_per_s=n_ctrl / t_nroll)

  # The dataset builder's batches: it sorts episodes by task, so a batch holds one task (reach, then push),
  # recorded with frames; the previous builder ran every batch to the longest horizon of the tasks built.
  horizon = args.horizon or max(tasks.HORIZON[t] for t in ("reach", "push"))
  for key, e in (("dataset_batch", env), ("native_env_dataset_batch", native_env)):
    t_full = t_early = 0.0
    steps = {}
    for name in ("reach", "push"):
      ids = jnp.full((args.batch,), tasks.TASKS.index(name), jnp.int32)
      t_full += _timed(lambda: rollout.rollout(e, keys, ids, horizon, True, early_exit=False), 1)[0]
      t, (_, rec) = _timed(lambda: rollout.rollout(e, keys, ids, horizon, True), 1)
      t_early += t
      steps[name] = int(len(rec["action"]))
    res[key] = dict(full_horizon_seconds=t_full, early_exit_seconds=t_early, early_exit_steps=steps,
                    horizon=horizon, episodes_per_s_full=2 * args.batch / t_full,
                    episodes_per_s_early=2 * args.batch / t_early)

  ratios = {"warp_vs_native_physics": res["warp_physics"]["physics_steps_per_s"] / res["native_physics"]["physics_steps_per_s"]}
  ratios["dataset_batch_early_exit_vs_full_horizon"] = (res["dataset_batch"]["full_horizon_seconds"] /
                                                        res["dataset_batch"]["early_exit_seconds"])
  ratios["dataset_batch_native_env_vs_mjx_physics"] = (res["native_env_dataset_batch"]["episodes_per_s_early"] /
                                                       res["dataset_batch"]["episodes_per_s_early"])
  ratios["expert_rollout_frames_native_env_vs_mjx_physics"] = (res["native_env_rollout"]["frames_per_s"] /
                                                               res["warp_rollout"]["frames_per_s"])
  if "images_per_s" in res["native_render"]:
    ratios["warp_vs_native_render"] = res["warp_render"]["images_per_s"] / res["native_render"]["images_per_s"]
  report.write(args.out, "datagen", dict(embodiment=args.embodiment, batch=args.batch, control_steps=args.steps,
                                         substeps=substeps, image_size=list(env.config.image_size),
                                         backend=env.config.backend, threads=os.cpu_count()), res, ratios)

if __name__ == "__main__":
  main()
