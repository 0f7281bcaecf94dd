"""Per-embodiment normalisation statistics, stored next to each dataset as `normalization.json`.

For every embodiment and every vector field (native `action`, proprio `state`, end-effector `eef`,
`hand_keypoints` for the hand, the simulator's `privileged` task state) we store mean, std, min, max and the
1st/99th percentiles over all train-split steps, in the embodiment's native (unpadded) width. The input
pipeline chooses mean/std or quantile scaling from these; both survive a round trip exactly.

Action chunks are relative to the current state (vam/embodiment.py), so we also store the statistics of the
relative targets exactly as training windows hold them (every step t, chunk steps k = 0..RELATIVE_HORIZON-1,
steps past the episode's end repeating its last action): `eef_relative` (9: the pose action t+k commands
relative to the pose at t), for robots `joints_relative` (n: joint targets t+k minus the joint positions at
t), and for the hand `hand_relative` (24: the keypoints after step t+k relative to the wrist frame at t).
Each is summarised over all chunk steps together and, under `<field>_by_step`, per chunk step k (lists of
RELATIVE_HORIZON rows): a motion k steps ahead is larger than the next step's, and per-step scales keep the
near future -- what a closed loop executes -- at full resolution.
"""

import json
import os

import numpy as np

FIELDS = ("action", "state", "eef", "hand_keypoints", "privileged")
RELATIVE_FIELDS = ("eef_relative", "joints_relative", "hand_relative")
RELATIVE_HORIZON = 16  # the longest action chunk the statistics describe
FILENAME = "normalization.json"


def _ahead(length: int, first: int) -> np.ndarray:
  """(T, RELATIVE_HORIZON) indices t + first + k, clamped to the last step (the windows' padding)."""
  return np.minimum(np.arange(length)[:, None] + first + np.arange(RELATIVE_HORIZON)[None], length - 1)


def accumulate(acc: dict, episode) -> None:
  from vam import embodiment  # pylint: disable=g-import-not-at-top
  per = acc.setdefault(episode.embodiment, {"episodes": 0, **{f: [] for f in FIELDS + RELATIVE_FIELDS}})
  per["episodes"] += 1
  T = episode.length
  for f in FIELDS:
    if f in episode.steps:
      per[f].append(np.asarray(episode.steps[f], np.float64).reshape(T, -1))
  act = _ahead(T, 0)  # action t + k
  eef, target = (np.asarray(episode.steps[k], np.float64) for k in ("eef", "eef_target"))
  per["eef_relative"].append(embodiment.relative_pose(eef, target[act]))  # (T, H, 9)
  joints = len(embodiment.spec(episode.embodiment).joints)
  if joints:
    action = np.asarray(episode.steps["action"], np.float64)[:, :joints]
    state = np.asarray(episode.steps["state"], np.float64)[:, :joints]
    per["joints_relative"].append(action[act] - state[:, None])
  if "hand_keypoints" in episode.steps:
    kp = np.asarray(episode.steps["hand_keypoints"], np.float64)
    nxt = _ahead(T, 1)  # keypoints after step t + k
    per["hand_relative"].append(np.stack([embodiment.relative_hand(kp[t], kp[nxt[t]]) for t in range(T)]))


def summarize(x: np.ndarray) -> dict:
  return dict(mean=x.mean(0).tolist(), std=x.std(0).tolist(), min=x.min(0).tolist(), max=x.max(0).tolist(),
              q01=np.quantile(x, 0.01, axis=0).tolist(), q99=np.quantile(x, 0.99, axis=0).tolist())


def summarize_by_step(x: np.ndarray) -> dict:
  """(N, H, D) -> the summary of each chunk step: every statistic a list of H rows."""
  rows = [summarize(x[:, h]) for h in range(x.shape[1])]
  return {k: [r[k] for r in rows] for k in rows[0]}


def finalize(acc: dict) -> dict:
  from vam.sim import embodiments  # pylint: disable=g-import-not-at-top
  out = {}
  for name, per in acc.items():
    entry = {"num_episodes": per["episodes"], "action_names": list(embodiments.EMBODIMENTS[name].action_names),
             "relative_horizon": RELATIVE_HORIZON}
    for f in FIELDS + RELATIVE_FIELDS:
      if not per[f] or not sum(len(x) for x in per[f]):
        continue
      x = np.concatenate(per[f])
      if f in RELATIVE_FIELDS:  # (N, H, D): over all chunk steps, and per chunk step
        entry[f] = summarize(x.reshape(-1, x.shape[-1]))
        entry[f + "_by_step"] = summarize_by_step(x)
      else:
        entry[f] = summarize(x)
        entry["num_steps"] = int(len(x))
    out[name] = entry
  return out


def write(stats: dict, directory: str) -> str:
  path = os.path.join(directory, FILENAME)
  with open(path + ".tmp", "w") as f:
    json.dump(stats, f, indent=1)
  os.replace(path + ".tmp", path)
  return path


def read(directory: str) -> dict:
  path = os.path.join(directory, FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no normalisation statistics at {path}; rebuild the dataset with vam.data.build")
  with open(path) as f:
    return json.load(f)
