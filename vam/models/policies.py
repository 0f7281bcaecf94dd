"""Policies: the flow-matching action decoder (METHOD.md) conditioned on observation tokens.

`ImageBaseline`: the "VLA-style" baseline of METHOD.md -- the decoder conditioned on an image encoder's
features of the H_o context frames, the instruction and the embodiment (no video pretraining).
`StatePolicy`: the diagnostic ladder's privileged-state rung -- the same decoder conditioned on the
simulator's true task state (target and object positions, task one-hot) instead of images: it isolates
control from vision (if it fails, the action representation or the closed loop is wrong).
The loss and the sampler follow the one flow convention of `vam.flow`.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from vam import embodiment as embodiment_lib
from vam import flow
from vam.models import action_decoder, encoders, layers, text


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  encoder: encoders.EncoderConfig
  decoder: action_decoder.DecoderConfig
  proprio_dropout: float = 0.2
  action_time_sampler: str = "sqrt"
  action_loss: str = "velocity"  # vam.flow.LOSS_SPACES: the space the flow loss is measured in
  sample_steps: int = 10
  use_text: bool = True  # the state policy may read the task from its one-hot instead
  privileged_dim: int = 0  # width of the privileged state (StatePolicy's input; ImageBaseline's auxiliary target)
  privileged_aux: float = 0.0  # ImageBaseline: weight of predicting the privileged state from the image features
  privileged_feed: bool = False  # ImageBaseline: the decoder also reads the probe's state estimate (one token)


class FlowPolicy(nnx.Module):
  """The shared part: flow-matching loss and Euler sampling of the decoder given `condition(batch)`."""

  cfg: PolicyConfig

  def features(self, batch, rng=None):
    """The observation's own tokens (B, M, D); `rng` (training only) drives augmentation."""
    raise NotImplementedError

  def auxiliary_loss(self, batch, features):
    """An extra training loss on `features` (and its metrics); none by default."""
    del batch, features
    return 0.0, {}

  def condition(self, batch, rng=None):
    """The decoder's context: [embodiment; features; instruction] tokens (B, M', D) and their mask (B, M')."""
    return self._context(batch, self.features(batch, rng))

  def loss(self, batch, rng):
    """Masked flow-matching loss on the unified action chunk. Returns (loss, metrics)."""
    k_t, k_eps, k_drop, k_aug = jax.random.split(rng, 4)
    x0, mask = batch["actions"], batch["action_mask"]
    b = x0.shape[0]
    tau = flow.sample_time(k_t, (b,), self.cfg.action_time_sampler)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    dropped = jax.random.bernoulli(k_drop, self.cfg.proprio_dropout, (b,))
    with jax.named_scope("observation_encoder"):
      features = self.features(batch, k_aug)
    cond, cond_mask = self._context(batch, features)
    with jax.named_scope("action_decoder"):
      v = self.decoder(flow.interpolate(x0, eps, tau), tau, batch["proprio"], cond, cond_mask=cond_mask,
                       proprio_dropped=dropped)
    flow_loss = flow.loss(v, x0, eps, mask, flow.sample_weight(tau, self.cfg.action_loss))
    with jax.named_scope("auxiliary"):
      aux, metrics = self.auxiliary_loss(batch, features)
    # valid_entries: the masked mean's denominator (gradient accumulation weights micro-batches by it)
    return flow_loss + aux, {"flow_loss": flow_loss, "valid_entries": jnp.sum(mask.astype(jnp.float32)), **metrics}

  def sample(self, batch, rng, num_steps=None, noise_scale: float = 1.0):
    """Action chunk (B, H_a, A) by Euler integration from noise (tau 1 -> 0); `noise_scale` is the sampling
    temperature (`flow.initial_noise`)."""
    cond, cond_mask = self.condition(batch)
    kv = self.decoder.memory_kv(cond)  # the memory's keys and values: once per chunk, not per Euler step
    velocity = lambda x, tau: self.decoder(x, tau, batch["proprio"], cond, cond_mask=cond_mask, memory_kv=kv)
    noise = flow.initial_noise(rng, batch["action_mask"].shape, noise_scale)
    steps = flow.sampling_steps(self.cfg.action_time_sampler, num_steps or self.cfg.sample_steps)
    return flow.euler(velocity, noise, steps)

  def estimate_state(self, batch):
    """The privileged-state probe's estimate (B, P), standardised, from the observation alone."""
    probe = getattr(self, "probe", None)
    if probe is None:
      raise ValueError("this policy has no privileged-state probe (config.model.privileged_aux = 0)")
    return probe.estimate(self.features(batch))

  def _context(self, batch, tokens):
    """[embodiment token; `tokens` (+ the probe's state estimate); instruction tokens] and their mask."""
    probe = getattr(self, "probe", None)
    if probe is not None:
      tokens = probe.with_estimate(tokens)
    b = tokens.shape[0]
    parts = [self.embodiment(batch["embodiment_id"])[:, None], tokens]
    masks = [jnp.ones((b, 1 + tokens.shape[1]), bool)]
    if self.cfg.use_text:
      words, text_mask = self.text(batch["instruction"])
      parts.append(words)
      masks.append(text_mask)
    return jnp.concatenate(parts, axis=1), jnp.concatenate(masks, axis=1)


