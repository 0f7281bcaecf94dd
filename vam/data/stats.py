"""Per-embodiment normalisation statistics, stored next to each dataset as `normalization.json`.

For every embodiment and every vector field (native `action`, proprio `state`, end-effector `eef`,
and `hand_keypoints` for the hand) we store mean, std, min, max and the 1st/99th percentiles over
all train-split steps, in the embodiment's native (unpadded) width. The input pipeline chooses
mean/std or quantile scaling from these; both survive a round trip exactly.
"""

import json
import os

import numpy as np

FIELDS = ("action", "state", "eef", "hand_keypoints")
FILENAME = "normalization.json"


def accumulate(acc: dict, episode) -> None:
  per = acc.setdefault(episode.embodiment, {"episodes": 0, **{f: [] for f in FIELDS}})
  per["episodes"] += 1
  for f in FIELDS:
    if f in episode.steps:
      per[f].append(np.asarray(episode.steps[f], np.float64).reshape(episode.length, -1))


def summarize(x: np.ndarray) -> dict:
  return dict(mean=x.mean(0).tolist(), std=x.std(0).tolist(), min=x.min(0).tolist(), max=x.max(0).tolist(),
              q01=np.quantile(x, 0.01, axis=0).tolist(), q99=np.quantile(x, 0.99, axis=0).tolist())


def finalize(acc: dict) -> dict:
  from vam.sim import embodiments  # pylint: disable=g-import-not-at-top
  out = {}
  for name, per in acc.items():
    entry = {"num_episodes": per["episodes"], "action_names": list(embodiments.EMBODIMENTS[name].action_names)}
    for f in FIELDS:
      if per[f]:
        x = np.concatenate(per[f])
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
