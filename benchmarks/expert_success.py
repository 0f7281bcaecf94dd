"""Scripted-expert success table: embodiment x task x mode (and optionally world split).

    python -m benchmarks.expert_success --episodes 32 --out benchmarks/results/expert_success.json
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from vam.sim import embodiments, env as env_lib, rollout, tasks


def measure(embodiment: str, mode: str, split: str, per_task: int, seed: int = 12345) -> dict:
  n = per_task * len(tasks.TASKS)
  env = env_lib.Env(env_lib.EnvConfig(embodiment=embodiment, mode=mode, split=split, num_envs=n))
  task_ids = np.repeat(np.arange(len(tasks.TASKS)), per_task)
  keys = jax.random.split(jax.random.PRNGKey(seed), n)
  _, traj = rollout.rollout(env, keys, jnp.asarray(task_ids), max(tasks.HORIZON.values()), False)
  success = np.asarray(traj["success"])
  out = {}
  for t, task in enumerate(tasks.TASKS):
    ok = success[:tasks.HORIZON[task], task_ids == t].any(axis=0)  # within the task's own horizon
    out[task] = float(ok.mean())
  return out


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--episodes", type=int, default=32, help="episodes per task")
  p.add_argument("--modes", nargs="*", default=list(tasks.MODES))
  p.add_argument("--splits", nargs="*", default=["train"])
  p.add_argument("--embodiments", nargs="*", default=sorted(embodiments.EMBODIMENTS))
  p.add_argument("--out", default="benchmarks/results/expert_success.json")
  args = p.parse_args()
  table = []
  for emb in args.embodiments:
    for mode in args.modes:
      for split in args.splits:
        t0 = time.time()
        rates = measure(emb, mode, split, args.episodes)
        table.append(dict(embodiment=emb, mode=mode, split=split, episodes_per_task=args.episodes, **rates))
        print(f"{emb:11s} {mode:5s} {split:17s} " + "  ".join(f"{k} {v:.2f}" for k, v in rates.items()) +
              f"   ({time.time() - t0:.0f} s)", flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(dict(benchmark="expert_success", rows=table), f, indent=1)


if __name__ == "__main__":
  main()
