"""Random training windows with the shapes a config expects: benchmarks time compiled steps without
datasets (the compute does not depend on the values)."""

import numpy as np

from vam import embodiment as embodiment_lib
from vam.input import windows
from vam.models import registry


def vam_config(tiny: bool = False):
  """experiments/mutual_pretrain.py with the quickstart video model's config in place of the one training adopts
  from a stage-1 run (tiny: both tiny): a VAM to time without a trained video model."""
  from vam import config as config_lib  # pylint: disable=g-import-not-at-top
  video = config_lib.load("experiments/video_pretrain.py:" + ("tiny" if tiny else "quickstart"))
  config = config_lib.load("experiments/mutual_pretrain.py" + (":tiny" if tiny else ""))
  with config.unlocked():
    config.model.video = video.model  # what training adopts from the stage-1 run
  return config


def window(config, space, image_size: int, embodiment: str = "arm6") -> dict:
  """One window (no batch axis): frames, instruction, proprio, an `embodiment` action chunk with its masks, the
  privileged task state (where config.model.privileged_dim is set), the future frames' proprio, and -- for models
  with a video autoencoder -- stored context/future latents and the frames they encode (the model reads one or the
  other, by config.data.use_latents)."""
  d = config.data
  rng = np.random.default_rng(0)
  mask = np.zeros((d.action_horizon, space.dim), bool)
  mask[:, space.embodiment_mask(embodiment)] = True
  out = dict(
      images=rng.integers(0, 255, (d.context_frames, image_size, image_size, 3), np.uint8),
      instruction=windows.encode_instruction("pick up the red cube and place it on the green pad"),
      embodiment_id=np.int32(space.embodiments.index(embodiment)),
      proprio=rng.normal(size=(embodiment_lib.proprio_width(d.proprio_dim, d.get("proprio_eef", False)),)
                         ).astype(np.float32),
      actions=rng.normal(size=(d.action_horizon, space.dim)).astype(np.float32),
      action_mask=mask, mapped_mask=np.zeros_like(mask))
  if config.model.get("privileged_dim", 0) > 0:  # the simulator's task state (the privileged-state probe reads it)
    out["privileged"] = rng.normal(size=(config.model.privileged_dim,)).astype(np.float32)
  if d.get("future_frames", 0) > 0:  # the proprio at the future frames (the future-state probe's target)
    out["future_proprio"] = rng.normal(size=(d.future_frames, len(out["proprio"]))).astype(np.float32)
  if registry.check_name(config) in ("video_dit", "vam"):
    ae = registry.autoencoder_config(registry.video_section(config).model)
    size = image_size // ae.spatial_factor
    latents = lambda n: rng.normal(size=(n, size, size, ae.latent_channels)).astype(np.float32)
    out.update(context_latents=latents(d.context_frames), future_latents=latents(d.future_frames),
               future_mask=np.ones((d.future_frames,), bool),
               images=rng.integers(0, 255, (d.context_frames * ae.temporal_factor, image_size, image_size, 3), np.uint8),
               future_images=rng.integers(0, 255, (d.future_frames * ae.temporal_factor, image_size, image_size, 3),
                                          np.uint8))
  return out


def batch(example: dict, keys, batch_size: int) -> dict:
  """`batch_size` copies of the window's `keys`, stacked on a leading axis."""
  return {k: np.stack([example[k]] * batch_size) for k in keys}


def median_step_time(prog, example: dict, batch_size: int, steps: int) -> float:
  """Median seconds of `prog`'s compiled train step (a vam.train Program) on a resident batch of `example`
  copies, after one untimed step (one-off costs)."""
  import time  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from vam.input import pipeline  # pylint: disable=g-import-not-at-top
  device_batch = pipeline.to_global(batch(example, prog.input_keys, batch_size), prog.data_sharding)
  state, ema = prog.init(jax.random.PRNGKey(0))
  state, ema, m = prog.step(state, ema, device_batch)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, ema, m = prog.step(state, ema, device_batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return float(np.median(times))
