"""Batched expert rollouts that record what a dataset episode needs, per 10 Hz control step.

`rollout` runs jitted `lax.scan`s over control steps for a whole batch (all tasks of an embodiment
mixed): render -> expert action -> env step, a segment at a time until every episode is done. `collect` runs
it and cuts the batch into episodes (numpy), each ending a few steps after first success or at its task's horizon.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vam.sim import experts, palette, scene, tasks

HOLD_AFTER_SUCCESS = 3  # steps kept after the first success (the scene settles; the video shows it)


@dataclasses.dataclass
class Episode:
  """One recorded episode (numpy, host side). Per-step arrays have a leading time axis T."""
  embodiment: str
  task: str
  mode: str
  split: str
  seed: int
  success: bool
  instruction: str
  steps: dict  # name -> (T, ...) array: images, state, action, eef, eef_target, gripper, success, [hand keypoints]
  metadata: dict  # colours, camera intrinsics/extrinsics, ...
  restarts: int = 0  # times the scripted expert started over (e.g. a pushed block slid off the pusher's line)

  @property
  def length(self) -> int:
    return len(self.steps["action"])


SEGMENT = 10  # control steps per compiled piece of a rollout: a batch stops early once every episode is done


@functools.partial(jax.jit, static_argnums=0)
def _start(env, keys, task_ids):
  return jax.vmap(env.reset)(keys, task_ids), jax.vmap(lambda _: experts.init())(task_ids)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _advance(env, carry, num_steps: int, render: bool, noise, rng):
  """`num_steps` expert control steps from `carry` = (state, expert state, step): (carry, per-step (T, B, ...)
  dict). `noise` (B,): std of the Gaussian noise added to the executed joint targets (rad or m, per episode);
  the recorded action stays the expert's own (DART: demonstrations that show how to recover)."""
  n = env.embodiment.action_dim - 1  # the gripper command is never perturbed

  def body(carry, _):
    state, es, t = carry
    out = dict(state.obs)
    if render:
      out["images"] = env.render(state)
    action, es_next = jax.vmap(functools.partial(experts.act, env))(state, es)
    out.update(action=action, success=state.success, reward=state.reward, overflow=env.contact_overflow(state),
               restart=es_next.phase < es.phase)  # the expert started the task over (a push went off line, ...)
    es = es_next
    eps = jax.random.normal(jax.random.fold_in(rng, t), action.shape) * noise[:, None]
    state = jax.vmap(env.step)(state, action + eps.at[:, n:].set(0.0))
    return (state, es, t + 1), out

  return jax.lax.scan(body, carry, None, length=num_steps)


def rollout(env, keys, task_ids, num_steps: int, render: bool = True, segment: int = SEGMENT,
            early_exit: bool = True, action_noise=0.0):
  """Runs the scripted expert for up to `num_steps` control steps on a batch of fresh episodes, `segment` steps
  per compiled call, and stops as soon as every episode is done (first success + HOLD_AFTER_SUCCESS steps, or
  its task's horizon): a batch of reaches costs a few segments, not the longest task's horizon.
  `early_exit=False` runs all `num_steps` (benchmarks of fixed length). `action_noise`: std (scalar or per
  episode (B,)) of noise on the executed joint targets; the recorded actions are the expert's.

  Args: keys (B, 2) uint32 reset keys; task_ids (B,) int32. B must equal env.config.num_envs when
  rendering. Returns (first_state, per-step dict of (T, B, ...) numpy arrays), T <= num_steps rounded up to
  a whole segment.
  """
  carry = _start(env, keys, jnp.asarray(task_ids)) + (jnp.zeros((), jnp.int32),)
  first = carry[0]
  noise = jnp.broadcast_to(jnp.asarray(action_noise, jnp.float32), (len(task_ids),))
  rng = jax.random.fold_in(keys[0], 1)
  horizons = np.minimum(np.asarray(jax.device_get(tasks.horizon(jnp.asarray(task_ids)))), num_steps)
  parts = []
  for start in range(0, num_steps, segment):
    carry, traj = _advance(env, carry, segment, render, noise, rng)
    parts.append(jax.device_get(traj))
    steps = start + segment
    success = np.concatenate([p["success"] for p in parts])  # (T, B)
    ever = success.any(axis=0)
    first_hit = np.where(ever, success.argmax(axis=0), steps)
    if early_exit and np.all((ever & (first_hit + HOLD_AFTER_SUCCESS <= steps)) | (horizons <= steps)):
      break
  return first, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def episode_length(success: np.ndarray, horizon: int) -> int:
  """First success + HOLD_AFTER_SUCCESS steps, or the horizon when the task never succeeded."""
  hits = np.flatnonzero(success[:horizon])
  return int(min(horizon, hits[0] + HOLD_AFTER_SUCCESS)) if len(hits) else horizon


