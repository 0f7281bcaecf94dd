"""Observation encoders of the image-conditioned policies: images -> tokens (instructions: `vam.models.text`).

Two kinds (`EncoderConfig.kind`):
  vit   a small ViT over the patches of the H_o context frames (a token per patch and frame);
  conv  a ResNet-style convolutional stack with GroupNorm (the small-image policy encoder of Diffusion Policy
        and robomimic), read out either as spatial-softmax keypoints (`readout='keypoints'`: a token per
        keypoint and frame, its expected image position) or as the final feature grid (`readout='grid'`).
Training may randomly shift the frames (`shift` pixels, replicate-padded; the same shift for every frame of
a sample): the augmentation that matters most for small image policies.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vam.models import layers, text

KINDS = ("vit", "conv")
READOUTS = ("keypoints", "grid")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  width: int = 128
  depth: int = 2  # vit: transformer blocks
  heads: int = 4
  patch: int = 8  # vit: patch size
  image_size: int = 64
  frames: int = 2  # H_o
  text_len: int = 96  # instruction bytes read (the batch's may be longer: the rest is cut)
  text_depth: int = 2
  num_embodiments: int = 3
  kind: str = "vit"  # vit | conv
  channels: tuple[int, ...] = (32, 64, 128)  # conv: one stride-2 stage each, with a residual block
  groups: int = 8  # conv: GroupNorm groups
  readout: str = "keypoints"  # conv: keypoints | grid
  keypoints: int = 32  # conv readout 'keypoints': spatial-softmax channels per frame
  shift: int = 0  # training augmentation: random shift by up to this many pixels (0: off)


def _to_float(images):
  return images.astype(jnp.float32) / 127.5 - 1.0


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
    x = _to_float(images.reshape(b * f, *images.shape[2:]))
    x = self.patch(x).reshape(b, f, -1, self.cfg.width) + self.pos.value[None]
    x = x.reshape(b, -1, self.cfg.width)
    for block in self.blocks:
      x = block(x)
    return self.norm(x)


class ResidualBlock(nnx.Module):
  def __init__(self, channels: int, groups: int, *, rngs: nnx.Rngs):
    self.norm1 = nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)
    self.conv1 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
    self.norm2 = nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)
    self.conv2 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)

  def __call__(self, x):
    h = self.conv1(jax.nn.gelu(self.norm1(x)))
    return x + self.conv2(jax.nn.gelu(self.norm2(h)))


class ConvEncoder(nnx.Module):
  """ResNet-style stages (stride-2 conv -> residual block, GroupNorm) per frame, then a readout:
  uint8 (B, H_o, H, W, 3) -> tokens (B, H_o * K, D) (K keypoints, or the h x w feature grid)."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    if cfg.readout not in READOUTS:
      raise ValueError(f"config.model.encoder.readout={cfg.readout!r}; valid: {list(READOUTS)}")
    self.cfg = cfg
    chans = (3,) + tuple(cfg.channels)
    self.down = nnx.List([nnx.Conv(chans[i], chans[i + 1], (3, 3), strides=(2, 2), rngs=rngs)
                          for i in range(len(cfg.channels))])
    self.res = nnx.List([ResidualBlock(c, cfg.groups, rngs=rngs) for c in cfg.channels])
    self.norm = nnx.GroupNorm(chans[-1], num_groups=cfg.groups, rngs=rngs)
    side = cfg.image_size // 2 ** len(cfg.channels)
    if cfg.readout == "keypoints":
      self.to_maps = nnx.Conv(chans[-1], cfg.keypoints, (1, 1), rngs=rngs)
      self.temperature = nnx.Param(jnp.ones(()))
      self.point_in = nnx.Linear(2, cfg.width, rngs=rngs)
      n = cfg.keypoints
    else:
      self.to_tokens = nnx.Linear(chans[-1], cfg.width, rngs=rngs)
      n = side * side
    self.side = side
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.frames, n, cfg.width)))
    self.out_norm = nnx.LayerNorm(cfg.width, rngs=rngs)

  def __call__(self, images):
    b, f = images.shape[:2]
    x = _to_float(images.reshape(b * f, *images.shape[2:]))
    for down, res in zip(self.down, self.res):
      x = res(down(x))
    x = jax.nn.gelu(self.norm(x))  # (B * F, h, w, C)
    if self.cfg.readout == "keypoints":
      maps = self.to_maps(x)  # (B * F, h, w, K)
      h, w = maps.shape[1:3]
      points, _ = layers.soft_argmax(maps.reshape(b * f, h * w, -1), layers.grid_coordinates(h, w),
                                     self.temperature.value)  # expected (x, y) per keypoint
      tokens = self.point_in(points)
    else:
      tokens = self.to_tokens(x.reshape(b * f, -1, x.shape[-1]))
    tokens = tokens.reshape(b, f, -1, self.cfg.width) + self.pos.value[None]
    return self.out_norm(tokens.reshape(b, -1, self.cfg.width))


def make_image_encoder(cfg: EncoderConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  if cfg.kind not in KINDS:
    raise ValueError(f"config.model.encoder.kind={cfg.kind!r}; valid: {list(KINDS)}")
  return ImageEncoder(cfg, rngs=rngs) if cfg.kind == "vit" else ConvEncoder(cfg, rngs=rngs)


def random_shift(images, rng, pad: int):
  """Random-shift augmentation: (B, F, H, W, C) frames replicate-padded by `pad` and cropped back at a random
  offset per sample (the same for all its frames)."""
  if pad <= 0:
    return images
  b, f, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  offsets = jax.random.randint(rng, (b, 2), 0, 2 * pad + 1)
  crop = lambda x, o: jax.lax.dynamic_slice(x, (0, o[0], o[1], 0), (f, h, w, c))
  return jax.vmap(crop)(padded, offsets)


def text_config(cfg: EncoderConfig) -> text.TextConfig:
  return text.TextConfig(width=cfg.width, depth=cfg.text_depth, heads=cfg.heads, text_len=cfg.text_len)
