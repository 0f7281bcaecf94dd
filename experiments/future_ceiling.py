"""What a perfect view of the future is worth to an inverse-dynamics model, from the demos alone (no learning
beyond least squares): the executed part of each chunk (actions t .. t+7, joint targets relative to the joints at
t) fitted by quadratic least squares on the training demos from what an observer could know, scored on the
held-out (val) demos, per robot:

  state           the joints at t and their change over the last 4 steps (what two context frames 4 apart show)
  state + task    ... plus the simulator's task state (target and object positions, task): a perfect context
  future +1 +2    the joints at t and the true joints 1 and 2 steps ahead (a video model at frame stride 1)
  future +4 +8    the joints at t and the true joints 4 and 8 steps ahead (frame stride 4, H_f = 2)
  state + task + future +4 +8

    python experiments/future_ceiling.py --data_dir out/demo/data [--out results/future_ceiling.json]

RMSE in units of each action dimension's held-out standard deviation; `hold` is staying still.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from vam import embodiment as embodiment_lib
from vam.input import sources

EXECUTED = 8  # chunk steps the closed loop executes before replanning
INPUTS = ("state", "state + task", "future +1 +2", "future +4 +8", "state + task + future +4 +8")


def rows(data_dir: str, split: str, robot: str) -> dict:
  """{input name: (N, F) features, 'y': (N, EXECUTED * J) targets} over every other step of the split's episodes."""
  src = sources.EpisodeSource(os.path.join(data_dir, "sim_robot", "1.0.0"), split)
  out = {k: [] for k in INPUTS + ("y",)}
  for i in range(len(src)):
    ep = src.episode(i)
    if ep["embodiment"] != robot:
      continue
    T = len(ep["action"])
    q = np.stack([embodiment_lib.joint_positions(robot, s) for s in ep["state"]])
    a = ep["action"][:, :q.shape[1]]
    ahead = lambda t, k: q[min(t + k, T - 1)] - q[t]
    for t in range(0, T, 2):
      state = np.concatenate([q[t], q[max(t - 4, 0)] - q[t]])
      task = ep["privileged"][t]
      out["state"].append(state)
      out["state + task"].append(np.concatenate([state, task]))
      out["future +1 +2"].append(np.concatenate([q[t], ahead(t, 1), ahead(t, 2)]))
      out["future +4 +8"].append(np.concatenate([q[t], ahead(t, 4), ahead(t, 8)]))
      out["state + task + future +4 +8"].append(np.concatenate([state, task, ahead(t, 4), ahead(t, 8)]))
      out["y"].append((a[np.minimum(t + np.arange(EXECUTED), T - 1)] - q[t]).ravel())
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def quadratic(x: np.ndarray) -> np.ndarray:
  x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
  return np.concatenate([x, (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)], axis=1)


def table(doc: dict) -> str:
  """The markdown table of a results file: one row per input, one column per robot."""
  robots = list(doc["robots"])
  lines = ["| fitted from | " + " | ".join(robots) + " |", "|---" * (len(robots) + 1) + "|"]
  for name in ("hold",) + INPUTS:
    lines.append(f"| {name} | " + " | ".join(f"{doc['robots'][r][name]:.3f}" for r in robots) + " |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir", required=True)
  p.add_argument("--robots", nargs="+", default=["arm6", "gantry"])
  p.add_argument("--out", default="results/future_ceiling.json")
  args = p.parse_args(argv)
  result = {}
  for robot in args.robots:
    train, val = rows(args.data_dir, "train", robot), rows(args.data_dir, "val", robot)
    scale = val["y"].std(axis=0) + 1e-6
    r = dict(train_rows=len(train["y"]), val_rows=len(val["y"]), hold=float(np.sqrt(np.mean((val["y"] / scale) ** 2))))
    for name in INPUTS:
      w = np.linalg.lstsq(quadratic(train[name]), train["y"], rcond=1e-6)[0]
      r[name] = float(np.sqrt(np.mean(((quadratic(val[name]) @ w - val["y"]) / scale) ** 2)))
    result[robot] = r
    print(robot, {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
  doc = dict(commit=commit, command="python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]),
             units="RMSE in held-out standard deviations per action dimension, executed steps 0-7", robots=result)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(doc, f, indent=1)
  print(table(doc))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
