"""The diagnostic ladder's first rung: replay recorded demos open loop through the policies' action path.

Every recorded step's unified chunk (exactly what training windows hold: relative targets, normalised with
the dataset's statistics) goes back through `embodiment.native_commands` against the *live* state of a world
reset from the episode's own seed, and the closed-loop harness executes `replan_every` commands per chunk
(`control='joints'`: joint-target deltas; `'eef'`: end-effector poses through the differential-IK
controller). If the data, the seeds, the relative-action contract and the executor agree, the replayed
episodes succeed where the expert did.

    python -m vam.eval.replay --data_dir out/demo/data [--embodiment arm6] [--control eef] [--replan_every 8]
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from vam import embodiment as embodiment_lib
from vam import log as log_lib
from vam.eval import agents, closed_loop
from vam.input import sources, windows
from vam.sim import tasks

logging = log_lib.get("vam.eval.replay")


def episode_chunks(ep: dict, horizon: int, space, normalizer) -> np.ndarray:
  """(T, H, A) normalised unified chunks of every step of a decoded episode (as training windows hold them)."""
  return np.stack([normalizer.normalize_actions(ep["embodiment"], windows.unified_chunk(ep, t, horizon, space)[0])
                   for t in range(len(ep["action"]))])


def replay_agent(normalizer, embodiment: str, control: str, replan_every: int) -> agents.Agent:
  """Plays the chunk of the current step of each episode (params: `chunks` (B, T_max, H, A) and `last` (B,) the
  index of each episode's last step); steps past an episode's recorded end replay its last chunk."""

  def plan(params, step, state, frames, instruction, rng):
    idx = jnp.minimum(step, params["last"])
    chunk = jnp.take_along_axis(params["chunks"], idx[:, None, None, None], axis=1)[:, 0]
    commands = embodiment_lib.native_commands(normalizer, embodiment, control, chunk, state.obs["state"],
                                              state.obs["eef"])
    return step + replan_every, commands

  return agents.Agent(f"replay({control})", replan_every, 1, lambda state: jnp.zeros(state.step.shape, jnp.int32),
                      plan, control)


def replay(data_dir: str, embodiment: str = "arm6", control: str = "joints", replan_every: int = 1,
           horizon: int = 16, dataset: str = "sim_robot", split: str = "train", max_episodes: int = 64,
           num_envs: int = 32, version: str = "1.0.0") -> dict:
  """Replays up to `max_episodes` episodes of `embodiment`; returns per-task and overall replay success among
  the episodes whose expert succeeded."""
  path = os.path.join(data_dir, dataset, version)
  src = sources.EpisodeSource(path, split)
  with open(os.path.join(path, "build_config.json")) as f:
    build = json.load(f)
  space = embodiment_lib.ActionSpace(tuple(n for n in embodiment_lib.DEFAULT_EMBODIMENTS))
  normalizer = embodiment_lib.Normalizer.from_stats(src.stats, space, 17, horizon=horizon)
  meta = [src.source[i]["episode_metadata"] for i in range(len(src))]
  chosen = [i for i in range(len(src)) if src.embodiment[i] == embodiment and bool(meta[i]["success"])][:max_episodes]
  if not chosen:
    raise ValueError(f"{path} split {split}: no successful {embodiment!r} episode to replay")
  runner = closed_loop.Runner(embodiment, num_envs, int(build["image_size"][0]), build["cameras"][0],
                              build.get("backend", "warp"), build.get("physics", "auto"),
                              build.get("push_layout", "any"))
  agent = replay_agent(normalizer, embodiment, control, replan_every)
  results = {}
  for start in range(0, len(chosen), num_envs):
    batch = chosen[start:start + num_envs]
    padded = batch + [batch[-1]] * (num_envs - len(batch))
    eps = [src.episode(i) for i in padded]
    chunks = [episode_chunks(ep, horizon, space, normalizer) for ep in eps]
    t_max = max(tasks.HORIZON.values())  # fixed shapes: one compiled program
    stacked = np.stack([np.concatenate([c, np.repeat(c[-1:], t_max - len(c), 0)]) for c in chunks])
    last = jnp.asarray([len(c) - 1 for c in chunks], jnp.int32)
    keys = jnp.stack([jax.random.PRNGKey(int(meta[i]["seed"])) for i in padded])
    task_names = [meta[i]["task"].decode() for i in padded]
    state = runner.reset(build["mode"], build["split"], keys, jnp.asarray([tasks.task_id(t) for t in task_names]))
    instruction = jnp.zeros((num_envs, windows.INSTRUCTION_BYTES), jnp.uint8)
    steps = max(tasks.HORIZON[t] for t in tasks.TASKS)  # one compiled program for every batch
    params = dict(chunks=jnp.asarray(stacked), last=last)
    success, _, _, _ = closed_loop.rollout(runner.env, agent, steps, False, params, state, instruction,
                                        jax.random.PRNGKey(0))
    success = np.asarray(success)
    for b, i in enumerate(batch):
      task = task_names[b]
      results.setdefault(task, []).append(bool(success[:tasks.HORIZON[task], b].any()))
  out = {t: dict(episodes=len(v), success=float(np.mean(v))) for t, v in sorted(results.items())}
  flat = [x for v in results.values() for x in v]
  return dict(embodiment=embodiment, control=control, replan_every=replan_every, dataset=path, split=split,
              by_task=out, success=float(np.mean(flat)), episodes=len(flat))


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m vam.eval.replay", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--dataset", default="sim_robot")
  parser.add_argument("--embodiment", default="arm6")
  parser.add_argument("--control", default="joints", choices=embodiment_lib.CONTROLS)
  parser.add_argument("--replan_every", type=int, default=1)
  parser.add_argument("--horizon", type=int, default=16)
  parser.add_argument("--split", default="train")
  parser.add_argument("--max_episodes", type=int, default=64)
  parser.add_argument("--num_envs", type=int, default=32)
  parser.add_argument("--out", default="", help="write the result as JSON here")
  args = parser.parse_args(argv)
  result = replay(args.data_dir, args.embodiment, args.control, args.replan_every, args.horizon, args.dataset,
                  args.split, args.max_episodes, args.num_envs)
  print(json.dumps(result, indent=1))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