class ImageBaseline(FlowPolicy):
  def __init__(self, cfg: PolicyConfig, *, rngs: nnx.Rngs):
    if cfg.decoder.cond_dim != cfg.encoder.width:
      raise ValueError(f"decoder.cond_dim ({cfg.decoder.cond_dim}) must equal encoder.width ({cfg.encoder.width})")
    self.cfg = cfg
    self.images = encoders.make_image_encoder(cfg.encoder, rngs=rngs)
    self.text = text.InstructionEncoder(encoders.text_config(cfg.encoder), rngs=rngs)
    self.embodiment = nnx.Embed(cfg.encoder.num_embodiments, cfg.encoder.width, rngs=rngs)
    self.decoder = action_decoder.ActionDecoder(cfg.decoder, rngs=rngs)
    if cfg.privileged_feed and cfg.privileged_aux <= 0:
      raise ValueError("config.model.privileged_feed needs config.model.privileged_aux > 0 (the probe it reads)")
    self.probe = (layers.PrivilegedProbe(cfg.encoder.width, cfg.privileged_dim, cfg.privileged_aux,
                                         feed=cfg.privileged_feed, rngs=rngs)
                  if cfg.privileged_aux > 0 else None)

  def features(self, batch, rng=None):
    images = batch["images"]
    if rng is not None:
      images = encoders.random_shift(images, rng, self.cfg.encoder.shift)
    return self.images(images)

  def auxiliary_loss(self, batch, features):
    return (0.0, {}) if self.probe is None else self.probe(features, batch["privileged"])


class StatePolicy(FlowPolicy):
  def __init__(self, cfg: PolicyConfig, *, rngs: nnx.Rngs):
    if cfg.privileged_dim <= 0:
      raise ValueError("StatePolicy needs privileged_dim > 0 (datasets with steps/observation/privileged)")
    self.cfg = cfg
    d = cfg.encoder.width
    self.state_in = layers.Mlp(cfg.privileged_dim, d, d, rngs=rngs)
    self.text = text.InstructionEncoder(encoders.text_config(cfg.encoder), rngs=rngs) if cfg.use_text else None
    self.embodiment = nnx.Embed(cfg.encoder.num_embodiments, d, rngs=rngs)
    self.decoder = action_decoder.ActionDecoder(cfg.decoder, rngs=rngs)

  def features(self, batch, rng=None):
    return self.state_in(batch["privileged"])[:, None]


POLICIES = {"image_baseline": ImageBaseline, "state_policy": StatePolicy}
INPUT_KEYS = {
    "image_baseline": ("images", "instruction", "embodiment_id", "proprio", "actions", "action_mask"),
    "state_policy": ("privileged", "instruction", "embodiment_id", "proprio", "actions", "action_mask"),
}


def input_keys(model_cfg) -> tuple[str, ...]:
  """The window keys policy `model_cfg.name`'s loss reads."""
  keys = INPUT_KEYS[model_cfg.name]
  return keys + ("privileged",) if reads_privileged_aux(model_cfg) and "privileged" not in keys else keys


def reads_privileged_aux(model_cfg) -> bool:
  """Whether training reads the privileged state for the auxiliary probe (`config.model.privileged_aux` > 0)."""
  return model_cfg.get("privileged_aux", 0.0) > 0


def from_config(model_cfg, *, action_dim: int, proprio_dim: int, horizon: int, frames: int, image_size: int,
                num_embodiments: int, rngs: nnx.Rngs) -> nnx.Module:
  """The policy `config.model.name` with its sizes from `config.model` and the data's shapes."""
  if model_cfg.name not in POLICIES:
    raise ValueError(f"config.model.name={model_cfg.name!r}; valid: {list(POLICIES)}")
  enc = dict(model_cfg.encoder)
  if "channels" in enc:
    enc["channels"] = tuple(enc["channels"])
  enc = encoders.EncoderConfig(**enc, image_size=image_size, frames=frames, num_embodiments=num_embodiments)
  dec = action_decoder.DecoderConfig(**dict(model_cfg.decoder), action_dim=action_dim, proprio_dim=proprio_dim,
                                     horizon=horizon, cond_dim=enc.width)
  cfg = PolicyConfig(enc, dec, proprio_dropout=model_cfg.proprio_dropout,
                     action_time_sampler=model_cfg.action_time_sampler,
                     action_loss=model_cfg.get("action_loss", "velocity"), sample_steps=model_cfg.sample_steps,
                     use_text=model_cfg.get("use_text", True), privileged_dim=model_cfg.get("privileged_dim", 0),
                     privileged_aux=model_cfg.get("privileged_aux", 0.0),
                     privileged_feed=model_cfg.get("privileged_feed", False))
  return POLICIES[model_cfg.name](cfg, rngs=rngs)


def factory(config, action_dim: int, num_embodiments: int, image_size: int):
  """`rngs -> policy` for a full training config (its `model` and `data` sections): what training builds and
  what evaluation rebuilds from a checkpoint's saved config."""
  d = config.data
  proprio = embodiment_lib.proprio_width(d.proprio_dim, d.get("proprio_eef", False))
  return functools.partial(from_config, config.model, action_dim=action_dim, proprio_dim=proprio,
                           horizon=d.action_horizon, frames=d.context_frames, image_size=image_size,
                           num_embodiments=num_embodiments)
