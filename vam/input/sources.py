"""Random access to the episodes of one dataset split (TFDS array_record via `tfds.data_source`).

Validates the dataset against what the pipeline reads and fails naming the file and field.
"""

import glob
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from vam import log as log_lib
from vam.data import stats as stats_lib
from vam.input import latents as latents_lib

logging = log_lib.get("vam.input")

REQUIRED_STEP_FIELDS = ("observation/state", "observation/eef", "action", "eef_target", "language_instruction",
                        "is_first", "is_last")
REQUIRED_METADATA = ("embodiment", "action_dim", "state_dim")
# A dataset without actions (data/video_folder: plain videos) is video-only: images and instructions.
VIDEO_ONLY_STEP_FIELDS = ("language_instruction", "is_first", "is_last")
VIDEO_ONLY_METADATA = ("embodiment",)


def _feature_paths(features: dict, prefix="") -> set:
  paths = set()
  for k, v in features.items():
    paths.add(prefix + k)
    inner = v.get("featuresDict", {}).get("features") if isinstance(v, dict) else None
    if inner is None and isinstance(v, dict) and "sequence" in v:
      inner = v["sequence"]["feature"].get("featuresDict", {}).get("features")
    if inner:
      paths |= _feature_paths(inner, prefix + k + "/")
  return paths


class DamagedEpisodeError(ValueError):
  """An episode that cannot be read or decoded, or holds non-finite values (the message names the dataset,
  split, episode and field)."""


