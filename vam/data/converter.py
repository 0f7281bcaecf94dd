"""What the dataset builders of real data share (data/egodex, data/video_folder): splits over a folder of
source files that survive bad files, and the report of what was accepted and refused.

A builder mixes `Converter` into its `tfds.core.GeneratorBasedBuilder`, lists its source items (sorted) and
implements `_convert_item(item, split)`: a generator of (key, example) that raises
`video_io.EpisodeError` for a bad item. `split_generators(items, every)` returns TFDS's split generators.
"""

import sys
import time

from vam.data import video_io


class Converter:
  """Split assignment, rejections and throughput accounting for a builder of converted source files."""

  config_key = "config.datasets.?"  # how errors name the builder's settings

  def __init__(self, *, generation=None, **kwargs):
    """`generation`: the build config with this dataset's section as `generation.dataset` (vam.data.build)."""
    self.generation = generation
    self._stats = {}  # streaming statistics of the train split (vam.data.stats.accumulate)
    self._rejected, self._accepted, self._taken = [], {}, set()
    self._frames = self._seconds = 0.0
    self._root = ""
    super().__init__(**kwargs)

  @property
  def _section(self):
    return self.generation.dataset

  @property
  def _camera(self) -> str:
    """The primary camera's name (the first of the build config's cameras)."""
    return list(self.generation.cameras)[0] if self.generation else "front"

  @property
  def _image_size(self) -> tuple:
    """(w, h) of the stored images."""
    return tuple(self.generation.image_size) if self.generation else (64, 64)

  def split_generators(self, root: str, items: list, every: int) -> dict:
    """val first (TFDS writes the splits in this order): every `every`-th item (fewer items: the last), and
    where one is refused the next good one (near the end: the closest earlier one), so a bad file never
    leaves the val split short while good ones remain; train: all the others. `every` 0: no val split."""
    self._root = root
    splits = {"val": self._generate_examples(items, "val", every)} if every > 0 else {}
    splits["train"] = self._generate_examples(items, "train", every)
    return splits

  def _generate_examples(self, items, split: str, every: int):
    if split == "val":
      picks = {i for i in range(len(items)) if (i + 1) % every == 0} or ({len(items) - 1} if len(items) > 1 else set())
      owed = 0
      for i, item in enumerate(items):
        owed += i in picks
        if owed:
          self._taken.add(item)
          owed -= yield from self._try(item, "val")
      for item in reversed(items):  # refused picks near the end: the closest earlier items instead
        if owed <= 0:
          break
        if item not in self._taken:
          self._taken.add(item)
          owed -= yield from self._try(item, "val")
    else:
      for item in items:
        if item not in self._taken:
          yield from self._try(item, "train")
    if not self._accepted.get(split):
      hint = "; set val_every=0 for no val split" if split == "val" else ""
      raise ValueError(f"{self.config_key} (source_dir={self._root!r}, val_every={every}): no {split} episode "
                       f"could be converted; rejected: {self._rejected[:5]}{hint}")

  def _try(self, item, split: str):
    """Yields the item's examples; returns 1 if any was accepted, 0 if it was refused."""
    try:
      accepted = yield from self._convert_item(item, split)
    except video_io.EpisodeError as e:
      self._reject(e.path, e.key, e.problem)
      return 0
    return int(bool(accepted))

  def _convert_item(self, item, split: str):
    raise NotImplementedError

  def _timed_convert(self, fn, *args):
    """Runs one conversion, adding its source frames (`source_frames` of the result) and time to the report."""
    t0 = time.time()
    ep = fn(*args)
    self._seconds += time.time() - t0
    self._frames += ep["source_frames"]
    return ep

  def _accept(self, split: str, name: str):
    self._accepted.setdefault(split, []).append(name)

  def _reject(self, path, key, problem):
    self._rejected.append(dict(file=path, key=key, problem=problem))
    print(f"{self.name}: skipped {path}: {key}: {problem}", file=sys.stderr, flush=True)

  def conversion_report(self) -> dict:
    """What vam.data.build writes beside the dataset as conversion_report.json."""
    return dict(source_dir=self._root, accepted={k: len(v) for k, v in self._accepted.items()},
                episodes=self._accepted, rejected=self._rejected, source_frames=int(self._frames),
                convert_seconds=round(self._seconds, 3),
                source_frames_per_s=round(self._frames / self._seconds, 1) if self._seconds else None)
