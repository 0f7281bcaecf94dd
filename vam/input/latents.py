"""Precomputed autoencoder latents stored beside a dataset (written by `python -m vam.train.latents`).

    <dataset dir>/latents/<camera>-<fingerprint>/
      meta.json              autoencoder workdir/step/fingerprint/config, latent shape, dtype, episode counts
      <split>.npy            (total steps, h, w, C) float16: the latent of every step, episodes concatenated
      <split>_offsets.npy    (episodes + 1,) int64: episode i is rows offsets[i]:offsets[i + 1]

The latent of step s encodes frames s-tf+1 .. s (clamped at the episode start), so a window can pick the
latents of any step (vam/input/windows.py). `fingerprint` is a hash of the autoencoder's parameters: latents
are only used with the very autoencoder that made them. Files are written to a temporary folder and renamed.
"""

import json
import os
import tempfile

import numpy as np

from vam import atomic

LATENTS_DIR = "latents"


def directory(dataset_dir: str, camera: str, fingerprint: str) -> str:
  return os.path.join(dataset_dir, LATENTS_DIR, f"{camera}-{fingerprint}")


class StoredLatents:
  """Read side: memory-mapped latents of one split, checked against the episodes they belong to."""

  def __init__(self, path: str, split: str, lengths: np.ndarray):
    meta_file = os.path.join(path, "meta.json")
    if not os.path.exists(meta_file):
      raise FileNotFoundError(f"no precomputed latents in {path!r} (make them with python -m vam.train.latents, "
                              "or set config.data.use_latents=False to encode frames on the fly)")
    with open(meta_file) as f:
      self.meta = json.load(f)
    data_file, offsets_file = os.path.join(path, f"{split}.npy"), os.path.join(path, f"{split}_offsets.npy")
    if not os.path.exists(data_file):
      raise FileNotFoundError(f"latents {path!r} have no split {split!r} ({data_file} is missing)")
    self.data = np.load(data_file, mmap_mode="r")
    self.offsets = np.load(offsets_file)
    stored = np.diff(self.offsets)
    if len(stored) != len(lengths) or not np.array_equal(stored, lengths):
      raise ValueError(f"latents {data_file} do not match their dataset: {len(stored)} episodes "
                       f"({int(stored.sum())} steps) stored, the dataset split has {len(lengths)} "
                       f"({int(np.sum(lengths))} steps); rebuild them with python -m vam.train.latents")

  def episode(self, i: int) -> np.ndarray:
    return np.asarray(self.data[self.offsets[i]:self.offsets[i + 1]], np.float32)


def write(path: str, splits: dict, meta: dict) -> None:
  """`splits`: {split: list of per-episode (T, h, w, C) arrays}. Atomic: written into a temporary folder that
  then replaces `path` in one step (vam/atomic.py), so the stored latents are always the old or the new ones."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f".{os.path.basename(path)}.")
  for split, episodes in splits.items():
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in episodes])]).astype(np.int64)
    np.save(os.path.join(tmp, f"{split}.npy"), np.concatenate(episodes).astype(np.float16))
    np.save(os.path.join(tmp, f"{split}_offsets.npy"), offsets)
    meta = dict(meta, **{f"{split}_episodes": len(episodes), f"{split}_steps": int(offsets[-1])})
  with open(os.path.join(tmp, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
  atomic.replace_dir(tmp, path)
