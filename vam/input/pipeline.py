"""grain pipeline: per-dataset windows (shuffled per epoch, sharded per host) -> weighted mixture -> batches.

Sampling is by weight, not by length: a dataset's share of the batch is its mixture weight, and within a
dataset each (embodiment, task) group is equally likely (`balance='task'`, the default), so short episodes
(a reach is a few steps) are seen as often as long ones (a stack is seventy), unless `task_weights` gives a
task a larger share (e.g. {"push": 3.0}: push windows three times as likely as each unlisted task's, weight 1).
`balance='window'` draws every window of a dataset equally instead.

    loader = InputPipeline(entries_from_config(config.data_dir, config.data), spec, space)
    it = iter(loader.dataset(batch_size=32, seed=0))     # per-host numpy batches; it.get_state()/set_state()
    batch = to_global(next(it), sharding)          # global jax.Array sharded over the data axes

Each host reads only its shard (`shard_index::shard_count` of every dataset's window index, default
`jax.process_index()::jax.process_count()`), so hosts see disjoint windows; the mixture weights then
decide how often each dataset is drawn. The iterator state (a few integers) is what checkpoints save.
"""

import collections
import dataclasses
import os

import grain
import jax
import numpy as np

from vam import embodiment as embodiment_lib
from vam import log as log_lib
from vam.data import stats as stats_lib
from vam.input import latents as latents_lib
from vam import mapping as mapping_lib
from vam.input import sources, windows

BALANCES = ("task", "window")
logging = log_lib.get("vam.input")


class WindowSource:
  """grain random-access source: index i -> one training window (plus its provenance)."""

  def __init__(self, episodes: sources.EpisodeSource, spec: windows.WindowSpec, space, normalizer, dataset_id: int,
               cache_mb: float = 256, mapping: mapping_lib.Mapping | None = None, only_embodiments=(),
               max_episodes: int = 0, max_restarts: int = -1, demos_per_task: int = 0, skip_bad: bool = False):
    """`only_embodiments` (empty: all) and `max_episodes` (0: all; the first ones, in dataset order) select
    episodes, e.g. N demos of one robot for fine-tuning; `demos_per_task` (0: all) keeps the first N of each
    (embodiment, task) group (N demos per task: the demos-versus-success experiment); `max_restarts` >= 0 keeps
    only demos whose expert started over at most that often (-1: all). `skip_bad`: a window of an episode
    that cannot be read (`sources.DamagedEpisodeError`) is replaced by the same step of the next readable
    episode, with one warning per episode and `skipped` = 1 in the window (the trainer counts them); without
    it that error stops training. Records unreadable at opening (`episodes.unreadable`) are left out."""
    self.episodes, self.spec, self.space, self.normalizer, self.dataset_id = episodes, spec, space, normalizer, dataset_id
    self.mapping = mapping
    self.cache_bytes, self._cached_bytes = cache_mb * 2 ** 20, 0
    unreadable = set(episodes.unreadable)
    keep = [e for e in range(len(episodes)) if e not in unreadable
            and (not only_embodiments or episodes.embodiment[e] in only_embodiments)
            and (max_restarts < 0 or episodes.restarts[e] <= max_restarts)]
    if demos_per_task > 0:
      seen = collections.Counter()  # episodes of each (embodiment, task) group so far, in dataset order

      def among_first(e):
        seen[episodes.embodiment[e], episodes.task[e]] += 1
        return seen[episodes.embodiment[e], episodes.task[e]] <= demos_per_task
      keep = [e for e in keep if among_first(e)]
    keep = keep[:max_episodes] if max_episodes > 0 else keep
    self.keep, self.skip_bad, self.bad = keep, skip_bad, set()
    self._position = {e: i for i, e in enumerate(keep)}  # of each episode in `keep` (its successor on damage)
    # Every step (with `pad='mask'`: every step that has at least one future pose to predict, t <= T - 2).
    self._last = last = 1 if spec.pad == "mask" else 0
    self.index = np.array([(e, t) for e in keep for t in range(max(episodes.lengths[e] - last, 0))], np.int64)
    if not len(self.index):
      raise ValueError(f"dataset {episodes.dir} split {episodes.split}: no selected episode has two or more steps "
                       f"(embodiments {list(only_embodiments) or 'all'}, max_episodes {max_episodes or 'all'}, "
                       f"demos_per_task {demos_per_task or 'all'}"
                       f"{f'; {len(episodes.unreadable)} unreadable episodes skipped' if episodes.unreadable else ''})")
    self._cache = collections.OrderedDict()

  def __len__(self):
    return len(self.index)

  def _episode(self, e):
    """Decoded episodes in an LRU cache bounded in bytes (windows of one episode share its decode)."""
    if e in self._cache:
      self._cache.move_to_end(e)
      return self._cache[e]
    ep = self.episodes.episode(e)
    # Mutual imitation: the other embodiments' mapped trajectories (IK included) are computed once per
    # decoded episode, beside it in the cache.
    ep["mapped"] = mapping_lib.map_episode(ep, self.space, self.mapping) if "action" in ep else {}
    self._cache[e] = ep
    self._cached_bytes += _nbytes(ep)
    while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
      self._cached_bytes -= _nbytes(self._cache.popitem(last=False)[1])
    return ep

  def groups(self) -> dict:
    """{(embodiment, task): positions in this source's window index}."""
    out = {}
    for i, e in enumerate(self.index[:, 0]):
      out.setdefault((self.episodes.embodiment[e], self.episodes.task[e]), []).append(i)
    return {k: np.asarray(v, np.int64) for k, v in sorted(out.items())}

  def _readable(self, e: int, t: int):
    """(episode, e, t, substituted): episode `e`, or with `skip_bad` the next readable one in selection order
    (step t clipped to its length) when `e` cannot be read."""
    for k in range(len(self.keep)):
      candidate = e if k == 0 else self.keep[(self._position[e] + k) % len(self.keep)]
      if candidate in self.bad:
        continue
      try:
        ep = self._episode(candidate)
      except sources.DamagedEpisodeError as err:
        if not self.skip_bad:
          raise
        self.bad.add(candidate)
        logging.warning("%s: skipped (config.data.skip_bad_episodes): windows of the next readable episode "
                        "take its place", err)
        continue
      return ep, candidate, min(t, max(self.episodes.lengths[candidate] - self._last - 1, 0)), k > 0
    raise sources.DamagedEpisodeError(f"dataset {self.episodes.dir} split {self.episodes.split}: none of its "
                                      f"{len(self.keep)} selected episodes can be read")

  def __getitem__(self, i):
    e, t = (int(x) for x in self.index[i])
    ep, e, t, substituted = self._readable(e, t)
    w = windows.make_window(ep, t, self.spec, self.space, self.normalizer)
    w["provenance"] = np.array([self.dataset_id, e, t], np.int32)  # which window: for NaN reports
    if self.skip_bad:
      w["skipped"] = np.int32(substituted)
    return w


