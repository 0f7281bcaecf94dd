"""video_folder: a folder of plain videos (optional instructions) as image-only episodes for stage 1."""

import os

import numpy as np
import tensorflow_datasets as tfds

from vam.data import converter, video_folder
from vam.sim import embodiments

VERSION = "1.0.0"


class VideoFolder(converter.Converter, tfds.core.GeneratorBasedBuilder):
  """Videos without actions or poses (vam/data/video_folder.py): steps carry the image and the instruction
  only; the metadata the embodiment the videos show, the source file, its frame rate and the clip's first
  frame. The input pipeline reads such a dataset as video-only: stage 1 trains on it, action models refuse it.
  """

  RELEASE_NOTES = {VERSION: "Initial release: a folder of videos, image-only episodes."}
  VERSION = tfds.core.Version(VERSION)
  config_key = "config.datasets.video_folder"

  def _info(self) -> tfds.core.DatasetInfo:
    w, h = self._image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "steps": tfds.features.Dataset({
                "observation": {f"image_{self._camera}": tfds.features.Tensor(shape=(h, w, 3), dtype=np.uint8)},
                "language_instruction": tfds.features.Text(),
                "is_first": tfds.features.Scalar(dtype=np.bool_), "is_last": tfds.features.Scalar(dtype=np.bool_),
                "is_terminal": tfds.features.Scalar(dtype=np.bool_)}),
            "episode_metadata": dict(embodiment=tfds.features.Text(), task=tfds.features.Text(),
                                     source_file=tfds.features.Text(),
                                     source_hz=tfds.features.Scalar(dtype=np.float32),
                                     control_hz=tfds.features.Scalar(dtype=np.float32),
                                     first_frame=tfds.features.Scalar(dtype=np.int32))}),
        description=self.__doc__, supervised_keys=None)

  def _split_generators(self, dl_manager):
    d = self._section
    root = d.get("source_dir", "")
    if not root:
      raise ValueError("config.datasets.video_folder.source_dir is empty: point it at a folder of videos "
                       "(--config.datasets.video_folder.source_dir=PATH)")
    if d.embodiment not in embodiments.EMBODIMENTS:
      raise ValueError(f"config.datasets.video_folder.embodiment={d.embodiment!r}; valid: "
                       f"{list(embodiments.EMBODIMENTS)}")
    self._opts = video_folder.Options(image_size=self._image_size, control_hz=float(d.control_hz),
                                      source_hz=float(d.source_hz), clip_seconds=float(d.clip_seconds))
    self._instructions = video_folder.read_instructions(root)
    videos = video_folder.find_videos(root)
    if not videos:
      raise ValueError(f"config.datasets.video_folder.source_dir={root!r}: no video file "
                       f"({', '.join(video_folder.VIDEO_EXTENSIONS)})")
    return self.split_generators(root, videos, int(d.get("val_every", 10)))

  def _convert_item(self, video: str, split: str):
    rel = os.path.relpath(video, self._root)
    instruction = video_folder.instruction_for(video, self._root, self._instructions)

    def run():
      clips = video_folder.convert(video, self._opts)
      return dict(clips=clips, source_frames=sum(c["source_frames"] for c in clips))
    clips = self._timed_convert(run)["clips"]
    task = os.path.basename(os.path.dirname(rel)) or os.path.splitext(os.path.basename(rel))[0]
    for k, clip in enumerate(clips):
      T = len(clip["images"])
      steps = [dict(observation={f"image_{self._camera}": clip["images"][t]}, language_instruction=instruction,
                    is_first=t == 0, is_last=t == T - 1, is_terminal=False) for t in range(T)]
      meta = dict(embodiment=self._section.embodiment, task=task, source_file=rel, source_hz=clip["source_hz"],
                  control_hz=self._opts.control_hz, first_frame=clip["first_frame"])
      self._accept(split, f"{rel}:{k}")
      yield f"{rel}_{k}", dict(steps=steps, episode_metadata=meta)
    return len(clips)

  def normalization_stats(self) -> dict:
    return {}  # no actions, states or poses: nothing to normalise
