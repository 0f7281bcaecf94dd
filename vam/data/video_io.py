"""Reading source videos for converters of real data (data/egodex, data/video_folder): ffmpeg decode, centre
square crop and area resize, the matching intrinsics, and nearest-frame rate conversion."""

import logging

import numpy as np


class EpisodeError(ValueError):
  """A bad source file: `path` and `key` name what is wrong (a converter records it and goes on)."""

  def __init__(self, path: str, key: str, problem: str):
    self.path, self.key, self.problem = path, key, problem
    super().__init__(f"{path}: {key}: {problem}")


def read_video(path: str, size: tuple) -> tuple[np.ndarray, float, tuple]:
  """Frames (M, h, w, 3) uint8 centre-cropped to a square and resized to `size` (w, h) by ffmpeg, the video's
  frame rate (0 where the container does not say) and its source (width, height)."""
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  w, h = size
  crop = "crop='min(iw,ih)':'min(iw,ih)'"
  logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)  # it warns that the output size is not the source's
  try:
    gen = imageio_ffmpeg.read_frames(path, output_params=["-vf", f"{crop},scale={w}:{h}:flags=area"])
    meta = next(gen)
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
  except (RuntimeError, OSError, StopIteration, ValueError) as e:
    raise EpisodeError(path, "video", f"cannot be decoded ({str(e).strip().splitlines()[-1] if str(e) else e})") from None
  if not frames:
    raise EpisodeError(path, "video", "has no frames")
  return np.stack(frames), float(meta.get("fps", 0.0) or 0.0), tuple(meta["source_size"])


def crop_intrinsics(k: np.ndarray, source_size: tuple, size: tuple) -> np.ndarray:
  """The 3x3 intrinsics of `read_video`'s images: centre square crop of the source, then a resize to `size`."""
  (sw, sh), (w, h) = source_size, size
  s = min(sw, sh)
  out = np.array(k, np.float64)
  out[0, 2] -= (sw - s) / 2
  out[1, 2] -= (sh - s) / 2
  out[0] *= w / s
  out[1] *= h / s
  out[2] = (0, 0, 1)
  return out


def resample(n: int, source_hz: float, control_hz: float) -> np.ndarray:
  """Indices of the source frames that become control steps (the nearest frame to each control time)."""
  ratio = source_hz / control_hz
  idx = np.round(np.arange(int(np.floor((n - 1) / ratio)) + 1) * ratio).astype(np.int64)
  return idx[idx < n]
