"""Precomputes the autoencoder latents of datasets, so video-model training need not encode frames.

    python -m vam.train.latents --autoencoder out/demo/autoencoder --data_dir out/demo/data \
        [--datasets sim_robot,sim_human] [--splits train,val] [--camera front] [--step N] [--overwrite]

Writes `<data_dir>/<dataset>/<version>/latents/<camera>-<fingerprint>/` (vam/input/latents.py) for the
autoencoder's newest (or `--step`) checkpoint; training with `config.data.use_latents=True` finds them by
the fingerprint of its autoencoder. Existing latents of the same autoencoder are kept unless --overwrite.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vam import checkpoints
from vam import log as log_lib
from vam.input import latents as latents_lib
from vam.input import sources
from vam.models import registry

logging = log_lib.get("vam.train.latents")


def load_autoencoder(workdir: str, step: int | None = None):
  """(encode fn: uint8 (N, tf, H, W, 3) -> (N, 1, h, w, C), autoencoder config dict, fingerprint, step)."""
  params, assets, step = checkpoints.restore_params(workdir, step)
  config = ml_collections.ConfigDict(assets["config"])
  if config.model.name != "autoencoder":
    raise ValueError(f"--autoencoder={workdir!r} holds a {config.model.name!r} model, not an autoencoder")
  binder = registry.Binder(registry.factory(config, 0, 1, int(assets["image_size"])))
  encode = jax.jit(lambda p, video: binder(p).encode(video))
  return (lambda video: encode(params, video)), dict(config.model.autoencoder), checkpoints.fingerprint(params), step


def episode_latents(encode, images: np.ndarray, temporal_factor: int, batch: int) -> np.ndarray:
  """The latent of every step s of an episode (frames s-tf+1 .. s, clamped at 0): (T, h, w, C)."""
  T = len(images)
  groups = np.clip(np.arange(T)[:, None] - temporal_factor + 1 + np.arange(temporal_factor)[None], 0, T - 1)
  out = []
  for start in range(0, T, batch):
    idx = groups[start:start + batch]
    chunk = images[idx]
    pad = batch - len(chunk)  # a fixed batch shape: one compile for every episode
    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
    out.append(np.asarray(encode(jnp.asarray(chunk)))[:len(idx), 0])
  return np.concatenate(out)


def dataset_dirs(data_dir: str, names: list[str] | None, version: str) -> dict:
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"--data_dir={data_dir!r} does not exist")
  found = sorted(n for n in os.listdir(data_dir) if os.path.isfile(os.path.join(data_dir, n, version, "features.json")))
  names = names or found
  missing = [n for n in names if n not in found]
  if missing:
    raise FileNotFoundError(f"--datasets {missing} are not TFDS datasets under {data_dir!r} (version {version}); "
                            f"found: {found}")
  return {n: os.path.join(data_dir, n, version) for n in names}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--autoencoder", required=True, help="workdir of a trained autoencoder")
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--datasets", default="", help="comma-separated dataset names (default: all in data_dir)")
  parser.add_argument("--splits", default="train,val")
  parser.add_argument("--camera", default="front")
  parser.add_argument("--version", default="1.0.0")
  parser.add_argument("--step", type=int, default=None, help="autoencoder checkpoint step (default: newest)")
  parser.add_argument("--batch", type=int, default=64, help="latent frames encoded per call")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)

  encode, ae_config, fp, step = load_autoencoder(args.autoencoder, args.step)
  tf = int(ae_config["temporal_factor"])
  logging.info("autoencoder %s step %d (fingerprint %s): %s", args.autoencoder, step, fp, ae_config)
  for name, path in dataset_dirs(args.data_dir, [d for d in args.datasets.split(",") if d], args.version).items():
    out = latents_lib.directory(path, args.camera, fp)
    if os.path.exists(os.path.join(out, "meta.json")) and not args.overwrite:
      logging.info("%s: latents exist in %s (--overwrite to rebuild)", name, out)
      continue
    t0, splits = time.perf_counter(), {}
    for split in args.splits.split(","):
      src = sources.EpisodeSource(path, split, args.camera)
      splits[split] = [episode_latents(encode, src.episode(i)["images"], tf, args.batch) for i in range(len(src))]
    shape = splits[next(iter(splits))][0].shape[1:]
    latents_lib.write(out, splits, dict(autoencoder=os.path.abspath(args.autoencoder), step=step, fingerprint=fp,
                                        autoencoder_config=ae_config, camera=args.camera, latent_shape=list(shape)))
    steps = sum(len(e) for eps in splits.values() for e in eps)
    logging.info("%s: %d steps -> latents %s in %.0f s: %s", name, steps, tuple(shape), time.perf_counter() - t0, out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
