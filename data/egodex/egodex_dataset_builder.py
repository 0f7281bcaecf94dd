"""egodex: EgoDex-layout human video with ARKit hand poses, converted to `human_hand` RLDS episodes."""

import os
import types

import numpy as np
import tensorflow_datasets as tfds

from vam.data import converter, egodex
from vam.data import stats as stats_lib

VERSION = "1.0.0"
KEYPOINT_NAMES = tuple(f"wrist_{a}" for a in ("x", "y", "z")) + tuple(f"wrist_r6d_{i}" for i in range(6)) + tuple(
    f"{f.lower()}_tip_{a}" for f in egodex.FINGERS for a in ("x", "y", "z"))


def _f32(shape):
  return tfds.features.Tensor(shape=shape, dtype=np.float32)


class Egodex(converter.Converter, tfds.core.GeneratorBasedBuilder):
  """Egocentric human video with 3-D hand poses (EgoDex layout) as `human_hand` episodes (vam/data/egodex.py).

  Steps carry the 24-D hand keypoints (wrist position, wrist 6D rotation, five fingertips) in the stated
  frame, the thumb knuckle, the wrist pose as `eef`/`state`, the next step's keypoints as `action`,
  `hand_valid` (tracking confidence above the threshold) and the camera pose; the metadata carries the
  source file, the hand, the frame and the camera intrinsics of the stored images. No robot actions, no
  simulator state (`privileged`).
  """

  RELEASE_NOTES = {VERSION: "Initial release: EgoDex-layout episodes converted per hand."}
  VERSION = tfds.core.Version(VERSION)
  config_key = "config.datasets.egodex"

  # ---- settings (a section of experiments/datasets.py) -----------------------------------------------
  def _options(self, side: str) -> egodex.Options:
    d = self._section
    return egodex.Options(hand=side, frame=d.frame, wrist_frame=d.wrist_frame,
                          wrist_rotation=tuple(d.wrist_rotation), source_hz=float(d.source_hz),
                          control_hz=float(d.control_hz), image_size=self._image_size,
                          min_confidence=float(d.min_confidence), frame_tolerance=int(d.frame_tolerance))

  def _sides(self) -> list:
    hands = self._section.hands
    if hands not in egodex.HANDS:
      raise ValueError(f"config.datasets.egodex.hands={hands!r}; valid: {list(egodex.HANDS)}")
    return list(egodex.SIDES) if hands == "both" else [hands]

  # ---- TFDS ----------------------------------------------------------------------------------------------
  def _info(self) -> tfds.core.DatasetInfo:
    w, h = self._image_size
    observation = {f"image_{self._camera}": tfds.features.Tensor(shape=(h, w, 3), dtype=np.uint8),
                   "state": _f32((9,)), "eef": _f32((9,)), "hand_keypoints": _f32((24,)), "thumb_knuckle": _f32((3,)),
                   "hand_valid": tfds.features.Scalar(dtype=np.bool_), "hand_confidence": tfds.features.Scalar(dtype=np.float32),
                   "camera_extrinsics": _f32((4, 4))}
    metadata = dict(embodiment=tfds.features.Text(), task=tfds.features.Text(), hand=tfds.features.Text(),
                    source_file=tfds.features.Text(), frame=tfds.features.Text(),
                    action_dim=tfds.features.Scalar(dtype=np.int32), state_dim=tfds.features.Scalar(dtype=np.int32),
                    source_frames=tfds.features.Scalar(dtype=np.int32),
                    source_hz=tfds.features.Scalar(dtype=np.float32), control_hz=tfds.features.Scalar(dtype=np.float32))
    c = self._camera
    metadata.update({f"camera_{c}_intrinsics": _f32((3, 3)), f"camera_{c}_extrinsics": _f32((4, 4)),
                     f"camera_{c}_source_intrinsics": _f32((3, 3))})
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "steps": tfds.features.Dataset({
                "observation": observation, "action": _f32((24,)), "eef_target": _f32((9,)),
                "language_instruction": tfds.features.Text(),
                "is_first": tfds.features.Scalar(dtype=np.bool_), "is_last": tfds.features.Scalar(dtype=np.bool_),
                "is_terminal": tfds.features.Scalar(dtype=np.bool_), "reward": tfds.features.Scalar(dtype=np.float32),
                "discount": tfds.features.Scalar(dtype=np.float32)}),
            "episode_metadata": metadata}),
        description=self.__doc__, supervised_keys=None)

  def _split_generators(self, dl_manager):
    root = self._section.get("source_dir", "")
    if not root:
      raise ValueError("config.datasets.egodex.source_dir is empty: point it at a folder of EgoDex episodes "
                       "(--config.datasets.egodex.source_dir=PATH)")
    pairs, unpaired = egodex.find_episodes(root)
    for path, problem in unpaired:
      self._reject(path, "file", problem)
    if not pairs:
      raise ValueError(f"config.datasets.egodex.source_dir={root!r}: no episode (an .hdf5 with an .mp4 beside it)")
    return self.split_generators(root, pairs, int(self._section.get("val_every", 10)))

  def _convert_item(self, pair, split: str):
    """Yields the (key, example) of each selected hand of one episode; returns how many. The file is refused
    (EpisodeError) if any selected hand cannot be converted: a damaged file is not trusted for the other."""
    hdf5, mp4 = pair
    rel = os.path.relpath(os.path.splitext(hdf5)[0], self._root)
    converted = [(side, self._timed_convert(egodex.convert, hdf5, mp4, self._options(side))) for side in self._sides()]
    for side, ep in converted:
      if split == "train":
        self._accumulate(ep)
      self._accept(split, f"{rel}:{side}")
      yield f"{rel}_{side}", self._example(ep, rel, side)
    return len(converted)

  def _example(self, ep: dict, rel: str, side: str) -> dict:
    T, c = len(ep["hand_keypoints"]), self._camera
    steps = [dict(observation={f"image_{c}": ep["images"][t], "state": ep["state"][t], "eef": ep["eef"][t],
                               "hand_keypoints": ep["hand_keypoints"][t], "thumb_knuckle": ep["thumb_knuckle"][t],
                               "hand_valid": bool(ep["hand_valid"][t]), "hand_confidence": float(ep["hand_confidence"][t]),
                               "camera_extrinsics": ep["camera_extrinsics"][t]},
                  action=ep["action"][t], eef_target=ep["eef_target"][t], language_instruction=ep["instruction"],
                  is_first=t == 0, is_last=t == T - 1, is_terminal=False, reward=0.0, discount=1.0)
             for t in range(T)]
    d = self._section
    meta = dict(embodiment="human_hand", task=ep["task"], hand=side, source_file=rel, frame=d.frame, action_dim=24,
                state_dim=9, source_frames=ep["source_frames"], source_hz=float(d.source_hz),
                control_hz=float(d.control_hz))
    meta.update({f"camera_{c}_intrinsics": ep["intrinsics"], f"camera_{c}_extrinsics": ep["camera_extrinsics"][0],
                 f"camera_{c}_source_intrinsics": ep["source_intrinsics"]})
    return dict(steps=steps, episode_metadata=meta)

  def _accumulate(self, ep: dict) -> None:
    """Statistics over the confidently tracked stretches only (two or more valid steps in a row)."""
    valid = np.concatenate([[False], ep["hand_valid"], [False]])
    edges = np.flatnonzero(np.diff(valid.astype(np.int8)))
    stretches = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= 2]
    for start, stop in stretches:
      part = {k: ep[k][start:stop] for k in ("hand_keypoints", "state", "eef", "eef_target", "action")}
      stats_lib.accumulate(self._stats, types.SimpleNamespace(embodiment="human_hand", length=stop - start, steps=part))
    if len(stretches) > 1:  # `num_episodes` counts episodes, not the stretches of one
      self._stats["human_hand"]["episodes"] -= len(stretches) - 1

  # ---- what vam.data.build stores beside the dataset ----------------------------------------------------
  def normalization_stats(self) -> dict:
    return stats_lib.finalize(self._stats, action_names={"human_hand": KEYPOINT_NAMES})
