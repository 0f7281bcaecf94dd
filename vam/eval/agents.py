"""Closed-loop agents for the harness: the learned policy, and two references that validate the harness
(the scripted expert must score high, a random agent low).

An agent is pure and jit-able:
    carry = agent.init(state)                                        # per-env memory (may be empty)
    carry, chunk = agent.plan(params, carry, state, frames, instruction, rng)
with `state` the batched env State, `frames` (B, H_o, H, W, 3) uint8 (the newest last), `instruction`
(B, L) uint8 bytes; `chunk` (B, K, A) native actions, of which the rollout executes `replan_every`.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vam.sim import experts


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static argument of the jitted rollout
class Agent:
  name: str
  replan_every: int
  context_frames: int
  init: Callable[[Any], Any]
  plan: Callable[..., tuple[Any, jax.Array]]


def learned(restored, embodiment: str, replan_every: int, sample_steps: int) -> Agent:
  """The checkpoint's policy: images + proprio + instruction -> a unified chunk -> this robot's native actions.

  The robot executes its `<robot>_joints` slot (absolute joint targets + gripper), denormalised with the
  statistics saved in the checkpoint.
  """
  cfg, space, norm = restored.config, restored.space, restored.assets["normalization"]
  if embodiment not in norm["action_offset"]:
    raise ValueError(f"the checkpoint has no normalisation statistics for {embodiment!r} "
                     f"(trained on {sorted(norm['action_offset'])})")
  slot = space.slots.get(f"{embodiment}_joints")
  if slot is None:
    raise ValueError(f"embodiment {embodiment!r} has no joint-target slot to execute (robots only)")
  horizon = cfg.data.action_horizon
  if not 1 <= replan_every <= horizon:
    raise ValueError(f"config.eval.replan_every={replan_every} must be in [1, data.action_horizon={horizon}]")
  a_off, a_scale = (jnp.asarray(norm[k][embodiment], jnp.float32) for k in ("action_offset", "action_scale"))
  s_off, s_scale = (jnp.asarray(norm[k][embodiment], jnp.float32) for k in ("state_offset", "state_scale"))
  emb_id = space.embodiments.index(embodiment)
  binder = restored.binder

  def plan(params, carry, state, frames, instruction, rng):
    native = state.obs["state"]
    proprio = (jnp.pad(native, ((0, 0), (0, s_off.shape[0] - native.shape[-1]))) - s_off) / s_scale
    b = frames.shape[0]
    batch = dict(images=frames, instruction=instruction, embodiment_id=jnp.full((b,), emb_id, jnp.int32),
                 proprio=proprio, action_mask=jnp.ones((b, horizon, space.dim), bool))
    chunk = binder(params).sample(batch, rng, sample_steps)
    return carry, (chunk * a_scale + a_off)[..., slot.slice]

  return Agent(f"policy(step {restored.step})", replan_every, cfg.data.context_frames, lambda state: (), plan)


def expert(env) -> Agent:
  """The scripted expert (privileged state), one action per plan: it must score near its dataset success."""

  def plan(params, carry, state, frames, instruction, rng):
    action, carry = jax.vmap(functools.partial(experts.act, env))(state, carry)
    return carry, action[:, None]

  return Agent("scripted expert", 1, 1, lambda state: jax.vmap(lambda _: experts.init())(state.step), plan)


def random(env, replan_every: int = 1) -> Agent:
  """Uniform actions over the actuators' control ranges (joint targets) and the gripper's [0, 1]."""
  emb = env.embodiment
  n = emb.action_dim
  low = np.concatenate([emb.ctrl_low[:n - 1], [0.0]]).astype(np.float32)
  high = np.concatenate([emb.ctrl_high[:n - 1], [1.0]]).astype(np.float32)

  def plan(params, carry, state, frames, instruction, rng):
    b = frames.shape[0]
    return carry, jax.random.uniform(rng, (b, replan_every, n), minval=low, maxval=high)

  return Agent("random", replan_every, 1, lambda state: (), plan)
