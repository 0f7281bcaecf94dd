"""The video-action model (METHOD.md stage 2 and inference): a frozen stage-1 video model and the flow-matching
action decoder (an inverse-dynamics model) that reads the video DiT's hidden states after layer `k`.

Training (teacher forcing): the ground-truth future latents are noised to tau_v (sampled independently of
the action time tau_a), the first k DiT blocks run on [clean context; noisy future] and their hidden states,
flattened over time and space, LayerNorm'd and given a learned position embedding (the DiT's rotary
positions live inside its attention only), are the decoder's cross-attention memory. The decoder's time
conditioning fuses tau_a and tau_v (`action_decoder`); proprio is replaced by a learned mask token with
probability `proprio_dropout`. The loss is the episode's own action loss plus, with mutual imitation, the
mapped-action loss (the other embodiment's slots, `mapped_mask`), each a masked mean.

Inference: encode the context frames, integrate the video flow from pure noise down to `tau_v` (the default
1 needs no integration: one forward of the first k blocks), then integrate the action flow (10 Euler steps).

Batch keys: the video model's (`context_latents` or `images`; `future_latents` or `future_images` for
training), `instruction`, `embodiment_id`, `proprio`, `actions`, `action_mask`, `mapped_mask`.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vam import flow
from vam.models import action_decoder, layers, video_model

FROZEN = r"^video(/|$)"  # the whole stage-1 model (autoencoder, latent statistics, text encoder, DiT)
ACTION_KEYS = ("proprio", "actions", "action_mask", "mapped_mask")


@dataclasses.dataclass(frozen=True)
class VamConfig:
  video: video_model.VideoModelConfig
  decoder: action_decoder.DecoderConfig  # cond_dim = the DiT's width
  layer: int  # k: read the hidden states after this DiT block (1-based; only the first k blocks run)
  tau_v_sampler: str = "uniform"  # training distribution of tau_v (vam.flow.sample_time)
  proprio_dropout: float = 0.2
  action_time_sampler: str = "sqrt"
  action_loss: str = "velocity"  # vam.flow.LOSS_SPACES: the space the flow loss is measured in
  sample_steps: int = 10  # action Euler steps at inference
  tau_v: float = 1.0  # inference: integrate the video flow down to this tau_v (1: no video integration)
  video_steps: int = 4  # inference: Euler steps of the video flow from 1 to tau_v (when tau_v < 1)
  mapped_weight: float = 1.0  # weight of the mapped-action loss (mutual imitation)
  # Fraction of training samples whose tau_v is the inference tau_v: a decoder trained on informative futures
  # only (tau_v < 1) leans on them and cannot act from the pure-noise future it sees at tau_v = 1.
  tau_v_inference_fraction: float = 0.0
  feature_mlp: bool = False  # a trainable per-token MLP on the video features before the decoder reads them
  privileged_dim: int = 0  # width of the privileged state (the auxiliary probe's target)
  privileged_aux: float = 0.0  # weight of predicting the privileged state from the decoder's features
  privileged_feed: bool = False  # the decoder also reads the probe's state estimate (one more memory token)
  # Spatial-softmax keypoints per frame over the features' token grid (layers.TokenKeypoints), appended to the
  # decoder's memory (0: off): a localising readout, which cross-attention over 16 coarse tokens is not.
  keypoints: int = 0
  # How each keypoint is placed within a token: 1 = a learned offset; s > 1 = scores over s x s sub-cells
  keypoint_subcells: int = 1


class VideoActionModel(nnx.Module):
  def __init__(self, cfg: VamConfig, *, rngs: nnx.Rngs):
    depth, width = cfg.video.dit.depth, cfg.video.dit.width
    if not 1 <= cfg.layer <= depth:
      raise ValueError(f"config.model.layer={cfg.layer} must be in [1, {depth}] (the video DiT's depth)")
    if cfg.decoder.cond_dim != width:
      raise ValueError(f"decoder.cond_dim ({cfg.decoder.cond_dim}) must equal the video DiT's width ({width})")
    if not 0.0 <= cfg.tau_v <= 1.0:
      raise ValueError(f"config.model.tau_v={cfg.tau_v} must be in [0, 1]")
    self.cfg = cfg
    self.video = video_model.VideoModel(cfg.video, rngs=rngs)
    self.feature_norm = nnx.LayerNorm(width, rngs=rngs)
    # Where each token sits (frame, row, column): the DiT's rotary positions act inside its attention only,
    # so its hidden states do not say where they are; the decoder learns it here (trainable, not frozen).
    tokens = (cfg.video.context_frames + cfg.video.future_frames) * cfg.video.dit.tokens_per_frame
    self.feature_pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (tokens, width)))
    # A trainable per-token MLP over the frozen features (residual): cross-attention reads its memory
    # linearly, and what a small frozen model's tokens know about a 3-pixel ball is not linear in them.
    self.feature_mlp = layers.Mlp(width, 2 * width, width, rngs=rngs) if cfg.feature_mlp else None
    self.keypoints = (layers.TokenKeypoints(width, cfg.keypoints, cfg.video.dit.frames, cfg.video.dit.grid,
                                            subcells=cfg.keypoint_subcells, rngs=rngs)
                      if cfg.keypoints > 0 else None)
    self.decoder = action_decoder.ActionDecoder(cfg.decoder, rngs=rngs)
    if cfg.privileged_feed and cfg.privileged_aux <= 0:
      raise ValueError("config.model.privileged_feed needs config.model.privileged_aux > 0 (the probe it reads)")
    self.probe = (layers.PrivilegedProbe(width, cfg.privileged_dim, cfg.privileged_aux, feed=cfg.privileged_feed,
                                         rngs=rngs)
                  if cfg.privileged_aux > 0 else None)

  def features(self, hidden):
    """Video hidden states (B, N, D) -> the decoder's memory: no gradient into the video model, LayerNorm'd,
    plus a learned embedding of each token's position."""
    x = self.feature_norm(jax.lax.stop_gradient(hidden)) + self.feature_pos.value[None]
    return x if self.feature_mlp is None else x + self.feature_mlp(x)

  def training_features(self, batch, tau_v, rng):
    """Teacher forcing: (B, N, D) features of the ground-truth future noised to tau_v (B,)."""
    return self.features(self.video.hidden_states(batch, tau_v, self.cfg.layer, rng))

  def loss(self, batch, rng):
    """Own-action + mapped-action flow-matching losses. Returns (loss, metrics)."""
    k_v, k_h, k_a, k_eps, k_drop = jax.random.split(rng, 5)
    x0, mask, mapped = batch["actions"], batch["action_mask"], batch["mapped_mask"]
    b = x0.shape[0]
    k_v, k_match = jax.random.split(k_v)
    tau_v = flow.sample_time(k_v, (b,), self.cfg.tau_v_sampler)
    at_inference = jax.random.bernoulli(k_match, self.cfg.tau_v_inference_fraction, (b,))
    tau_v = jnp.where(at_inference, self.cfg.tau_v, tau_v)
    tokens = self.tokens(self.training_features(batch, tau_v, k_h))
    tau_a = flow.sample_time(k_a, (b,), self.cfg.action_time_sampler)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    dropped = jax.random.bernoulli(k_drop, self.cfg.proprio_dropout, (b,))
    v = self.decoder(flow.interpolate(x0, eps, tau_a), tau_a, batch["proprio"], self.with_estimate(tokens),
                     tau_v=tau_v, proprio_dropped=dropped)
    weight = flow.sample_weight(tau_a, self.cfg.action_loss)
    own_loss = flow.loss(v, x0, eps, mask & ~mapped, weight)
    mapped_loss = flow.loss(v, x0, eps, mapped, weight)
    loss = own_loss + self.cfg.mapped_weight * mapped_loss
    # valid_entries: the own-action mean's denominator (gradient accumulation weights micro-batches by it)
    metrics = {"own_action_loss": own_loss, "mapped_action_loss": mapped_loss,
               "valid_entries": jnp.sum((mask & ~mapped).astype(jnp.float32))}
    if self.probe is not None:  # shapes the trainable feature layers (the video model stays frozen)
      aux, probe_metrics = self.probe(tokens, batch["privileged"])
      loss, metrics = loss + aux, dict(metrics, **probe_metrics)
    return loss, metrics

  def tokens(self, features):
    """(B, N, D) features -> (B, M, D) the tokens the decoder and the probe read: the features, plus the
    keypoint tokens (config.model.keypoints)."""
    if self.keypoints is None:
      return features
    return jnp.concatenate([features, self.keypoints(features)], axis=1)

  def with_estimate(self, tokens):
    """(B, M, D) tokens -> the decoder's cross-attention memory: plus the probe's state estimate (feed)."""
    return tokens if self.probe is None else self.probe.with_estimate(tokens)

  def memory(self, features):
    """The decoder's cross-attention memory from the (B, N, D) features."""
    return self.with_estimate(self.tokens(features))

  def sample_actions(self, batch, cond, tau_v, rng, num_steps=None, noise_scale: float = 1.0):
    cond = self.memory(cond)
    velocity = lambda x, tau: self.decoder(x, tau, batch["proprio"], cond, tau_v=tau_v)
    noise = flow.initial_noise(rng, batch["action_mask"].shape, noise_scale)
    return flow.euler(velocity, noise, flow.sampling_steps(self.cfg.action_time_sampler,
                                                           num_steps or self.cfg.sample_steps))

  def estimate_state(self, batch, rng=None, tau_v: float | None = None):
    """The privileged-state probe's estimate (B, P), standardised, from the context frames (as `sample` reads
    them: the video flow imagined down to `tau_v`)."""
    if self.probe is None:
      raise ValueError("this model has no privileged-state probe (config.model.privileged_aux = 0)")
    tau_v = self.cfg.tau_v if tau_v is None else tau_v
    rng = jax.random.PRNGKey(0) if rng is None else rng
    hidden = self.video.imagined_hidden_states(batch, rng, tau_v, self.cfg.layer, self.cfg.video_steps)
    return self.probe.estimate(self.tokens(self.features(hidden)))

  def sample(self, batch, rng, num_steps=None, tau_v: float | None = None, noise_scale: float = 1.0):
    """Inference: action chunk (B, H_a, A) from the context frames (no future), instruction, proprio."""
    tau_v = self.cfg.tau_v if tau_v is None else tau_v
    k_video, k_action = jax.random.split(rng)
    hidden = self.video.imagined_hidden_states(batch, k_video, tau_v, self.cfg.layer, self.cfg.video_steps)
    b = hidden.shape[0]
    return self.sample_actions(batch, self.features(hidden), jnp.full((b,), tau_v), k_action, num_steps, noise_scale)
