"""Per-embodiment normalisation statistics, stored next to each dataset as `normalization.json`.

For every embodiment and every vector field (native `action`, proprio `state`, end-effector `eef`,
and `hand_keypoints` for the hand) we store mean, std, min, max and the 1st/99th percentiles over
all train-split steps, in the embodiment's native (unpadded) width. The input pipeline chooses
mean/std or quantile scaling from these; both survive a round trip exactly.

Action chunks are expressed relative to the current pose (vam/embodiment.py), so we also store the
statistics of those relative targets, over every (t, t + k) pair with k = 1..RELATIVE_HORIZON:
`eef_relative` (9: position and 6D rotation in the current end-effector frame) and, for the hand,
`hand_relative` (24: wrist pose and fingertips in the current wrist frame).
"""

import json
import os

import numpy as np

FIELDS = ("action", "state", "eef", "hand_keypoints")
RELATIVE_FIELDS = ("eef_relative", "hand_relative")
RELATIVE_HORIZON = 32
FILENAME = "normalization.json"


def _relative_chunks(x: np.ndarray, relative) -> np.ndarray:
  """All (t, t+k) relative targets of a per-step pose track x (T, D), k = 1..RELATIVE_HORIZON."""
  out = [relative(x[t], x[t + 1:t + 1 + RELATIVE_HORIZON]) for t in range(len(x) - 1)]
  return np.concatenate(out).astype(np.float32) if out else np.zeros((0, x.shape[-1]), np.float32)


def accumulate(acc: dict, episode) -> None:
  from vam import embodiment  # pylint: disable=g-import-not-at-top
  per = acc.setdefault(episode.embodiment, {"episodes": 0, **{f: [] for f in FIELDS + RELATIVE_FIELDS}})
  per["episodes"] += 1
  for f in FIELDS:
    if f in episode.steps:
      per[f].append(np.asarray(episode.steps[f], np.float64).reshape(episode.length, -1))
  per["eef_relative"].append(_relative_chunks(np.asarray(episode.steps["eef"], np.float64), embodiment.relative_pose))
  if "hand_keypoints" in episode.steps:
    per["hand_relative"].append(
        _relative_chunks(np.asarray(episode.steps["hand_keypoints"], np.float64), embodiment.relative_hand))


def summarize(x: np.ndarray) -> dict:
  return dict(mean=x.mean(0).tolist(), std=x.std(0).tolist(), min=x.min(0).tolist(), max=x.max(0).tolist(),
              q01=np.quantile(x, 0.01, axis=0).tolist(), q99=np.quantile(x, 0.99, axis=0).tolist())


def finalize(acc: dict) -> dict:
  from vam.sim import embodiments  # pylint: disable=g-import-not-at-top
  out = {}
  for name, per in acc.items():
    entry = {"num_episodes": per["episodes"], "action_names": list(embodiments.EMBODIMENTS[name].action_names),
             "relative_horizon": RELATIVE_HORIZON}
    for f in FIELDS + RELATIVE_FIELDS:
      if per[f] and sum(len(x) for x in per[f]):
        x = np.concatenate(per[f])
        entry[f] = summarize(x)
        if f in FIELDS:
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