class EpisodeSource:
  """One split of one dataset: `len()`, per-episode lengths, and `episode(i)` as numpy arrays."""

  def __init__(self, dataset_dir: str, split: str = "train", camera: str = "front", latents: str | None = None,
               skip_unreadable: bool = False):
    """`latents`: a folder of precomputed latents (vam/input/latents.py) to return with each episode.
    `skip_unreadable`: a record that cannot be read (a truncated or corrupt shard) becomes an episode of
    length 0, listed in `unreadable`, with a warning, instead of an error naming it."""
    if not os.path.isdir(dataset_dir):
      raise FileNotFoundError(f"dataset directory {dataset_dir!r} does not exist (build it with vam.data.build)")
    features_file = os.path.join(dataset_dir, "features.json")
    if not os.path.exists(features_file):
      raise FileNotFoundError(f"{dataset_dir!r} is not a TFDS dataset: no features.json")
    with open(features_file) as f:
      top = json.load(f)["featuresDict"]["features"]
    paths = _feature_paths(top)
    self.image_key = f"observation/image_{camera}"
    self.video_only = "steps/action" not in paths
    step_fields, metadata = ((VIDEO_ONLY_STEP_FIELDS, VIDEO_ONLY_METADATA) if self.video_only else
                             (REQUIRED_STEP_FIELDS, REQUIRED_METADATA))
    for field in step_fields + (self.image_key,):
      if f"steps/{field}" not in paths:
        raise ValueError(f"dataset {dataset_dir}: field steps/{field} is missing ({features_file})")
    for field in metadata:
      if f"episode_metadata/{field}" not in paths:
        raise ValueError(f"dataset {dataset_dir}: field episode_metadata/{field} is missing ({features_file})")
    self.has_hand = "steps/observation/hand_keypoints" in paths
    self.has_privileged = "steps/observation/privileged" in paths
    self.has_hand_valid = "steps/observation/hand_valid" in paths
    self.dir, self.split, self.camera = dataset_dir, split, camera
    builder = tfds.builder_from_directory(dataset_dir)
    if split not in builder.info.splits:
      raise ValueError(f"dataset {dataset_dir}: no split {split!r}; splits: {list(builder.info.splits)}")
    try:
      self.source = builder.as_data_source(split=split)
    except Exception as e:  # pylint: disable=broad-except  (array_record/riegeli raise RuntimeError, OSError...)
      raise ValueError(f"dataset {dataset_dir} split {split}: its files cannot be opened ({self._files()}): "
                       f"{' '.join(str(e).split())[:300]}") from None
    self.stats = stats_lib.read(dataset_dir)
    records, self.unreadable = [], []
    for i in range(len(self.source)):
      try:
        records.append(self._record(i))
      except DamagedEpisodeError as e:
        if not skip_unreadable:
          raise
        logging.warning("%s: skipped (config.data.skip_bad_episodes)", e)
        records.append(None)
        self.unreadable.append(i)
    metas = [r["episode_metadata"] if r is not None else {} for r in records]
    self.embodiment = [m["embodiment"].decode() if "embodiment" in m else "" for m in metas]
    self.task = [m["task"].decode() if "task" in m else "" for m in metas]
    self.restarts = [int(m["restarts"]) if "restarts" in m else 0 for m in metas]  # the expert's start-overs
    self.lengths = np.array([len(r["steps"]) if r is not None else 0 for r in records], np.int64)
    self.latents = latents_lib.StoredLatents(latents, split, self.lengths) if latents else None

  def __len__(self):
    return len(self.source)

  def _files(self) -> str:
    files = sorted(glob.glob(os.path.join(self.dir, f"*-{self.split}.array_record*")))
    return ", ".join(os.path.basename(f) for f in files) or "no array_record files"

  def _record(self, i: int):
    """Episode record `i`; a truncated or corrupt shard becomes an error naming the dataset, split, episode
    and files (not the record library's bare message)."""
    try:
      return self.source[int(i)]
    except Exception as e:  # pylint: disable=broad-except  (riegeli: RuntimeError; decoding: ValueError ...)
      raise DamagedEpisodeError(f"dataset {self.dir} split {self.split} episode {i}: the record cannot be read "
                       f"(truncated or corrupt file? {self._files()}): {' '.join(str(e).split())[:300]}") from None

  def episode(self, i: int) -> dict:
    """All steps of episode `i`: images (T, H, W, 3) uint8; state/eef/action float32 at their true width
    (video-only datasets: images, instruction and embodiment only)."""
    ep = self._record(i)
    meta = ep["episode_metadata"]
    try:
      steps = list(ep["steps"])
    except Exception as e:  # pylint: disable=broad-except  (a step that does not decode: wrong shape, damage)
      raise DamagedEpisodeError(f"dataset {self.dir} split {self.split} episode {i}: its steps cannot be decoded "
                       f"({' '.join(str(e).split())[:300]})") from None
    obs = [s["observation"] for s in steps]
    out = dict(embodiment=meta["embodiment"].decode(), instruction=steps[0]["language_instruction"].decode(),
               images=np.stack([o[f"image_{self.camera}"] for o in obs]))
    if self.latents is not None:
      out["latents"] = self.latents.episode(int(i))
    if self.video_only:
      return out
    a_dim, s_dim = int(meta["action_dim"]), int(meta["state_dim"])
    out.update(state=np.stack([o["state"] for o in obs])[:, :s_dim].astype(np.float32),
               eef=np.stack([o["eef"] for o in obs]).astype(np.float32),
               action=np.stack([s["action"] for s in steps])[:, :a_dim].astype(np.float32),
               eef_target=np.stack([s["eef_target"] for s in steps]).astype(np.float32))
    if self.has_privileged:
      out["privileged"] = np.stack([o["privileged"] for o in obs]).astype(np.float32)
    if self.has_hand:
      out["hand_keypoints"] = np.stack([o["hand_keypoints"] for o in obs]).astype(np.float32)
    if self.has_hand_valid:  # real hand tracking: steps tracked below the confidence threshold
      out["hand_valid"] = np.array([bool(o["hand_valid"]) for o in obs])
    for key in ("state", "eef", "eef_target", "action", "hand_keypoints"):
      if key in out and not np.isfinite(out[key]).all():
        raise DamagedEpisodeError(f"dataset {self.dir} split {self.split} episode {i}: non-finite values in {key}")
    return out