class _Subset:
  """The windows of a source at `positions` (one (embodiment, task) group)."""

  def __init__(self, source: WindowSource, positions: np.ndarray):
    self.source, self.positions = source, positions

  def __len__(self):
    return len(self.positions)

  def __getitem__(self, i):
    return self.source[int(self.positions[i])]


def _nbytes(episode: dict) -> int:
  return sum(v.nbytes if isinstance(v, np.ndarray) else _nbytes(v) for v in episode.values()
             if isinstance(v, (np.ndarray, dict)))


@dataclasses.dataclass
class DatasetEntry:
  name: str
  path: str
  weight: float


def entries_from_config(data_dir: str, data_config) -> list[DatasetEntry]:
  """`config.data.mixture` {name: weight} under `config.data_dir` -> entries (checked)."""
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"config.data_dir={data_dir!r} does not exist (build it with python -m vam.data.build)")
  out = []
  for name, weight in data_config.mixture.items():
    if weight < 0:
      raise ValueError(f"config.data.mixture.{name}: weight {weight} must be >= 0")
    path = os.path.join(data_dir, name, data_config.version)
    out.append(DatasetEntry(name, path, float(weight)))
  if not any(e.weight > 0 for e in out):
    raise ValueError("config.data.mixture: at least one dataset needs a positive weight")
  return out  # weight 0: never sampled, but its normalisation statistics are used (e.g. for mapped slots)


