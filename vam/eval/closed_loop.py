"""Closed-loop rollouts: the agent and the env step jitted together, one `lax.scan` per batch of episodes.

Per plan: the agent reads the last H_o rendered frames (the first frame repeated before the start, as
training windows clamp them), proprio and the instruction, and returns a chunk of commands; the env executes
`replan_every` of them (end-effector commands through the robot's differential-IK controller, re-linearised
at every step), rendering after each step. No Python runs per env step.

Cells are (embodiment, task, mode, split). Episodes of one embodiment share one stepping env (physics and
the renderer do not depend on mode or split), so one compiled rollout serves every cell of a robot;
resets come from an env of the cell's mode and split. Seeds are fixed and disjoint from the datasets'.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vam.input import windows
from vam.sim import env as env_lib
from vam.sim import rollout as sim_rollout
from vam.sim import tasks

EVAL_SEED_BASE = 3_000_000_000  # datasets use seeds below 10^8 (vam/data/rlds.py)


def trace_of(env, state) -> dict:
  """What a trace keeps of each step, batched (B, ...): the grasp point (world, m) and the privileged task state
  (vam/sim/env.py `privileged_state`: target, object and second object positions, task one-hot)."""
  return dict(grasp=jax.vmap(env.embodiment.grasp_point)(state.data), privileged=state.obs["privileged"])


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), static_argnames=("trace",))
def rollout(env, agent, num_steps: int, record: bool, params, state, instruction, rng, trace: bool = False):
  """Runs `agent` for `num_steps` control steps from the reset batch `state` (B = env.config.num_envs).

  Returns (success (T, B) bool after each step, frames (T + 1, B, H, W, 3) uint8 or None, final state,
  trace or None): with `trace`, `trace_of` the reset state and of every step, leaves (T + 1, B, ...).
  """
  k = agent.replan_every
  n_plans = math.ceil(num_steps / k)
  first = env.render(state)[:, 0]
  # Every frame since the oldest the agent sees; it is shown every `frame_stride`-th, ending at the newest.
  stride = agent.frame_stride
  history = jnp.repeat(first[:, None], (agent.context_frames - 1) * stride + 1, axis=1)

  def act_and_step(carry, commands):
    state, history = carry
    action = jax.vmap(lambda d, c: env.embodiment.command_action(d, c, agent.control))(state.data, commands)
    state = jax.vmap(env.step)(state, action)
    frame = env.render(state)[:, 0]
    history = jnp.concatenate([history[:, 1:], frame[:, None]], axis=1)
    return (state, history), (state.success, frame if record else None, trace_of(env, state) if trace else None)

  def plan_and_execute(carry, i):
    state, history, agent_carry = carry
    agent_carry, chunk = agent.plan(params, agent_carry, state, history[:, ::stride], instruction,
                                    jax.random.fold_in(rng, i))
    (state, history), out = jax.lax.scan(act_and_step, (state, history), jnp.swapaxes(chunk[:, :k], 0, 1))
    return (state, history, agent_carry), out

  (final, _, _), (success, frames, steps) = jax.lax.scan(plan_and_execute, (state, history, agent.init(state)),
                                                         jnp.arange(n_plans))
  flat = lambda x: x.reshape((n_plans * k,) + x.shape[2:])[:num_steps]
  success = flat(success)
  if record:
    frames = jnp.concatenate([first[None], flat(frames)], axis=0)
  if trace:
    steps = jax.tree.map(lambda r, x: jnp.concatenate([r[None], flat(x)], axis=0), trace_of(env, state), steps)
  return success, frames, final, steps


def cell_seeds(seed: int, embodiment_index: int, task: str, mode: str, split: str, episodes: int) -> np.ndarray:
  """Fixed, disjoint seeds per cell: the same cell always gets the same worlds."""
  cell = ((embodiment_index * len(tasks.TASKS) + tasks.task_id(task)) * len(tasks.MODES) +
          tasks.MODES.index(mode)) * len(tasks.SPLITS) + tasks.SPLITS.index(split)
  return EVAL_SEED_BASE + seed * 1_000_000 + cell * 1_000 + np.arange(episodes)


class Runner:
  """Evaluates agents of one embodiment on cells; envs and compiled programs are reused across calls."""

  def __init__(self, embodiment: str, num_envs: int, image_size: int, camera: str, backend: str = "warp",
               physics: str = "auto", push_layout: str = "adjacent"):
    self.embodiment, self.num_envs = embodiment, num_envs
    make = lambda mode, split: env_lib.Env(env_lib.EnvConfig(
        embodiment=embodiment, mode=mode, split=split, backend=backend, physics=physics, push_layout=push_layout,
        image_size=(image_size, image_size),
        cameras=(camera,), num_envs=num_envs))
    self._make = make
    self.env = make("easy", "train")  # steps and renders every cell's episodes
    self._reset_envs = {("easy", "train"): self.env}

  def reset(self, mode, split, keys, task_ids):
    """A reset batch of `num_envs` episodes of (mode, split)."""
    env = self._reset_envs.get((mode, split))
    if env is None:
      env = self._reset_envs[(mode, split)] = self._make(mode, split)
    return _batched_reset(env, keys, task_ids)

  def run(self, agent, params, cells, episodes: int, seed: int, embodiment_index: int, record: bool = False,
          rng_seed: int = 0) -> list[dict]:
    """cells: [(task, mode, split)]. Returns one dict per cell: success flags, steps to success, seeds,
    instructions, and (if `record`) frames (T + 1, H, W, 3) per episode."""
    jobs = []  # (cell index, task, mode, split, seed)
    for c, (task, mode, split) in enumerate(cells):
      for s in cell_seeds(seed, embodiment_index, task, mode, split, episodes):
        jobs.append((c, task, mode, split, int(s)))
    results = [dict(task=t, mode=m, split=s, seeds=[], success=[], steps_to_success=[], instructions=[], frames=[])
               for t, m, s in cells]
    horizon = max(tasks.HORIZON[t] for t, _, _ in cells)  # one program for every batch
    # One (mode, split) at a time: resets come from that env, and MJX Warp data cannot be sliced or
    # concatenated across batches (its contact buffers are shared by the batch), so each batch is one reset.
    groups = {}
    for job in jobs:
      groups.setdefault((job[2], job[3]), []).append(job)
    for (mode, split), group in groups.items():
      for start in range(0, len(group), self.num_envs):
        batch = group[start:start + self.num_envs]
        padded = batch + [batch[-1]] * (self.num_envs - len(batch))  # padding repeats the last episode
        keys = jnp.stack([jax.random.PRNGKey(j[4]) for j in padded])
        task_ids = jnp.asarray([tasks.task_id(j[1]) for j in padded], jnp.int32)
        state = self.reset(mode, split, keys, task_ids)
        episode = jax.device_get(state.episode)
        texts = [sim_rollout.instruction(j[1], j[4], episode, b)[0] for b, j in enumerate(padded)]
        instruction = jnp.asarray(np.stack([windows.encode_instruction(t) for t in texts]))
        success, frames, _, _ = rollout(self.env, agent, horizon, record, params, state, instruction,
                                        jax.random.PRNGKey(rng_seed + start))
        success = np.asarray(success)
        frames = None if frames is None else np.asarray(frames)
        for b, (c, task, _, _, s) in enumerate(batch):
          hits = np.flatnonzero(success[:tasks.HORIZON[task], b])
          r = results[c]
          r["seeds"].append(s)
          r["success"].append(bool(len(hits)))
          r["steps_to_success"].append(int(hits[0]) + 1 if len(hits) else None)
          r["instructions"].append(texts[b])
          if record:
            r["frames"].append(frames[:tasks.HORIZON[task] + 1, b])
    return results


@functools.partial(jax.jit, static_argnums=0)
def _batched_reset(env, keys, task_ids):
  return jax.vmap(env.reset)(keys, task_ids)
