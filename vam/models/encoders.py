"""Observation encoders of the image-conditioned baseline: images -> tokens (instructions: `vam.models.text`)."""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vam.models import layers, text


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
    self.blocks = nnx.List([layers.TransformerBlock(cfg.width, cfg.heads, rngs=rngs) for _ in range(cfg.depth)])
    self.norm = nnx.LayerNorm(cfg.width, rngs=rngs)

  def __call__(self, images):
    b, f = images.shape[:2]
    x = images.reshape(b * f, *images.shape[2:]).astype(jnp.float32) / 127.5 - 1.0
    x = self.patch(x).reshape(b, f, -1, self.cfg.width) + self.pos.value[None]
    x = x.reshape(b, -1, self.cfg.width)
    for block in self.blocks:
      x = block(x)
    return self.norm(x)


def text_config(cfg: EncoderConfig) -> text.TextConfig:
  return text.TextConfig(width=cfg.width, depth=cfg.text_depth, heads=cfg.heads, text_len=cfg.text_len)