def commanded_eef(env, actions: np.ndarray) -> np.ndarray:
  """The end-effector poses (..., 9) that native actions (..., A) command: forward kinematics (native MuJoCo,
  host side) of their joint targets. A position-servoed arm lags its targets, so these differ from the poses
  reached a step later; they are what an end-effector controller must be told to reproduce the action."""
  import mujoco  # pylint: disable=g-import-not-at-top
  emb, m = env.embodiment, env.mj_model
  n = emb.action_dim if emb.kind == "human" else emb.action_dim - 1  # joint targets (the gripper follows)
  d = mujoco.MjData(m)
  flat = actions.reshape(-1, actions.shape[-1])
  out = np.zeros((len(flat), 9), np.float32)
  for i, a in enumerate(flat):
    d.qpos[emb.qpos_adr[:n]] = a[:n]
    mujoco.mj_kinematics(m, d)
    mat = d.site_xmat[emb.eef_site].reshape(3, 3)
    out[i] = np.concatenate([d.site_xpos[emb.eef_site], mat[:, 0], mat[:, 1]])
  return out.reshape(actions.shape[:-1] + (9,))


def camera_metadata(env) -> dict:
  """Intrinsics (fovy, resolution, focal length in pixels) of each recorded camera."""
  m = env.mj_model
  meta = {}
  w, h = env.config.image_size
  for cam in env.config.cameras:
    i = m.camera(cam).id
    fovy = float(m.cam_fovy[i])
    f = 0.5 * h / np.tan(np.deg2rad(fovy) / 2)
    meta[cam] = dict(fovy_deg=fovy, width=w, height=h, fx=f, fy=f, cx=w / 2, cy=h / 2)
  return meta


def collect(env, task_names, seeds, render=True, num_steps=None, action_noise=0.0) -> list[Episode]:
  """Rolls out one episode per (task, seed) pair as one batch (len must equal env.config.num_envs).

  `num_steps` defaults to the longest horizon in the batch; pass a fixed value to reuse one program.
  """
  if len(task_names) != len(seeds):
    raise ValueError("collect: task_names and seeds must have the same length")
  task_ids = np.array([tasks.task_id(t) for t in task_names], np.int32)
  keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
  num_steps = num_steps or max(tasks.HORIZON[t] for t in task_names)
  first, traj = rollout(env, keys, task_ids, num_steps, render, action_noise=action_noise)
  traj["eef_target"] = commanded_eef(env, np.asarray(traj["action"]))
  if np.any(traj.pop("overflow")):
    raise RuntimeError(f"{env.config.embodiment}: MJX warp contact buffers overflowed (contacts dropped); raise "
                       "EnvConfig.contacts_per_env / constraints_per_env")
  ep = jax.device_get(first.episode)
  cam_meta = camera_metadata(env)
  cam_xpos, cam_xmat = np.asarray(first.data.cam_xpos), np.asarray(first.data.cam_xmat)
  episodes = []
  for b, (task, seed) in enumerate(zip(task_names, seeds)):
    steps = {k: v[:, b] for k, v in traj.items()}
    length = episode_length(steps["success"], tasks.HORIZON[task])
    steps = {k: v[:length] for k, v in steps.items()}
    restarts = int(steps.pop("restart").sum())
    obj, obj2 = int(ep.obj[b]), int(ep.obj2[b])
    text, names = instruction(task, seed, ep, b)
    cam_pose = camera_extrinsics(env, cam_xpos[b], cam_xmat[b])
    meta = dict(object=scene.OBJECTS[obj][0], object2=scene.OBJECTS[obj2][0], table_z=float(ep.table_z[b]),
                colours=names, cameras={c: {**cam_meta[c], **cam_pose[c]} for c in cam_meta})
    episodes.append(Episode(embodiment=env.config.embodiment, task=task, mode=env.config.mode,
                            split=env.config.split, seed=int(seed), success=bool(steps["success"].any()),
                            instruction=text, steps=steps, metadata=meta, restarts=restarts))
  return episodes


def instruction(task: str, seed: int, episode, b: int) -> tuple[str, dict]:
  """The instruction of batch element `b` of a (host) `env.Episode` batch, and the colour names it uses.

  Seeded by the episode seed, so datasets and closed-loop evaluation phrase the same episode alike."""
  colour = [palette.NAMES[c] for c in np.asarray(episode.colour[b])]
  obj, obj2 = int(episode.obj[b]), int(episode.obj2[b])
  names = dict(obj=colour[obj], obj2=colour[obj2], shape=tasks.SHAPE_NAMES[obj], bowl=colour[scene.N_OBJECTS],
               zone=colour[scene.N_OBJECTS + 1], target=colour[scene.N_OBJECTS + 2])
  return tasks.instruction(task, np.random.default_rng(int(seed)), names), names


def camera_extrinsics(env, cam_xpos, cam_xmat) -> dict:
  """World pose of each recorded camera: position (3,) and rotation matrix (3, 3, camera-to-world)."""
  out = {}
  for cam in env.config.cameras:
    i = env.mj_model.camera(cam).id
    out[cam] = dict(position=cam_xpos[i].tolist(), rotation=cam_xmat[i].reshape(3, 3).tolist())
  return out
