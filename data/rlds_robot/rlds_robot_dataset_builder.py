"""rlds_robot: a robot dataset in RLDS (Open-X style) standardised into an end-effector embodiment `rlds_<name>`."""

import types

import numpy as np
import tensorflow_datasets as tfds

from vam.data import converter, rlds_robot
from vam.data import stats as stats_lib

VERSION = "1.0.0"


def _f32(shape):
  return tfds.features.Tensor(shape=shape, dtype=np.float32)


class RldsRobot(converter.Converter, tfds.core.GeneratorBasedBuilder):
  """Episodes of an RLDS robot dataset in our layout (vam/data/rlds_robot.py): images of the named cameras,
  the end-effector pose (`eef`, `state` with the gripper opening), the commanded pose (`eef_target`) and our
  gripper command (`action`); metadata name the embodiment (`rlds_<name>`) and the source episode."""

  RELEASE_NOTES = {VERSION: "Initial release: RLDS robot datasets standardised to an end-effector embodiment."}
  VERSION = tfds.core.Version(VERSION)
  config_key = "config.datasets.rlds_robot"

  def _make_spec(self) -> rlds_robot.Spec:
    """The standardisation spec of config.datasets.rlds_robot (unknown keys refused by name)."""
    d = self._section
    fields = {f.name for f in rlds_robot.dataclasses.fields(rlds_robot.Spec)}
    unknown = sorted(set(d.keys()) - fields - {"name", "embodiments", "source_dir", "val_every"})
    if unknown:
      raise ValueError(f"config.datasets.rlds_robot: unknown keys {unknown}; valid: {sorted(fields)}")
    kw = {k: (tuple(tuple(x) if isinstance(x, (list, tuple)) else x for x in v) if isinstance(v, (list, tuple))
              else v) for k, v in d.items() if k in fields}
    kw["cameras"] = tuple(sorted(dict(d.cameras).items()))
    kw["image_size"] = self._image_size
    return rlds_robot.Spec(**kw)

  def _info(self) -> tfds.core.DatasetInfo:
    w, h = self._image_size
    cameras = list(dict(self._section.cameras)) if self.generation else ["front"]
    observation = {f"image_{c}": tfds.features.Tensor(shape=(h, w, 3), dtype=np.uint8) for c in cameras}
    observation.update(state=_f32((10,)), eef=_f32((9,)))
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "steps": tfds.features.Dataset({
                "observation": observation, "action": _f32((1,)), "eef_target": _f32((9,)),
                "language_instruction": tfds.features.Text(),
                "is_first": tfds.features.Scalar(dtype=np.bool_), "is_last": tfds.features.Scalar(dtype=np.bool_),
                "is_terminal": tfds.features.Scalar(dtype=np.bool_), "reward": tfds.features.Scalar(dtype=np.float32),
                "discount": tfds.features.Scalar(dtype=np.float32)}),
            "episode_metadata": dict(embodiment=tfds.features.Text(), task=tfds.features.Text(),
                                     source_episode=tfds.features.Text(),
                                     action_dim=tfds.features.Scalar(dtype=np.int32),
                                     state_dim=tfds.features.Scalar(dtype=np.int32))}),
        description=self.__doc__, supervised_keys=None)

  def _split_generators(self, dl_manager):
    root = self._section.get("source_dir", "")
    if not root:
      raise ValueError("config.datasets.rlds_robot.source_dir is empty: point it at a TFDS dataset directory "
                       "(the folder holding features.json)")
    self._spec = self._make_spec()
    try:
      source = tfds.builder_from_directory(root)
      self._sources = {split: source.as_data_source(split=split) for split in source.info.splits}
    except Exception as e:  # pylint: disable=broad-except  (TFDS raises many kinds; the message names them)
      raise ValueError(f"config.datasets.rlds_robot.source_dir={root!r}: not a readable TFDS dataset in "
                       f"array_record format ({type(e).__name__}: {e}); tfrecord datasets need TensorFlow to "
                       "read: re-save them as array_record first") from None
    items = [(split, i) for split in sorted(self._sources) for i in range(len(self._sources[split]))]
    if not items:
      raise ValueError(f"config.datasets.rlds_robot.source_dir={root!r}: no episodes")
    return self.split_generators(root, items, int(self._section.get("val_every", 10)))

  def _convert_item(self, item, split: str):
    source_split, i = item
    name = f"{self._root}[{source_split}][{i}]"
    spec = self._spec
    ep = self._timed_convert(rlds_robot.convert, self._sources[source_split][i], spec, name)
    T = len(ep["action"])
    if split == "train":
      stats_lib.accumulate(self._stats, types.SimpleNamespace(
          embodiment=spec.embodiment, length=T, steps={k: ep[k] for k in ("state", "eef", "eef_target", "action")}))
    steps = [dict(observation={**{f"image_{c}": im[t] for c, im in ep["images"].items()}, "state": ep["state"][t],
                               "eef": ep["eef"][t]},
                  action=ep["action"][t], eef_target=ep["eef_target"][t], language_instruction=ep["instruction"],
                  is_first=t == 0, is_last=t == T - 1, is_terminal=False, reward=0.0, discount=1.0)
             for t in range(T)]
    meta = dict(embodiment=spec.embodiment, task=spec.embodiment,  # one group for task balancing
                source_episode=f"{source_split}[{i}]", action_dim=1, state_dim=10)
    self._accept(split, f"{source_split}[{i}]")
    yield f"{source_split}_{i}", dict(steps=steps, episode_metadata=meta)
    return 1

  def normalization_stats(self) -> dict:
    return stats_lib.finalize(self._stats, action_names={self._spec.embodiment: ("gripper",)})
