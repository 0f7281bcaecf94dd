"""Policies. `ImageBaseline`: the "VLA-style" baseline of METHOD.md -- the action decoder conditioned on
single-image-encoder features of the H_o context frames, the instruction and the embodiment (no video
pretraining). The loss and the sampler follow the one flow convention of `vam.flow`.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from vam import flow
from vam.models import action_decoder, encoders, text


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
  encoder: encoders.EncoderConfig
  decoder: action_decoder.DecoderConfig
  proprio_dropout: float = 0.2
  action_time_sampler: str = "sqrt"
  sample_steps: int = 10


INPUT_KEYS = ("images", "instruction", "embodiment_id", "proprio", "actions", "action_mask")  # what loss() reads


class ImageBaseline(nnx.Module):
  def __init__(self, cfg: BaselineConfig, *, rngs: nnx.Rngs):
    if cfg.decoder.cond_dim != cfg.encoder.width:
      raise ValueError(f"decoder.cond_dim ({cfg.decoder.cond_dim}) must equal encoder.width ({cfg.encoder.width})")
    self.cfg = cfg
    self.images = encoders.ImageEncoder(cfg.encoder, rngs=rngs)
    self.text = text.InstructionEncoder(encoders.text_config(cfg.encoder), rngs=rngs)
    self.embodiment = nnx.Embed(cfg.encoder.num_embodiments, cfg.encoder.width, rngs=rngs)
    self.decoder = action_decoder.ActionDecoder(cfg.decoder, rngs=rngs)

  def condition(self, batch):
    """Observation tokens (B, M, D) and their mask (B, M)."""
    img = self.images(batch["images"])
    words, text_mask = self.text(batch["instruction"])
    emb = self.embodiment(batch["embodiment_id"])[:, None]
    tokens = jnp.concatenate([emb, img, words], axis=1)
    b = img.shape[0]
    mask = jnp.concatenate([jnp.ones((b, 1 + img.shape[1]), bool), text_mask], axis=1)
    return tokens, mask

  def loss(self, batch, rng):
    """Masked flow-matching loss on the unified action chunk. Returns (loss, metrics)."""
    k_t, k_eps, k_drop = jax.random.split(rng, 3)
    x0, mask = batch["actions"], batch["action_mask"]
    b = x0.shape[0]
    tau = flow.sample_time(k_t, (b,), self.cfg.action_time_sampler)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    dropped = jax.random.bernoulli(k_drop, self.cfg.proprio_dropout, (b,))
    cond, cond_mask = self.condition(batch)
    v = self.decoder(flow.interpolate(x0, eps, tau), tau, batch["proprio"], cond, cond_mask=cond_mask,
                     proprio_dropped=dropped)
    loss = flow.loss(v, x0, eps, mask)
    return loss, {"flow_loss": loss}

  def sample(self, batch, rng, num_steps=None):
    """Action chunk (B, H_a, A) by Euler integration from noise (tau 1 -> 0)."""
    cond, cond_mask = self.condition(batch)
    shape = batch["action_mask"].shape
    velocity = lambda x, tau: self.decoder(x, tau, batch["proprio"], cond, cond_mask=cond_mask)
    return flow.euler(velocity, jax.random.normal(rng, shape), num_steps or self.cfg.sample_steps)


POLICIES = ("image_baseline",)


def from_config(model_cfg, *, action_dim: int, proprio_dim: int, horizon: int, frames: int, image_size: int,
                num_embodiments: int, rngs: nnx.Rngs) -> nnx.Module:
  """The policy `config.model.name` with its sizes from `config.model` and the data's shapes."""
  if model_cfg.name not in POLICIES:
    raise ValueError(f"config.model.name={model_cfg.name!r}; valid: {list(POLICIES)}")
  enc = encoders.EncoderConfig(**dict(model_cfg.encoder), image_size=image_size, frames=frames,
                               num_embodiments=num_embodiments)
  dec = action_decoder.DecoderConfig(**dict(model_cfg.decoder), action_dim=action_dim, proprio_dim=proprio_dim,
                                     horizon=horizon, cond_dim=enc.width)
  cfg = BaselineConfig(enc, dec, proprio_dropout=model_cfg.proprio_dropout,
                       action_time_sampler=model_cfg.action_time_sampler, sample_steps=model_cfg.sample_steps)
  return ImageBaseline(cfg, rngs=rngs)


def factory(config, action_dim: int, num_embodiments: int, image_size: int):
  """`rngs -> policy` for a full training config (its `model` and `data` sections): what training builds and
  what evaluation rebuilds from a checkpoint's saved config."""
  d = config.data
  return functools.partial(from_config, config.model, action_dim=action_dim, proprio_dim=d.proprio_dim,
                           horizon=d.action_horizon, frames=d.context_frames, image_size=image_size,
                           num_embodiments=num_embodiments)
