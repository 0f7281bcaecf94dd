"""Closed-loop agents for the harness: the learned policy, and two references that validate the harness
(the scripted expert must score high, a random agent low).

An agent is pure and jit-able:
    carry = agent.init(state)                                        # per-env memory (may be empty)
    carry, chunk = agent.plan(params, carry, state, frames, instruction, rng)
with `state` the batched env State, `frames` (B, H_o, H, W, 3) uint8 (the newest last; `frame_stride` steps
apart, as the checkpoint's training windows), `instruction`
(B, L) uint8 bytes; `chunk` (B, K, C) commands of the agent's `control` (vam/embodiment.py: `joints` = native
actions, `eef` = end-effector pose targets for the differential-IK controller), of which the rollout executes
`replan_every`.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vam import embodiment as embodiment_lib
from vam.input import windows
from vam.models import registry
from vam.sim import experts


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static argument of the jitted rollout
class Agent:
  name: str
  replan_every: int
  context_frames: int
  init: Callable[[Any], Any]
  plan: Callable[..., tuple[Any, jax.Array]]
  control: str = "joints"  # what the chunk's commands are (vam/embodiment.py CONTROLS)
  frame_stride: int = 1  # control steps between the frames it sees (config.data.frame_stride)


def check_control(restored, embodiment: str, control: str) -> None:
  """Clear errors for an embodiment the checkpoint cannot command with `control`."""
  norm, space = restored.normalizer, restored.space
  if embodiment not in norm.action_offset:
    raise ValueError(f"the checkpoint has no normalisation statistics for {embodiment!r} (trained on "
                     f"{norm.embodiments})")
  if control not in embodiment_lib.CONTROLS:
    raise ValueError(f"config.eval.control={control!r}; valid: {list(embodiment_lib.CONTROLS)}")
  space.slot(embodiment, control)  # a clear error for an embodiment without that slot


def chunk_fn(restored, embodiment: str, sample_steps: int, control: str = "joints", noise_scale: float = 1.0,
             oracle_tau_v: float | None = None):
  """The checkpoint's policy as one pure, jit-able function (the closed-loop agent and the policy server both
  call it, so a served robot runs exactly what evaluation measured):

      commands = act(params, obs, frames, instruction, rng)

  obs: `state` (B, S) native proprio, `eef` (B, 9) the end-effector pose, and `privileged` (B, P) where the
  model reads it (the state policy); frames (B, H_o, H, W, 3) uint8, newest last, `frame_stride` steps apart;
  instruction (B, L) uint8 bytes. Returns (B, K, C) commands of `control` (`embodiment.native_commands` with
  the statistics saved in the checkpoint).

  `oracle_tau_v` (video-action models only): the policy reads a given true future instead of imagining one,
  `act(..., future=frames (B, H_f, H, W, 3))` noised to that tau_v (`VideoActionModel.sample_with_future`)."""
  check_control(restored, embodiment, control)
  space, norm, binder = restored.space, restored.normalizer, restored.binder
  horizon = restored.config.data.action_horizon
  emb_id = space.embodiments.index(embodiment)
  if oracle_tau_v is not None and restored.config.model.name != "vam":
    raise ValueError(f"an oracle future needs a video-action model; {restored.workdir} holds a "
                     f"{restored.config.model.name!r} model")

  def act(params, obs, frames, instruction, rng, future=None):
    native = obs["state"]
    b = frames.shape[0]
    batch = dict(images=frames, instruction=instruction, embodiment_id=jnp.full((b,), emb_id, jnp.int32),
                 proprio=norm.normalize_state(embodiment, native, obs.get("eef")),
                 action_mask=jnp.ones((b, horizon, space.dim), bool))
    if "privileged" in obs and embodiment in norm.privileged_offset:
      batch["privileged"] = norm.normalize_privileged(embodiment, obs["privileged"])
    if oracle_tau_v is None:
      chunk = binder(params).sample(batch, rng, sample_steps, noise_scale=noise_scale)
    else:
      chunk = binder(params).sample_with_future(dict(batch, future_images=future), rng, sample_steps,
                                                tau_v=oracle_tau_v, noise_scale=noise_scale)
    return embodiment_lib.native_commands(norm, embodiment, control, chunk, native, obs.get("eef"))

  return act


def learned(restored, embodiment: str, replan_every: int, sample_steps: int, control: str = "joints",
            noise_scale: float = 1.0, temporal_ensemble: bool = False, ensemble_decay: float = 0.01) -> Agent:
  """The checkpoint's policy (`chunk_fn`): images + proprio + instruction -> a normalised unified chunk ->
  this robot's commands. `control` picks the slot the robot executes: `joints` (joint-target deltas) or `eef`
  (end-effector pose through differential IK); `noise_scale` the action flow's sampling temperature.
  `temporal_ensemble` (ACT's temporal ensembling; needs `replan_every` = 1): a chunk is planned every step and
  the executed command is the average of what every chunk still in its horizon commands for this step,
  weighted exp(ensemble_decay * age) (older plans slightly more, as ACT) -- it averages out the sampling noise
  of single chunks and the jumps between them."""
  cfg, space = restored.config, restored.space
  act = chunk_fn(restored, embodiment, sample_steps, control, noise_scale)
  horizon = cfg.data.action_horizon
  if not 1 <= replan_every <= horizon:
    raise ValueError(f"config.eval.replan_every={replan_every} must be in [1, data.action_horizon={horizon}]")
  if temporal_ensemble and replan_every != 1:
    raise ValueError(f"config.eval.temporal_ensemble needs config.eval.replan_every=1 (got {replan_every}): "
                     "it plans a chunk at every step")
  width = space.slot(embodiment, control).size

  def plan(params, carry, state, frames, instruction, rng):
    commands = act(params, state.obs, frames, instruction, rng)
    if not temporal_ensemble:
      return carry, commands
    return ensemble_step(carry, commands, ensemble_decay)

  def init(state):
    if not temporal_ensemble:
      return ()
    b = state.obs["state"].shape[0]
    return dict(plans=jnp.zeros((b, horizon, horizon, width), jnp.float32), valid=jnp.zeros((b, horizon), bool))

  return Agent(f"policy(step {restored.step})", replan_every, cfg.data.context_frames, init, plan, control,
               frame_stride=windows.frame_stride(cfg.data))


def from_eval_config(restored, embodiment: str, ec) -> Agent:
  """`learned` with the settings of an evaluation config (`config.eval`, vam/eval/defaults.py)."""
  return learned(restored, embodiment, ec.replan_every, ec.sample_steps, ec.control, ec.noise_scale,
                 ec.temporal_ensemble, ec.ensemble_decay)


def ensemble_step(carry: dict, commands, decay: float):
  """Temporal ensembling (ACT), one step. carry: `plans` (B, H, H, C), the chunks planned 0..H-1 steps ago
  (each from its own planning step on), and `valid` (B, H); commands (B, H, C) the chunk planned now.
  Returns (carry, (B, 1, C)): the weighted mean of what each valid plan commands for this step (plan j: its
  entry j), weights exp(decay * j)."""
  h = commands.shape[1]
  plans = jnp.concatenate([commands[:, None], carry["plans"][:, :-1]], axis=1)
  valid = jnp.concatenate([jnp.ones_like(carry["valid"][:, :1]), carry["valid"][:, :-1]], axis=1)
  ages = jnp.arange(h)
  now = plans[:, ages, ages]  # (B, H, C): plan j's command for this step
  w = jnp.where(valid, jnp.exp(decay * ages), 0.0)
  mean = jnp.einsum("bj,bjc->bc", w, now) / w.sum(axis=1, keepdims=True)
  return dict(plans=plans, valid=valid), mean[:, None]


def future_offsets(restored) -> tuple[int, ...]:
  """The control steps ahead (1-based, sorted) whose frames make up a video-action model's H_f future latent
  frames, as training windows take them (vam/input/windows.py): groups of tf frames ending d, 2d, .. H_f * d steps
  after the newest context frame (d = tf x frame stride)."""
  d = restored.config.data
  tf = registry.temporal_factor(restored.config)
  step = tf * windows.frame_stride(d)
  return tuple(j * step + g for j in range(1, d.future_frames + 1) for g in range(-tf + 1, 1))


def expert_future(env, state, expert_state, offsets, keep_after: int):
  """Rolls the scripted expert forward from copies of the worlds `state` (batched) and renders the frames
  `offsets` (sorted, >= 1) steps ahead: (frames (B, len(offsets), H, W, 3) uint8, the expert's state `keep_after`
  steps ahead). The worlds themselves are untouched (the env is pure: the copies are stepped elsewhere).

  One render per iteration of a scan over the offsets, as the rollouts render: the batch renderer's scene
  buffers are shared by the renders of a program, and renders unrolled one after another in one program were
  measured to show another render's scene."""
  act = jax.vmap(functools.partial(experts.act, env))

  def one_step(_, carry):
    s, es, t, kept = carry
    action, es = act(s, es)
    t = t + 1
    kept = jax.tree.map(lambda new, old: jnp.where(t == keep_after, new, old), es, kept)
    return jax.vmap(env.step)(s, action), es, t, kept

  def segment(carry, length):
    carry = jax.lax.fori_loop(0, length, one_step, carry)
    return carry, env.render(carry[0])[:, 0]

  carry = (state, expert_state, jnp.zeros((), jnp.int32), expert_state)
  lengths = jnp.diff(jnp.asarray((0,) + tuple(offsets), jnp.int32))
  carry, frames = jax.lax.scan(segment, carry, lengths)  # frames (len(offsets), B, H, W, 3)
  if keep_after > offsets[-1]:
    carry = jax.lax.fori_loop(0, keep_after - offsets[-1], one_step, carry)
  return jnp.swapaxes(frames, 0, 1), carry[3]


def foresight(restored, env, embodiment: str, replan_every: int, sample_steps: int, control: str = "joints",
              noise_scale: float = 1.0, tau_v: float = 0.0) -> Agent:
  """The video-action model with a perfect video model ("foresight rollouts"): at every plan the scripted expert
  is rolled forward from a copy of the world over the future frames' span, those frames are rendered and the
  decoder reads them as the future (`chunk_fn(oracle_tau_v=tau_v)`); the robot executes the decoder's chunk,
  never the expert's actions. The expert's phase (its memory: approach, push, ...) carries over from where its
  copy stood `replan_every` steps ahead. The ceiling of what stage 1 can buy the decoder."""
  cfg = restored.config
  if not 1 <= replan_every <= cfg.data.action_horizon:
    raise ValueError(f"config.eval.replan_every={replan_every} must be in [1, data.action_horizon="
                     f"{cfg.data.action_horizon}]")
  act = chunk_fn(restored, embodiment, sample_steps, control, noise_scale, oracle_tau_v=tau_v)
  offsets = future_offsets(restored)

  def plan(params, carry, state, frames, instruction, rng):
    future, carry = expert_future(env, state, carry, offsets, replan_every)
    return carry, act(params, state.obs, frames, instruction, rng, future=future)

  return Agent(f"foresight(step {restored.step}, tau_v {tau_v:g})", replan_every, cfg.data.context_frames,
               lambda state: jax.vmap(lambda _: experts.init())(state.step), plan, control,
               frame_stride=windows.frame_stride(cfg.data))


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
