"""Observation encoders of the image-conditioned baseline: images and instructions -> tokens."""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vam.models import layers


class EncoderBlock(nnx.Module):
  """Pre-norm transformer block (self-attention with QK-RMSNorm, MLP)."""

  def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = layers.Attention(dim, heads, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.mlp = layers.Mlp(dim, 4 * dim, dim, rngs=rngs)

  def __call__(self, x, mask=None):
    x = x + self.attn(self.norm1(x), mask=mask)
    return x + self.mlp(self.norm2(x))


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  width: int = 128
  depth: int = 2
  heads: int = 4
  patch: int = 8
  image_size: int = 64
  frames: int = 2  # H_o
  text_len: int = 96  # instruction bytes read (the batch's may be longer: the rest is cut)
  text_depth: int = 2
  num_embodiments: int = 3


class ImageEncoder(nnx.Module):
  """A small ViT over the H_o context frames: uint8 (B, H_o, H, W, 3) -> tokens (B, H_o * P, D)."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    n = (cfg.image_size // cfg.patch) ** 2
    self.patch = nnx.Conv(3, cfg.width, (cfg.patch, cfg.patch), strides=(cfg.patch, cfg.patch), padding="VALID",
                          rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.frames, n, cfg.width)))
    self.blocks = nnx.List([EncoderBlock(cfg.width, cfg.heads, rngs=rngs) for _ in range(cfg.depth)])
    self.norm = nnx.LayerNorm(cfg.width, rngs=rngs)

  def __call__(self, images):
    b, f = images.shape[:2]
    x = images.reshape(b * f, *images.shape[2:]).astype(jnp.float32) / 127.5 - 1.0
    x = self.patch(x).reshape(b, f, -1, self.cfg.width) + self.pos.value[None]
    x = x.reshape(b, -1, self.cfg.width)
    for block in self.blocks:
      x = block(x)
    return self.norm(x)


class InstructionEncoder(nnx.Module):
  """Byte-level transformer over the UTF-8 instruction: (B, L) uint8 -> tokens (B, L, D), mask (B, L)."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.text_len = cfg.text_len
    self.embed = nnx.Embed(256, cfg.width, rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.text_len, cfg.width)))
    self.blocks = nnx.List([EncoderBlock(cfg.width, cfg.heads, rngs=rngs) for _ in range(cfg.text_depth)])
    self.norm = nnx.LayerNorm(cfg.width, rngs=rngs)

  def __call__(self, text):
    text = text[:, :self.text_len]
    mask = text > 0
    mask = mask.at[:, 0].set(True)  # an empty instruction still has one key to attend to
    x = self.embed(text.astype(jnp.int32)) + self.pos.value[None, :text.shape[1]]
    for block in self.blocks:
      x = block(x, mask=mask)
    return self.norm(x), mask
