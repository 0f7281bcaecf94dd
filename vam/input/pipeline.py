"""grain pipeline: per-dataset windows (shuffled per epoch, sharded per host) -> weighted mixture -> batches.

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
from vam.input import latents as latents_lib
from vam.input import normalize, sources, windows


class WindowSource:
  """grain random-access source: index i -> one training window (plus its provenance)."""

  def __init__(self, episodes: sources.EpisodeSource, spec: windows.WindowSpec, space, normalizer, dataset_id: int,
               cache_mb: float = 256):
    self.episodes, self.spec, self.space, self.normalizer, self.dataset_id = episodes, spec, space, normalizer, dataset_id
    self.cache_bytes, self._cached_bytes = cache_mb * 2 ** 20, 0
    # Every step that has at least one future pose to predict (t <= T - 2).
    self.index = np.array([(e, t) for e, T in enumerate(episodes.lengths) for t in range(max(T - 1, 0))], np.int64)
    if not len(self.index):
      raise ValueError(f"dataset {episodes.dir} split {episodes.split}: no episode has two or more steps")
    self._cache = collections.OrderedDict()

  def __len__(self):
    return len(self.index)

  def _episode(self, e):
    """Decoded episodes in an LRU cache bounded in bytes (windows of one episode share its decode)."""
    if e in self._cache:
      self._cache.move_to_end(e)
      return self._cache[e]
    ep = self.episodes.episode(e)
    self._cache[e] = ep
    self._cached_bytes += _nbytes(ep)
    while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
      self._cached_bytes -= _nbytes(self._cache.popitem(last=False)[1])
    return ep

  def __getitem__(self, i):
    e, t = (int(x) for x in self.index[i])
    w = windows.make_window(self._episode(e), t, self.spec, self.space, self.normalizer)
    w["provenance"] = np.array([self.dataset_id, e, t], np.int32)  # which window: for NaN reports
    return w


def _nbytes(episode: dict) -> int:
  return sum(v.nbytes for v in episode.values() if isinstance(v, np.ndarray))


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
  return [e for e in out if e.weight > 0]


class InputPipeline:
  """Opens the datasets of a mixture, builds the normaliser from their stored statistics."""

  def __init__(self, entries, spec: windows.WindowSpec, space: embodiment_lib.ActionSpace, split="train",
               camera="front", norm_mode="quantile", cache_mb: float = 256, latents: str | None = None):
    """`latents`: the fingerprint of the autoencoder whose precomputed latents windows should carry."""
    self.entries, self.spec, self.space, self.split = entries, spec, space, split
    self.episodes = [sources.EpisodeSource(e.path, split, camera,
                                           latents_lib.directory(e.path, camera, latents) if latents else None)
                     for e in entries]
    for e, src in zip(entries, self.episodes):
      unknown = set(src.embodiment) - set(space.embodiments)
      if unknown:
        raise ValueError(f"dataset {e.path}: embodiments {sorted(unknown)} are not in the action space "
                         f"{list(space.embodiments)}")
    self.stats = normalize.merge_stats(*[s.stats for s in self.episodes])
    self.normalizer = normalize.Normalizer(self.stats, space, spec.proprio_dim, norm_mode)
    # The cache budget is per dataset and per worker process.
    self.sources = [WindowSource(s, spec, space, self.normalizer, i, cache_mb) for i, s in enumerate(self.episodes)]

  def dataset(self, batch_size: int, seed: int = 0, shard_index: int | None = None, shard_count: int | None = None,
              workers: int = 0, prefetch_buffer: int = 2) -> grain.IterDataset:
    """An infinite, deterministic (for a seed and shard), checkpointable iterator of per-host batches."""
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    parts = []
    for i, src in enumerate(self.sources):
      ds = grain.MapDataset.source(src)[shard_index::shard_count]
      if not len(ds):
        raise ValueError(f"dataset {self.entries[i].path}: shard {shard_index}/{shard_count} is empty")
      parts.append(ds.shuffle(seed=seed * 1000 + i).repeat())
    weights = [e.weight for e in self.entries]
    mixed = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights=weights)
    it = mixed.to_iter_dataset().batch(batch_size, drop_remainder=True)
    if workers > 0:
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch_buffer))
    elif prefetch_buffer > 0:  # a background thread assembles the next batches while the device computes
      it = grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=prefetch_buffer)
    return it


def to_global(batch: dict, sharding) -> dict:
  """Per-host numpy batch -> global jax.Arrays laid out by `sharding` (multi-host ready)."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
