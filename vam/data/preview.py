"""A preview video of recorded episodes, read back with plain TFDS (also a smoke test of the files)."""

import imageio.v2 as imageio
import numpy as np
import tensorflow_datasets as tfds


def episode_frames(dataset_dir: str, count: int, split: str = "train"):
  """Yields (frames (T, H, W, 3) uint8, text) for `count` episodes spread over the split."""
  source = tfds.builder_from_directory(dataset_dir).as_data_source(split=split)
  camera = None
  for i in np.linspace(0, len(source) - 1, num=min(count, len(source))).astype(int):
    ep = source[int(i)]
    steps = list(ep["steps"])
    camera = camera or next(k for k in steps[0]["observation"] if k.startswith("image_"))
    meta = ep["episode_metadata"]
    yield np.stack([s["observation"][camera] for s in steps]), f"{meta['embodiment'].decode()}: {steps[0]['language_instruction'].decode()}"


def write(dataset_dirs, path: str, per_dataset: int = 4, scale: int = 4, fps: int = 10) -> str:
  """Tiles `per_dataset` episodes of each dataset side by side (padded with their last frame)."""
  clips = [f for d in dataset_dirs for f, _ in episode_frames(d, per_dataset)]
  length = max(len(c) for c in clips)
  clips = [np.concatenate([c, np.repeat(c[-1:], length - len(c), 0)]) for c in clips]
  cols = min(4, len(clips))
  rows = -(-len(clips) // cols)
  blank = np.zeros_like(clips[0])
  clips += [blank] * (rows * cols - len(clips))
  grid = np.concatenate([np.concatenate(clips[r * cols:(r + 1) * cols], axis=2) for r in range(rows)], axis=1)
  grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
  imageio.mimwrite(path, list(grid), fps=fps, macro_block_size=1)
  return path
