"""The video autoencoder of METHOD.md's stage 1: frames -> a small-channel latent, compressed in space
(2^len(widths) per side, 8x by default) and optionally in time (`temporal_factor` consecutive frames share
one latent frame).

    ae = VideoAutoencoder(AutoencoderConfig(), rngs=nnx.Rngs(0))
    z = ae.encode(video)        # uint8 (B, T, H, W, 3) -> (B, T / tf, H / 8, W / 8, latent_channels)
    x = ae.decode(z)            # -> float (B, T, H, W, 3) in [-1, 1]
    loss, metrics = ae.loss({'images': video})   # reconstruction MSE (+ a small latent L2), PSNR

Time compression stacks `tf` consecutive frames on the channel axis before the 2-D encoder (and unstacks
after the decoder): exact, cheap, and the latents keep one grid per latent frame. A deterministic
autoencoder with a light L2 pull on the latents keeps them near unit scale for the latent flow model.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
  widths: tuple[int, ...] = (32, 64, 128)  # one stride-2 stage each: 2^len(widths) spatial compression
  latent_channels: int = 16
  temporal_factor: int = 1  # frames per latent frame (1: none)
  latent_l2: float = 1e-3  # weight of mean(z^2) in the loss

  @property
  def spatial_factor(self) -> int:
    return 2 ** len(self.widths)


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
    if cfg.temporal_factor < 1:
      raise ValueError(f"temporal_factor={cfg.temporal_factor} must be >= 1")
    self.cfg = cfg
    tf, w = cfg.temporal_factor, cfg.widths
    self.enc_in = nnx.Conv(3 * tf, w[0], (3, 3), rngs=rngs)
    self.enc_down = nnx.List([nnx.Conv(w[max(i - 1, 0)], c, (3, 3), strides=(2, 2), rngs=rngs)
                              for i, c in enumerate(w)])
    self.enc_blocks = nnx.List([ResBlock(c, rngs=rngs) for c in w])
    self.enc_norm = nnx.GroupNorm(w[-1], num_groups=_groups(w[-1]), rngs=rngs)
    self.enc_out = nnx.Conv(w[-1], cfg.latent_channels, (1, 1), rngs=rngs)
    self.dec_in = nnx.Conv(cfg.latent_channels, w[-1], (3, 3), rngs=rngs)
    rev = w[::-1]
    self.dec_blocks = nnx.List([ResBlock(c, rngs=rngs) for c in rev])
    self.dec_up = nnx.List([nnx.ConvTranspose(c, rev[min(i + 1, len(rev) - 1)], (4, 4), strides=(2, 2),
                                              rngs=rngs) for i, c in enumerate(rev)])
    self.dec_norm = nnx.GroupNorm(w[0], num_groups=_groups(w[0]), rngs=rngs)
    self.dec_out = nnx.Conv(w[0], 3 * tf, (3, 3), rngs=rngs)

  def encode(self, video):
    """uint8 or [-1, 1] float (B, T, H, W, 3) -> latents (B, T / tf, h, w, C)."""
    b, t, h, w, _ = video.shape
    tf, s = self.cfg.temporal_factor, self.cfg.spatial_factor
    if t % tf or h % s or w % s:
      raise ValueError(f"video (T, H, W) = {(t, h, w)} must be divisible by (temporal_factor, spatial factor, "
                       f"spatial factor) = {(tf, s, s)}")
    x = video.astype(jnp.float32) / 127.5 - 1.0 if video.dtype == jnp.uint8 else video
    x = x.reshape(b, t // tf, tf, h, w, 3).transpose(0, 1, 3, 4, 2, 5).reshape(b * t // tf, h, w, 3 * tf)
    x = self.enc_in(x)
    for down, block in zip(self.enc_down, self.enc_blocks):
      x = block(down(x))
    z = self.enc_out(jax.nn.silu(self.enc_norm(x)))
    return z.reshape(b, t // tf, *z.shape[1:])

  def decode(self, z):
    """Latents (B, T', h, w, C) -> frames (B, T' * tf, h * s, w * s, 3) in [-1, 1]."""
    b, tl = z.shape[:2]
    tf = self.cfg.temporal_factor
    x = self.dec_in(z.reshape(b * tl, *z.shape[2:]))
    for block, up in zip(self.dec_blocks, self.dec_up):
      x = up(block(x))
    x = jnp.tanh(self.dec_out(jax.nn.silu(self.dec_norm(x))))
    h, w = x.shape[1:3]
    return x.reshape(b, tl, h, w, tf, 3).transpose(0, 1, 4, 2, 3, 5).reshape(b, tl * tf, h, w, 3)

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
