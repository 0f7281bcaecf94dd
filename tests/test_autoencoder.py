"""The video autoencoder: shapes and compression factors, input checks, and it learns to reconstruct."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vam.models import autoencoder


def _video(b=2, t=4, size=32, seed=0):
  """Coloured squares moving over a gradient background: uint8 (B, T, H, W, 3)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size]
  out = np.zeros((b, t, size, size, 3), np.uint8)
  for i in range(b):
    x0, y0, colour = rng.integers(0, size - 10, 2).tolist() + [rng.integers(50, 255, 3)]
    for f in range(t):
      frame = np.stack([xx * 4, yy * 4, np.full_like(xx, 60)], -1).astype(np.uint8)
      frame[y0:y0 + 8, x0 + 2 * f:x0 + 2 * f + 8] = colour
      out[i, f] = frame
  return out


@pytest.mark.parametrize("tf", [1, 2])
def test_shapes_and_compression(tf):
  cfg = autoencoder.AutoencoderConfig(patch=4, width=16, blocks=1, latent_channels=4, temporal_factor=tf)
  ae = autoencoder.VideoAutoencoder(cfg, rngs=nnx.Rngs(0))
  video = jnp.asarray(_video(t=4))
  z = nnx.jit(lambda m, v: m.encode(v))(ae, video)
  assert z.shape == (2, 4 // tf, 8, 8, 4) and cfg.spatial_factor == 4
  x = nnx.jit(lambda m, z: m.decode(z))(ae, z)
  assert x.shape == video.shape and float(jnp.abs(x).max()) <= 1.0


def test_indivisible_video_is_refused():
  ae = autoencoder.VideoAutoencoder(autoencoder.AutoencoderConfig(width=16, temporal_factor=2),
                                    rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="must be divisible"):
    ae.encode(jnp.zeros((1, 3, 32, 32, 3), jnp.uint8))


def test_learns_to_reconstruct():
  cfg = autoencoder.AutoencoderConfig(patch=4, width=32, blocks=2, latent_channels=8, temporal_factor=2)
  ae = autoencoder.VideoAutoencoder(cfg, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(ae, optax.adam(2e-3), wrt=nnx.Param)
  video = jnp.asarray(_video(b=4, t=4))

  @nnx.jit
  def step(model, opt):
    (loss, m), grads = nnx.value_and_grad(lambda mm: mm.loss({"images": video}), has_aux=True)(model)
    opt.update(model, grads)
    return m

  first = step(ae, opt)
  for _ in range(100):
    last = step(ae, opt)
  assert float(last["recon_mse"]) < 0.25 * float(first["recon_mse"])
  assert float(last["psnr"]) > float(first["psnr"]) + 6.0  # dB