class InputPipeline:
  """Opens the datasets of a mixture, builds the normaliser from their stored statistics."""

  def __init__(self, entries, spec: windows.WindowSpec, space: embodiment_lib.ActionSpace, split="train",
               camera="front", norm_mode="quantile", cache_mb: float = 256, latents: str | None = None,
               mapping: mapping_lib.Mapping | None = None, only_embodiments=(), max_episodes: int = 0,
               balance: str = "task", normalizer: embodiment_lib.Normalizer | None = None,
               norm_per_step: bool = False, max_restarts: int = -1, proprio_eef: bool = False,
               task_weights: dict | None = None, demos_per_task: int = 0, skip_bad: bool = False):
    """`latents`: the fingerprint of the autoencoder whose precomputed latents windows should carry;
    `mapping`: mutual imitation (windows also carry the other embodiments' mapped action slots). Entries of
    weight 0 only contribute normalisation statistics. `balance`: see the module docstring. `normalizer`: use
    these statistics (e.g. a checkpoint's) instead of the datasets' own. `task_weights`: task -> relative
    weight of its groups under `balance='task'` (unlisted tasks: 1). `skip_bad`: see WindowSource."""
    if balance not in BALANCES:
      raise ValueError(f"config.data.balance={balance!r}; valid: {list(BALANCES)}")
    self.balance = balance
    stats_only = [e for e in entries if e.weight <= 0]
    entries = [e for e in entries if e.weight > 0]
    self.entries, self.spec, self.space, self.split = entries, spec, space, split
    self.episodes = [sources.EpisodeSource(e.path, split, camera,
                                           latents_lib.directory(e.path, camera, latents) if latents else None,
                                           skip_unreadable=skip_bad)
                     for e in entries]
    self.unreadable = sum(len(src.unreadable) for src in self.episodes)
    for e, src in zip(entries, self.episodes):
      unreadable = set(src.unreadable)
      unknown = {m for i, m in enumerate(src.embodiment) if i not in unreadable} - set(space.embodiments)
      if unknown:
        raise ValueError(f"dataset {e.path}: embodiments {sorted(unknown)} are not in the action space "
                         f"{list(space.embodiments)}")
    # Real data (e.g. converted human video) has no simulator state: then no window carries it.
    self.without_privileged = [e.path for e, s in zip(entries, self.episodes) if not s.has_privileged]
    # Video-only datasets (no actions) sampled in the mixture: only a video model can learn from them.
    self.video_only = [e.path for e, s in zip(entries, self.episodes) if s.video_only and e.weight > 0]
    if self.without_privileged:
      self.spec = spec = dataclasses.replace(spec, privileged=False)
    self.stats = embodiment_lib.merge_stats(*[s.stats for s in self.episodes],
                                            *[stats_lib.read(e.path) for e in stats_only])
    self.normalizer = normalizer or embodiment_lib.Normalizer.from_stats(
        self.stats, space, spec.proprio_dim, norm_mode, horizon=spec.action_horizon, per_step=norm_per_step,
        proprio_eef=proprio_eef)
    if mapping is not None:
      missing = [n for n in space.embodiments if n not in self.normalizer.action_offset]
      if missing:
        raise ValueError(f"config.data.mapping maps into {missing}, which no dataset of config.data.mixture has "
                         "statistics for: list a dataset with them at weight 0")
    # The cache budget is per dataset and per worker process.
    self.sources = [WindowSource(s, spec, space, self.normalizer, i, cache_mb, mapping, tuple(only_embodiments),
                                 max_episodes, max_restarts, demos_per_task, skip_bad)
                    for i, s in enumerate(self.episodes)]
    self.task_weights = _task_weights(task_weights, balance, {t for s in self.sources for _, t in s.groups()})

  def dataset(self, batch_size: int, seed: int = 0, shard_index: int | None = None, shard_count: int | None = None,
              workers: int = 0, prefetch_buffer: int = 2) -> grain.IterDataset:
    """An infinite, deterministic (for a seed and shard), checkpointable iterator of per-host batches."""
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    parts, weights = [], []
    for i, src in enumerate(self.sources):
      groups = src.groups() if self.balance == "task" else {("all", "all"): np.arange(len(src))}
      share = np.array([self.task_weights.get(task, 1.0) for _, task in groups])
      share = share / share.sum()
      for j, ((group, positions), w) in enumerate(zip(groups.items(), share)):
        ds = grain.MapDataset.source(_Subset(src, positions))[shard_index::shard_count]
        if not len(ds):
          raise ValueError(f"dataset {self.entries[i].path}: shard {shard_index}/{shard_count} of {group} is empty")
        parts.append(ds.shuffle(seed=seed * 1000 + i * 100 + j).repeat())
        weights.append(self.entries[i].weight * float(w))
    mixed = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights=weights)
    it = mixed.to_iter_dataset().batch(batch_size, drop_remainder=True)
    if workers > 0:
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch_buffer))
    elif prefetch_buffer > 0:  # a background thread assembles the next batches while the device computes
      it = grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=prefetch_buffer)
    return it


def _task_weights(task_weights, balance: str, present: set) -> dict:
  """`config.data.task_weights`, checked against the tasks the datasets hold (`present`): a weight other than 1
  needs `balance='task'` and a task some dataset has (a typo would otherwise be silently ignored)."""
  task_weights = {t: float(w) for t, w in dict(task_weights or {}).items()}
  for task, w in task_weights.items():
    if not w > 0:
      raise ValueError(f"config.data.task_weights[{task!r}]={w!r}: weights must be > 0")
    if w != 1.0 and balance != "task":
      raise ValueError(f"config.data.task_weights={task_weights} needs config.data.balance='task' (is {balance!r})")
    if w != 1.0 and task not in present:
      raise ValueError(f"config.data.task_weights: unknown task {task!r} (no dataset of the mixture has it); "
                       f"tasks present: {sorted(present)}")
  return task_weights


def to_global(batch: dict, sharding) -> dict:
  """Per-host numpy batch -> global jax.Arrays laid out by `sharding` (multi-host ready)."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
