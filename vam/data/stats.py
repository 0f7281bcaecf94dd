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

Memory is bounded whatever the dataset's size: every statistic is kept streaming (`Running`): count, mean and
variance merged batch by batch (Chan et al.'s parallel update, float64), min and max, and the quantiles from a
uniform reservoir sample of at most `RESERVOIR` rows (seeded, so a build is deterministic). Up to `RESERVOIR`
rows the quantiles are exact; past it the 1st percentile's rank is off by ~sqrt(0.01 * 0.99 / RESERVOIR)
(0.05 percentage points at 32k rows; tests/test_stats.py measures it).
"""

import json
import os

import numpy as np

from vam import atomic

FIELDS = ("action", "state", "eef", "hand_keypoints", "privileged")
RELATIVE_FIELDS = ("eef_relative", "joints_relative", "hand_relative")
RELATIVE_HORIZON = 16  # the longest action chunk the statistics describe
FILENAME = "normalization.json"
RESERVOIR = 32_768  # rows kept per statistic for its quantiles (float64: <= 6.3 MB for a 24-wide field)


class Running:
  """Streaming summary of (n, D) rows: `update` batch by batch, `result()` -> the dict `summarize` returns.

  Memory: O(D * capacity). Mean and std are exact (up to float64 rounding); min and max exact; q01/q99 exact
  while at most `capacity` rows were seen, else the quantiles of a uniform random sample of `capacity` rows.
  """

  def __init__(self, capacity: int = RESERVOIR, seed: int = 0):
    if capacity < 1:
      raise ValueError(f"Running: capacity must be >= 1 rows, got {capacity}")
    self.capacity, self.count = capacity, 0
    self._rng = np.random.default_rng(seed)
    self._mean = self._m2 = self._min = self._max = self._sample = None

  def update(self, x) -> "Running":
    """Adds the rows of x (n, D); every update must have the same D."""
    x = np.asarray(x, np.float64)
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    if not len(x):
      return self
    if self._mean is not None and x.shape[1] != self._mean.shape[0]:
      raise ValueError(f"Running: rows of width {x.shape[1]} after rows of width {self._mean.shape[0]}")
    n_b, mean_b = len(x), x.mean(0)
    m2_b = ((x - mean_b) ** 2).sum(0)
    if self._mean is None:
      self._mean, self._m2, self._min, self._max = mean_b, m2_b, x.min(0), x.max(0)
      self._sample = np.empty((0, x.shape[1]))
    else:
      n = self.count + n_b
      delta = mean_b - self._mean
      self._mean = self._mean + delta * (n_b / n)
      self._m2 = self._m2 + m2_b + delta ** 2 * (self.count * n_b / n)
      self._min, self._max = np.minimum(self._min, x.min(0)), np.maximum(self._max, x.max(0))
    self._reservoir(x)
    self.count += n_b
    return self

  def _reservoir(self, x: np.ndarray) -> None:
    """Algorithm R, vectorised: row i of the stream (0-based) replaces slot j ~ U{0..i} when j < capacity."""
    room = self.capacity - len(self._sample)
    if room > 0:
      self._sample = np.concatenate([self._sample, x[:room]])
    rest = x[max(room, 0):]
    if len(rest):
      index = self.count + max(room, 0) + np.arange(len(rest))  # stream positions of `rest`
      slot = np.floor(self._rng.random(len(rest)) * (index + 1)).astype(np.int64)
      keep = slot < self.capacity
      for j, row in zip(slot[keep], rest[keep]):  # in stream order: a later row replaces an earlier one
        self._sample[j] = row

  def result(self) -> dict:
    if not self.count:
      raise ValueError("Running: no rows were added")
    return dict(mean=self._mean.tolist(), std=np.sqrt(self._m2 / self.count).tolist(), min=self._min.tolist(),
                max=self._max.tolist(), q01=np.quantile(self._sample, 0.01, axis=0).tolist(),
                q99=np.quantile(self._sample, 0.99, axis=0).tolist())


class RunningByStep:
  """Streaming summaries of (n, H, D) chunks: over all chunk steps together, and per chunk step k."""

  def __init__(self, horizon: int, capacity: int = RESERVOIR, seed: int = 0):
    self.all = Running(capacity, seed)
    self.steps = [Running(capacity, seed + 1 + k) for k in range(horizon)]

  def update(self, x) -> "RunningByStep":
    x = np.asarray(x, np.float64)
    if x.ndim != 3 or x.shape[1] != len(self.steps):
      raise ValueError(f"RunningByStep: expected (n, {len(self.steps)}, D) chunks, got shape {x.shape}")
    self.all.update(x.reshape(-1, x.shape[-1]))
    for k, running in enumerate(self.steps):
      running.update(x[:, k])
    return self

  def result(self) -> tuple[dict, dict]:
    """(the summary over all chunk steps, the per-step summary: every statistic a list of H rows)."""
    rows = [r.result() for r in self.steps]
    return self.all.result(), {k: [r[k] for r in rows] for k in rows[0]}


def _ahead(length: int, first: int) -> np.ndarray:
  """(T, RELATIVE_HORIZON) indices t + first + k, clamped to the last step (the windows' padding)."""
  return np.minimum(np.arange(length)[:, None] + first + np.arange(RELATIVE_HORIZON)[None], length - 1)


def accumulate(acc: dict, episode) -> None:
  """Adds one train-split episode to `acc` ({embodiment: streaming summaries}); memory stays bounded."""
  from vam import embodiment  # pylint: disable=g-import-not-at-top
  per = acc.setdefault(episode.embodiment, {"episodes": 0})
  per["episodes"] += 1
  seed = lambda f: (FIELDS + RELATIVE_FIELDS).index(f) * 1000  # each field its own reservoir stream
  add = lambda f, x: per.setdefault(f, Running(seed=seed(f))).update(x)
  add_chunks = lambda f, x: per.setdefault(f, RunningByStep(RELATIVE_HORIZON, seed=seed(f))).update(x)
  T = episode.length
  for f in FIELDS:
    if f in episode.steps:
      add(f, np.asarray(episode.steps[f], np.float64).reshape(T, -1))
  act = _ahead(T, 0)  # action t + k
  eef, target = (np.asarray(episode.steps[k], np.float64) for k in ("eef", "eef_target"))
  add_chunks("eef_relative", embodiment.relative_pose(eef, target[act]))  # (T, H, 9)
  joints = len(embodiment.spec(episode.embodiment).joints)
  if joints:
    action = np.asarray(episode.steps["action"], np.float64)[:, :joints]
    state = np.asarray(episode.steps["state"], np.float64)[:, :joints]
    add_chunks("joints_relative", action[act] - state[:, None])
  if "hand_keypoints" in episode.steps:
    kp = np.asarray(episode.steps["hand_keypoints"], np.float64)
    nxt = _ahead(T, 1)  # keypoints after step t + k
    add_chunks("hand_relative", np.stack([embodiment.relative_hand(kp[t], kp[nxt[t]]) for t in range(T)]))


def summarize(x: np.ndarray) -> dict:
  """mean, std, min, max, q01, q99 of (n, D) rows (exact up to RESERVOIR rows)."""
  return Running().update(x).result()


def finalize(acc: dict, action_names: dict | None = None) -> dict:
  """The summaries of `accumulate` -> the JSON-able statistics; `action_names` {embodiment: names} overrides the
  simulated embodiment's native action names (a converted dataset's own native action)."""
  from vam.sim import embodiments  # pylint: disable=g-import-not-at-top
  out = {}
  for name, per in acc.items():
    names = (action_names or {}).get(name) or embodiments.EMBODIMENTS[name].action_names
    entry = {"num_episodes": per["episodes"], "action_names": list(names),
             "relative_horizon": RELATIVE_HORIZON}
    for f in FIELDS + RELATIVE_FIELDS:
      running = per.get(f)
      if running is None or not (running.all if f in RELATIVE_FIELDS else running).count:
        continue
      if f in RELATIVE_FIELDS:  # over all chunk steps, and per chunk step
        entry[f], entry[f + "_by_step"] = running.result()
      else:
        entry[f] = running.result()
        entry["num_steps"] = int(running.count)
    out[name] = entry
  return out


def write(stats: dict, directory: str) -> str:
  path = os.path.join(directory, FILENAME)
  atomic.write_json(path, stats)
  return path


def read(directory: str) -> dict:
  path = os.path.join(directory, FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no normalisation statistics at {path}; rebuild the dataset with vam.data.build")
  with open(path) as f:
    return json.load(f)
