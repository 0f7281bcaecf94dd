"""EgoDex conversion throughput: source frames/s of `vam.data.egodex.convert` on EgoDex-sized episodes.

    python -m benchmarks.egodex_convert --out benchmarks/results/egodex_convert.json [--seconds 10]

Writes one synthetic episode in the EgoDex layout at EgoDex's own size (1920x1080 H.264 at 30 Hz; a textured
scene panning under a moving hand-sized blob, so the decoder does real work; both hands' ARKit joints as a
smooth random walk), then times, in one run:
  read_poses     the HDF5 pose reading and checks alone (one hand)
  read_video     ffmpeg decode + centre crop + area resize alone, per output size
  convert        the whole conversion of one hand, per output size (what the dataset builder runs per hand)
  video_folder   the same file as a plain video (data/video_folder: decode, resize, 30 -> 10 Hz), 64x64
Frames/s count source (30 Hz) frames; the builder converts each selected hand separately, so `hands=both`
costs twice the `convert` time per episode.
"""

import argparse
import os
import tempfile
import time

import h5py
import imageio.v2 as imageio
import numpy as np

from benchmarks import report
from vam.data import egodex, video_folder, video_io


def _pose(rot, pos):
  m = np.zeros(pos.shape[:-1] + (4, 4))
  m[..., :3, :3], m[..., :3, 3], m[..., 3, 3] = rot, pos, 1.0
  return m


def write_synthetic(folder: str, seconds: float, size=(1920, 1080), hz=30.0) -> tuple[str, str]:
  """One EgoDex-layout episode: `folder/0.mp4` + `folder/0.hdf5` (every joint of both hands)."""
  rng = np.random.default_rng(0)
  n = int(seconds * hz)
  w, h = size
  walk = lambda scale: np.cumsum(rng.normal(scale=scale, size=(n, 3)), axis=0)
  names = {"camera"}
  with h5py.File(os.path.join(folder, "0.hdf5"), "w") as f:
    f["camera/intrinsic"] = np.array([[1400.0, 0, w / 2], [0, 1400.0, h / 2], [0, 0, 1]], np.float32)
    f["transforms/camera"] = _pose(np.eye(3), walk(0.002)).astype(np.float32)
    for side, y in (("right", 0.15), ("left", -0.15)):
      wrist = walk(0.004) + [y, -0.3, -0.5]
      joints = {f"{side}Hand": wrist}
      for i, finger in enumerate(egodex.FINGERS):
        for j, part in enumerate(("Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip")):
          joints[f"{side}{finger}{part}"] = wrist + [0.02 * (i - 2), 0.0, -0.02 * (j + 1)]
      for name, pos in joints.items():
        f[f"transforms/{name}"] = _pose(np.eye(3), pos).astype(np.float32)
        f[f"confidences/{name}"] = rng.uniform(0.6, 1.0, n).astype(np.float32)
        names.add(name)
    f.attrs["llm_description"] = "pick up the cup and put it on the shelf"
    f.attrs["task"] = "synthetic"
  texture = rng.integers(0, 256, size=(h // 8 + 40, w // 8 + 40, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
  yy, xx = np.mgrid[:h, :w]
  with imageio.get_writer(os.path.join(folder, "0.mp4"), fps=hz, codec="libx264", quality=7,
                          macro_block_size=1) as out:
    for t in range(n):
      frame = texture[t % 40: t % 40 + h, (2 * t) % 80 // 2: (2 * t) % 80 // 2 + w].copy()
      cx, cy = w / 2 + 300 * np.sin(t / 15), h / 2 + 200 * np.cos(t / 20)
      frame[(xx - cx) ** 2 + (yy - cy) ** 2 < 150 ** 2] = (220, 180, 150)
      out.append_data(frame)
  return os.path.join(folder, "0.hdf5"), os.path.join(folder, "0.mp4")


def _timed(fn, repeats: int) -> float:
  fn()  # warm caches (the file system, ffmpeg's binary)
  t0 = time.perf_counter()
  for _ in range(repeats):
    fn()
  return (time.perf_counter() - t0) / repeats


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out", default="benchmarks/results/egodex_convert.json")
  p.add_argument("--seconds", type=float, default=10.0, help="episode length (EgoDex episodes: ~5-30 s)")
  p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224], help="output image sizes (square)")
  p.add_argument("--repeats", type=int, default=2)
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    h5, mp4 = write_synthetic(tmp, args.seconds)
    write_s = time.perf_counter() - t0
    n = int(args.seconds * 30)
    results = dict(source_frames=n, source_size=[1920, 1080], write_seconds=round(write_s, 2),
                   mp4_megabytes=round(os.path.getsize(mp4) / 2 ** 20, 2))
    s = _timed(lambda: egodex.read_poses(h5, "right"), args.repeats)
    results["read_poses_frames_per_s"] = round(n / s, 1)
    for size in args.sizes:
      s = _timed(lambda: video_io.read_video(mp4, (size, size)), args.repeats)
      results[f"read_video_{size}_frames_per_s"] = round(n / s, 1)
      s = _timed(lambda: egodex.convert(h5, mp4, egodex.Options(image_size=(size, size))), args.repeats)
      results[f"convert_{size}_frames_per_s"] = round(n / s, 1)
    s = _timed(lambda: video_folder.convert(mp4, video_folder.Options(image_size=(64, 64))), args.repeats)
    results["video_folder_64_frames_per_s"] = round(n / s, 1)
  sizes = args.sizes
  ratios = {f"convert_{s}_vs_{sizes[0]}": round(results[f"convert_{s}_frames_per_s"] /
                                                 results[f"convert_{sizes[0]}_frames_per_s"], 3) for s in sizes[1:]}
  ratios["video_share_of_convert_64"] = round(results[f"convert_{sizes[0]}_frames_per_s"] /
                                             results[f"read_video_{sizes[0]}_frames_per_s"], 3)
  report.write(args.out, "egodex_convert", vars(args), results, ratios)


if __name__ == "__main__":
  main()
