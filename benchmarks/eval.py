"""Closed-loop evaluation throughput: the batched, jitted rollout (policy + env step in one `lax.scan`) versus a
sequential one-env Python loop of the same policy, in one run.

    python -m benchmarks.eval --workdir out/demo/baseline --out benchmarks/results/eval.json [--num_envs 32]

Both run the checkpoint's policy on arm6 `reach` in easy worlds (planning every `replan_every` steps, 10
Euler steps per plan) and count env control steps per second including policy inference and rendering.
The sequential loop calls a jitted env step, a jitted renderer and a jitted planner from Python, one env
at a time, as a naive evaluation script would.
"""

import sys
import time

from absl import app, flags, logging

from benchmarks import report

flags.DEFINE_string("workdir", "out/demo/baseline", "a training workdir with a finished checkpoint")
flags.DEFINE_string("out", "benchmarks/results/eval.json", "where the JSON report goes")
flags.DEFINE_integer("num_envs", 32, "episodes per batched rollout")
flags.DEFINE_integer("steps", 30, "control steps per episode")
flags.DEFINE_integer("sequential_episodes", 1, "episodes of the sequential loop")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import numpy as np
  from vam.eval import agents, closed_loop, restore
  from vam.input import windows

  restored = restore.load(FLAGS.workdir)
  ec, cfg = restored.config.eval, restored.config
  n, t_steps = FLAGS.num_envs, FLAGS.steps
  res = {}

  # Batched: one compiled rollout of n episodes (timed on its second call, after compilation).
  runner = closed_loop.Runner("arm6", n, restored.image_size, cfg.data.camera, ec.backend)
  agent = agents.learned(restored, "arm6", ec.replan_every, ec.sample_steps)
  keys = jnp.stack([jax.random.PRNGKey(i) for i in range(n)])
  state = runner.reset("easy", "train", keys, jnp.zeros(n, jnp.int32))
  instruction = jnp.asarray(np.stack([windows.encode_instruction("reach the white ball")] * n))
  run = lambda: closed_loop.rollout(runner.env, agent, t_steps, False, restored.params, state, instruction,
                                    jax.random.PRNGKey(0))
  jax.block_until_ready(run())
  t = time.perf_counter()
  jax.block_until_ready(run())
  dt = time.perf_counter() - t
  res["batched"] = dict(env_steps_per_s=n * t_steps / dt, num_envs=n, steps=t_steps, seconds=dt)

  # Sequential: one env, a Python loop over steps; the same policy and the same jitted pieces.
  single = closed_loop.Runner("arm6", 1, restored.image_size, cfg.data.camera, ec.backend)
  one = agents.learned(restored, "arm6", ec.replan_every, ec.sample_steps)
  plan = jax.jit(lambda params, state, frames, text, rng: one.plan(params, (), state, frames, text, rng)[1])
  step = jax.jit(jax.vmap(single.env.step))
  render = jax.jit(lambda s: single.env.render(s)[:, 0])

  def sequential_episode(seed):
    s = single.reset("easy", "train", jax.random.PRNGKey(seed)[None], jnp.zeros(1, jnp.int32))
    frames = jnp.repeat(render(s)[:, None], one.context_frames, axis=1)
    chunk = None
    for i in range(t_steps):
      if i % one.replan_every == 0:
        chunk = plan(restored.params, s, frames, instruction[:1], jax.random.PRNGKey(i))
      s = step(s, chunk[:, i % one.replan_every])
      frames = jnp.concatenate([frames[:, 1:], render(s)[:, None]], axis=1)
    return jax.block_until_ready(s.success)

  sequential_episode(0)  # compile
  t = time.perf_counter()
  for e in range(FLAGS.sequential_episodes):
    sequential_episode(e + 1)
  dt = time.perf_counter() - t
  res["sequential"] = dict(env_steps_per_s=FLAGS.sequential_episodes * t_steps / dt, num_envs=1, steps=t_steps,
                           seconds=dt)
  ratios = dict(batched_vs_sequential=res["batched"]["env_steps_per_s"] / res["sequential"]["env_steps_per_s"])
  report.write(FLAGS.out, "eval", dict(workdir=FLAGS.workdir, step=restored.step, embodiment="arm6", task="reach",
                                       replan_every=ec.replan_every, sample_steps=ec.sample_steps), res, ratios)


if __name__ == "__main__":
  try:
    app.run(main)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
