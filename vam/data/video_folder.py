"""A folder of plain videos (no actions, no poses) -> image-only episodes for stage 1 (the video model).

Layout read: every video file (`VIDEO_EXTENSIONS`) at any depth under the source root. Instructions, all
optional, in this order: a `<stem>.txt` beside the video, an entry of `instructions.json` at the root
({"relative/path.mp4" or "relative/path": "text"}), else none (the empty instruction: the video model then
learns unconditioned). Frames are centre-cropped to a square, resized, and resampled from the file's own frame
rate (or `source_hz` where the container gives none or the config overrides it) to the control rate (nearest
frame), so a latent frame spans the same time as in the simulated data. `clip_seconds` > 0 cuts long videos
into episodes of that length (the last, shorter piece is kept if it has two or more steps).

Each episode's metadata names the embodiment the video shows (`embodiment`, e.g. human_hand for egocentric
human video): the video model's embodiment token. Bad files raise `video_io.EpisodeError`, naming the file.
"""

import dataclasses
import json
import os

import numpy as np

from vam.data import video_io

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".m4v")
INSTRUCTIONS_FILE = "instructions.json"


@dataclasses.dataclass(frozen=True)
class Options:
  image_size: tuple = (64, 64)  # (w, h) of the stored images
  control_hz: float = 10.0
  source_hz: float = 0.0  # 0: the file's own frame rate
  clip_seconds: float = 0.0  # 0: one episode per video

  def __post_init__(self):
    if not self.control_hz > 0 or self.source_hz < 0 or self.clip_seconds < 0:
      raise ValueError(f"config.datasets.video_folder: control_hz={self.control_hz} must be > 0, source_hz="
                       f"{self.source_hz} and clip_seconds={self.clip_seconds} >= 0")


def find_videos(root: str) -> list[str]:
  """Every video file under `root`, sorted by path."""
  if not os.path.isdir(root):
    raise ValueError(f"config.datasets.video_folder.source_dir={root!r} is not a directory")
  return sorted(os.path.join(folder, f) for folder, _, files in os.walk(root) for f in files
                if f.lower().endswith(VIDEO_EXTENSIONS))


def read_instructions(root: str) -> dict:
  """{relative path without extension: instruction} of `root/instructions.json` ({} without one)."""
  path = os.path.join(root, INSTRUCTIONS_FILE)
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      table = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not a readable JSON object of instructions ({e})") from None
  if not isinstance(table, dict):
    raise ValueError(f"{path}: expected a JSON object {{video path: instruction}}, got {type(table).__name__}")
  for key, value in table.items():
    if not isinstance(value, str):
      raise ValueError(f"{path}: entry {key!r}: the instruction must be a string, got {type(value).__name__}")
  return {os.path.splitext(k)[0] if k.lower().endswith(VIDEO_EXTENSIONS) else k: v for k, v in table.items()}


def instruction_for(video: str, root: str, table: dict) -> str:
  """The video's instruction: `<stem>.txt` beside it, else its `instructions.json` entry, else ''."""
  txt = os.path.splitext(video)[0] + ".txt"
  if os.path.exists(txt):
    try:
      with open(txt, encoding="utf-8") as f:
        return " ".join(f.read().split())
    except (OSError, UnicodeDecodeError) as e:
      raise video_io.EpisodeError(txt, "instruction", f"unreadable ({e})") from None
  return table.get(os.path.splitext(os.path.relpath(video, root))[0], "")


def convert(video: str, opts: Options) -> list[dict]:
  """One video -> its episodes [{images (T, h, w, 3) uint8, source_frames, source_hz, first_frame}]."""
  frames, fps, _ = video_io.read_video(video, opts.image_size)
  hz = opts.source_hz or fps
  if not hz:
    raise video_io.EpisodeError(video, "video", "the container gives no frame rate: set "
                                "config.datasets.video_folder.source_hz")
  if hz < opts.control_hz:
    raise video_io.EpisodeError(video, "video", f"{hz:g} frames/s is below config control_hz={opts.control_hz:g}")
  idx = video_io.resample(len(frames), hz, opts.control_hz)
  per_clip = int(round(opts.clip_seconds * opts.control_hz)) if opts.clip_seconds else len(idx)
  clips = [idx[i:i + per_clip] for i in range(0, len(idx), per_clip)]
  clips = [c for c in clips if len(c) >= 2]
  if not clips:
    raise video_io.EpisodeError(video, "video", f"{len(frames)} frames: fewer than two steps at "
                                f"{opts.control_hz:g} Hz")
  return [dict(images=frames[c], source_frames=int(c[-1] - c[0] + 1), source_hz=float(hz), first_frame=int(c[0]))
          for c in clips]
