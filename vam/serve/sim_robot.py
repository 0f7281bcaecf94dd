"""A simulated robot that runs a served policy: the MJX world of `vam.eval` stepped one episode at a time,
acting only through the light client (`ChunkExecutor`), as a real robot would. It checks a deployment end to
end: the same checkpoint served must score what the in-process evaluation scores on the same worlds.

    python -m vam.serve.sim_robot --uri ws://127.0.0.1:8000 --tasks reach push --episodes 8 [--out result.json]
        [--prefetch 0] [--eval_rng]

Worlds are evaluation's (`closed_loop.cell_seeds`, easy mode, seen layout); `--eval_rng` sends the sampling
keys `vam.eval` draws with `config.eval.num_envs=1` (episode j of a (mode, split) group: PRNGKey(j), plan i:
fold_in(., i)), so with it the episodes are the in-process evaluation's, step for step.
Prints one JSON line: per cell the seeds and success flags, and the client's timing.
"""

import argparse
import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from vam.eval import closed_loop
from vam.serve import client as client_lib
from vam.sim import rollout as sim_rollout
from vam.sim import tasks


@functools.partial(jax.jit, static_argnums=(0, 1))
def _step(env, control: str, state, command):
  """One control step of a batch-1 env: the command (C,) through the robot's controller, then a frame."""
  action = jax.vmap(lambda d, c: env.embodiment.command_action(d, c, control))(state.data, command[None])
  state = jax.vmap(env.step)(state, action)
  return state, env.render(state)[0, 0]


@functools.partial(jax.jit, static_argnums=0)
def _first_frame(env, state):
  return env.render(state)[0, 0]


def run(uri: str, tasks_: list[str], episodes: int, seed: int = 0, mode: str = "easy", split: str = "train",
        prefetch: int = 0, eval_rng: bool = False) -> dict:
  client = client_lib.PolicyClient(uri)
  meta = client.metadata
  emb, sim = meta["embodiment"], meta["sim"]
  # evaluation's worlds of an embodiment depend on its place in config.eval.embodiments
  embodiment_index = sim["eval_embodiments"].index(emb) if emb in sim["eval_embodiments"] else 0
  runner = closed_loop.Runner(emb, 1, meta["image_size"], meta["camera"], sim["backend"], sim["physics"],
                              sim["push_layout"])
  cells, j = [], 0
  waits, round_trips = [], []
  for task in tasks_:
    seeds = closed_loop.cell_seeds(seed, embodiment_index, task, mode, split, episodes)
    cell = dict(embodiment=emb, task=task, mode=mode, split=split, seeds=[int(s) for s in seeds], success=[],
                steps_to_success=[], final_grasp=[])
    for s in seeds:
      state = runner.reset(mode, split, jax.random.PRNGKey(int(s))[None], jnp.asarray([tasks.task_id(task)]))
      text = sim_rollout.instruction(task, int(s), jax.device_get(state.episode), 0)[0]
      base = jax.random.PRNGKey(j)
      keys = (lambda i, base=base: np.asarray(jax.random.fold_in(base, i))) if eval_rng else None
      robot = client_lib.ChunkExecutor(client, text, prefetch=prefetch, keys=keys)
      frame, hit = np.asarray(_first_frame(runner.env, state)), None
      for t in range(tasks.HORIZON[task]):
        obs = jax.device_get(state.obs)
        command = robot(frame, obs["state"][0], eef=obs["eef"][0])
        state, frame = _step(runner.env, meta["control"], state, jnp.asarray(command))
        frame = np.asarray(frame)
        if hit is None and bool(state.success[0]):
          hit = t + 1
      robot.close()
      cell["success"].append(hit is not None)
      cell["steps_to_success"].append(hit)
      cell["final_grasp"].append(np.asarray(jax.vmap(runner.env.embodiment.grasp_point)(state.data)[0]).tolist())
      waits += robot.waits_ms
      round_trips += [r["timing"]["round_trip_ms"] for r in robot.replies]
      j += 1
    cells.append(cell)
  client.close()
  return dict(uri=uri, step=meta["step"], prefetch=prefetch, eval_rng=eval_rng, cells=cells,
              timing=dict(queries=len(round_trips), round_trip_ms_p50=float(np.median(round_trips)),
                          wait_ms_p50=float(np.median(waits))))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--uri", default="ws://127.0.0.1:8000")
  p.add_argument("--tasks", nargs="+", default=["reach"], choices=tasks.TASKS)
  p.add_argument("--episodes", type=int, default=8, help="episodes per task")
  p.add_argument("--seed", type=int, default=0, help="config.eval.seed of the worlds")
  p.add_argument("--prefetch", type=int, default=0, help="ChunkExecutor prefetch (steps)")
  p.add_argument("--eval_rng", action="store_true", help="vam.eval's sampling keys (num_envs=1)")
  p.add_argument("--out", default=None, help="also write the result here (JSON)")
  args = p.parse_args(argv)
  try:
    result = run(args.uri, args.tasks, args.episodes, args.seed, prefetch=args.prefetch, eval_rng=args.eval_rng)
  except client_lib.ServerError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  text = json.dumps(result)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
