"""The video autoencoder of METHOD.md's stage 1: frames -> a small-channel latent, compressed in space
(`patch` per side: 4x by default, 8x in METHOD.md) and optionally in time (`temporal_factor` consecutive
frames share one latent frame).

    ae = VideoAutoencoder(AutoencoderConfig(), rngs=nnx.Rngs(0))
    z = ae.encode(video)        # uint8 (B, T, H, W, 3) -> (B, T / tf, H / p, W / p, latent_channels)
    x = ae.decode(z)            # -> float (B, T, H, W, 3) in [-1, 1]
    loss, metrics = ae.loss({"images": video})   # reconstruction MSE (+ a small latent L2), PSNR

A patch autoencoder: space-to-depth by `patch` (and the `tf` frames of a latent frame stacked on channels),
a linear stem, residual 3x3-conv blocks at the latent resolution, a linear head; the decoder mirrors it and
ends in depth-to-space. Every convolution runs at the low resolution, which keeps it fast on CPUs (a
strided-conv pyramid spends most of its time at full resolution). Deterministic, with a light L2 pull on
the latents to keep them near unit scale for the latent flow model.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
  patch: int = 4  # spatial compression per side
  width: int = 64
  blocks: int = 2  # residual blocks in the encoder and in the decoder
  latent_channels: int = 8
  temporal_factor: int = 1  # frames per latent frame (1: none)
  latent_l2: float = 1e-3  # weight of mean(z^2) in the loss

  @property
  def spatial_factor(self) -> int:
    return self.patch


def _groups(c: int) -> int:
  return next(g for g in (8, 4, 2, 1) if c % g == 0)


class ResBlock(nnx.Module):
  def __init__(self, c: int, *, rngs: nnx.Rngs):
    self.norm1 = nnx.GroupNorm(c, num_groups=_groups(c), rngs=rngs)
    self.conv1 = nnx.Conv(c, c, (3, 3), rngs=rngs)
    self.norm2 = nnx.GroupNorm(c, num_groups=_groups(c), rngs=rngs)
    self.conv2 = nnx.Conv(c, c, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)  # starts as identity

  def __call__(self, x):
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    return x + self.conv2(jax.nn.silu(self.norm2(h)))


class VideoAutoencoder(nnx.Module):
  def __init__(self, cfg: AutoencoderConfig, *, rngs: nnx.Rngs):
    if cfg.temporal_factor < 1 or cfg.patch < 1:
      raise ValueError(f"temporal_factor={cfg.temporal_factor} and patch={cfg.patch} must be >= 1")
    self.cfg = cfg
    pixels = 3 * cfg.patch * cfg.patch * cfg.temporal_factor  # values per latent position
    self.enc_in = nnx.Linear(pixels, cfg.width, rngs=rngs)
    self.enc_blocks = nnx.List([ResBlock(cfg.width, rngs=rngs) for _ in range(cfg.blocks)])
    self.enc_norm = nnx.GroupNorm(cfg.width, num_groups=_groups(cfg.width), rngs=rngs)
    self.enc_out = nnx.Linear(cfg.width, cfg.latent_channels, rngs=rngs)
    self.dec_in = nnx.Linear(cfg.latent_channels, cfg.width, rngs=rngs)
    self.dec_blocks = nnx.List([ResBlock(cfg.width, rngs=rngs) for _ in range(cfg.blocks)])
    self.dec_norm = nnx.GroupNorm(cfg.width, num_groups=_groups(cfg.width), rngs=rngs)
    self.dec_out = nnx.Linear(cfg.width, pixels, rngs=rngs)

  def encode(self, video):
    """uint8 or [-1, 1] float (B, T, H, W, 3) -> latents (B, T / tf, h, w, C)."""
    b, t, h, w, _ = video.shape
    tf, p = self.cfg.temporal_factor, self.cfg.patch
    if t % tf or h % p or w % p:
      raise ValueError(f"video (T, H, W) = {(t, h, w)} must be divisible by (temporal_factor, patch, patch) = "
                       f"{(tf, p, p)}")
    x = video.astype(jnp.float32) / 127.5 - 1.0 if video.dtype == jnp.uint8 else video
    # (B, T/tf, tf, h, p, w, p, 3) -> (B * T/tf, h, w, tf * p * p * 3)
    x = x.reshape(b, t // tf, tf, h // p, p, w // p, p, 3).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    x = self.enc_in(x.reshape(b * t // tf, h // p, w // p, -1))
    for block in self.enc_blocks:
      x = block(x)
    z = self.enc_out(jax.nn.silu(self.enc_norm(x)))
    return z.reshape(b, t // tf, *z.shape[1:])

  def decode(self, z):
    """Latents (B, T', h, w, C) -> frames (B, T' * tf, h * p, w * p, 3) in [-1, 1]."""
    b, tl, h, w, _ = z.shape
    tf, p = self.cfg.temporal_factor, self.cfg.patch
    x = self.dec_in(z.reshape(b * tl, h, w, -1))
    for block in self.dec_blocks:
      x = block(x)
    x = jnp.tanh(self.dec_out(jax.nn.silu(self.dec_norm(x))))
    x = x.reshape(b, tl, h, w, tf, p, p, 3).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, tl * tf, h * p, w * p, 3)

  def loss(self, batch, rng=None):
    """Reconstruction MSE in [-1, 1] units + latent_l2 * mean(z^2) on `batch["images"]` (B, T, H, W, 3).
    Returns (loss, metrics incl. PSNR in dB). `rng` is unused (the autoencoder is deterministic)."""
    del rng
    video = batch["images"]
    target = video.astype(jnp.float32) / 127.5 - 1.0 if video.dtype == jnp.uint8 else video
    z = self.encode(video)
    mse = jnp.mean(jnp.square(self.decode(z) - target))
    latent = jnp.mean(jnp.square(z))
    psnr = 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))  # peak-to-peak 2 in [-1, 1] units
    return mse + self.cfg.latent_l2 * latent, dict(recon_mse=mse, latent_ms=latent, psnr=psnr)
