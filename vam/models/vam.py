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
The oracle (`sample_with_future`): the same decoder on the true future's features, computed as in training --
what the decoder would do with a perfect video model (vam/eval/offline.py `future_oracle`, the foresight agent).

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
FUTURE_STATE_KEYS = ("future_proprio",)  # the future-state probe's target (config.model.future_state_aux > 0)
FUTURE_STATE_PATHS = ("memory", "proprio")


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
  # Motion tokens: per future frame and token position, an MLP of [the future token; it minus the same position's
  # token of the newest context frame], plus spatial-softmax keypoints over them (`keypoints` per frame) -- what
  # moved and where, which cross-attention can only get from two tokens at once through softmax averages.
  motion_tokens: bool = False
  # Training only: the probability that a sample's decoder memory hides the context frames' tokens (and their
  # keypoints) when its future is informative (tau_v < 1): the decoder must then act from proprio and the future
  # alone, as an inverse-dynamics model does, instead of learning only the always-clean context.
  context_dropout: float = 0.0
  # Keypoints per frame on the latent grid (layers.GridKeypoints: the tokens unpatchified to their cells, a conv
  # over each frame and its difference to the newest context frame, a spatial softmax), as more decoder tokens.
  grid_keypoints: int = 0
  grid_channels: int = 32
  # The future-state probe (layers.FutureStateProbe): weight of regressing the robot's normalised proprio at each
  # future frame from the decoder's tokens (0: off); with `future_state_feed` the decoder reads its estimate.
  future_state_aux: float = 0.0
  future_state_feed: bool = False
  # A diagnostic rung, not a policy: the decoder is fed the window's *true* future proprio in place of the probe's
  # estimate (training and the future oracle only; inference has no future to read it from).
  future_state_privileged: bool = False
  # Where the decoder reads the fed future state: `memory` (H_f more cross-attention tokens) or `proprio` (beside
  # the proprio in the decoder's proprio token, whose width is then (1 + H_f) x the proprio's: the path the
  # decoder already reads the present state through).
  future_state_path: str = "memory"
  proprio_dim: int = 0  # the proprio's width (the future-state probe's target)


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
    motion = cfg.motion_tokens
    self.motion = layers.Mlp(2 * width, 2 * width, width, rngs=rngs) if motion else None
    self.motion_pos = (nnx.Param(0.02 * jax.random.normal(
        rngs.params(), (cfg.video.future_frames * cfg.video.dit.tokens_per_frame, width))) if motion else None)
    self.motion_keypoints = (layers.TokenKeypoints(width, cfg.keypoints, cfg.video.future_frames, cfg.video.dit.grid,
                                                   subcells=cfg.keypoint_subcells, rngs=rngs)
                             if motion and cfg.keypoints > 0 else None)
    dit = cfg.video.dit
    self.grid_keypoints = (layers.GridKeypoints(width, cfg.grid_keypoints, dit.frames, dit.grid, dit.patch,
                                                cfg.video.context_frames, cfg.grid_channels, rngs=rngs)
                           if cfg.grid_keypoints > 0 else None)
    if not 0.0 <= cfg.context_dropout <= 1.0:
      raise ValueError(f"config.model.context_dropout={cfg.context_dropout} must be in [0, 1]")
    if cfg.future_state_feed and cfg.future_state_aux <= 0:
      raise ValueError("config.model.future_state_feed needs config.model.future_state_aux > 0 (the probe it reads)")
    if cfg.future_state_privileged and not cfg.future_state_feed:
      raise ValueError("config.model.future_state_privileged replaces the fed estimate: it needs future_state_feed")
    if cfg.future_state_path not in FUTURE_STATE_PATHS:
      raise ValueError(f"config.model.future_state_path={cfg.future_state_path!r}; valid: {list(FUTURE_STATE_PATHS)}")
    self.future_state = (layers.FutureStateProbe(width, cfg.video.future_frames, cfg.proprio_dim or
                                                 cfg.decoder.proprio_dim, cfg.future_state_aux,
                                                 feed=cfg.future_state_feed and cfg.future_state_path == "memory",
                                                 rngs=rngs)
                         if cfg.future_state_aux > 0 else None)
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
    with jax.named_scope("video_model"):  # the scopes name the parts in benchmarks/profile.py
      hidden = self.video.hidden_states(batch, tau_v, self.cfg.layer, rng)
    with jax.named_scope("readout"):
      return self.features(hidden)

  def loss(self, batch, rng):
    """Own-action + mapped-action flow-matching losses. Returns (loss, metrics)."""
    k_v, k_h, k_a, k_eps, k_drop = jax.random.split(rng, 5)
    x0, mask, mapped = batch["actions"], batch["action_mask"], batch["mapped_mask"]
    b = x0.shape[0]
    k_v, k_match = jax.random.split(k_v)
    tau_v = flow.sample_time(k_v, (b,), self.cfg.tau_v_sampler)
    at_inference = jax.random.bernoulli(k_match, self.cfg.tau_v_inference_fraction, (b,))
    tau_v = jnp.where(at_inference, self.cfg.tau_v, tau_v)
    tokens = self.training_features(batch, tau_v, k_h)
    with jax.named_scope("readout"):
      tokens = self.tokens(tokens)
    tau_a = flow.sample_time(k_a, (b,), self.cfg.action_time_sampler)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    k_drop, k_ctx = jax.random.split(k_drop)
    dropped = jax.random.bernoulli(k_drop, self.cfg.proprio_dropout, (b,))
    memory, visible = self.with_estimate(tokens, self._given_future_state(batch)), None
    if self.cfg.context_dropout > 0:
      hide = jax.random.bernoulli(k_ctx, self.cfg.context_dropout, (b,)) & (tau_v < 1.0)
      visible = self.memory_mask(memory.shape[1], hide)
    with jax.named_scope("action_decoder"):
      v = self.decoder(flow.interpolate(x0, eps, tau_a), tau_a, self.decoder_proprio(batch, tokens), memory,
                       cond_mask=visible, tau_v=tau_v, proprio_dropped=dropped)
    weight = flow.sample_weight(tau_a, self.cfg.action_loss)
    own_loss = flow.loss(v, x0, eps, mask & ~mapped, weight)
    mapped_loss = flow.loss(v, x0, eps, mapped, weight)
    loss = own_loss + self.cfg.mapped_weight * mapped_loss
    # valid_entries: the own-action mean's denominator (gradient accumulation weights micro-batches by it)
    metrics = {"own_action_loss": own_loss, "mapped_action_loss": mapped_loss,
               "valid_entries": jnp.sum((mask & ~mapped).astype(jnp.float32))}
    if self.probe is not None:  # shapes the trainable feature layers (the video model stays frozen)
      with jax.named_scope("auxiliary"):
        aux, probe_metrics = self.probe(tokens, batch["privileged"])
      loss, metrics = loss + aux, dict(metrics, **probe_metrics)
    if self.future_state is not None:  # where the robot will be, for action-labelled windows' existing frames
      labelled = jnp.any(mask, axis=(1, 2))
      with jax.named_scope("auxiliary"):
        aux, future_metrics = self.future_state(tokens, batch["future_proprio"],
                                                batch["future_mask"] & labelled[:, None])
      loss, metrics = loss + aux, dict(metrics, **future_metrics)
    return loss, metrics

  def tokens(self, features):
    """(B, N, D) features -> (B, M, D) the tokens the decoder and the probe read: the features, then the
    keypoint tokens (config.model.keypoints), the grid keypoints (grid_keypoints), then the motion tokens and their
    keypoints (motion_tokens)."""
    parts = [features]
    if self.keypoints is not None:
      parts.append(self.keypoints(features))
    if self.grid_keypoints is not None:
      parts.append(self.grid_keypoints(features))
    if self.motion is not None:
      motion = self.motion_features(features)
      parts.append(motion)
      if self.motion_keypoints is not None:
        parts.append(self.motion_keypoints(motion))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)

  def motion_features(self, features):
    """(B, N, D) features (frame-major) -> (B, H_f * P, D): each future token with its difference to the same
    position of the newest context frame, through an MLP, plus a learned position embedding."""
    v = self.cfg.video
    p = v.dit.tokens_per_frame
    last = features[:, (v.context_frames - 1) * p:v.context_frames * p]  # (B, P, D)
    future = features[:, v.context_frames * p:].reshape(features.shape[0], v.future_frames, p, -1)
    x = jnp.concatenate([future, future - last[:, None]], axis=-1).reshape(features.shape[0], v.future_frames * p, -1)
    return self.motion(x) + self.motion_pos.value[None]

  def memory_mask(self, length: int, hide_context):
    """(B, M) bool, the decoder memory entries visible per sample; `hide_context` (B,) hides the context frames'
    tokens and keypoints (`tokens`' layout), keeping the future's, the motion tokens and the probe's estimate."""
    v, f = self.cfg.video, self.cfg.video.context_frames + self.cfg.video.future_frames
    p = v.dit.tokens_per_frame
    is_context = jnp.zeros((length,), bool).at[:v.context_frames * p].set(True)
    start = f * p  # then the keypoint tokens of each readout, frame-major
    for k in (self.cfg.keypoints if self.keypoints is not None else 0,
              self.cfg.grid_keypoints if self.grid_keypoints is not None else 0):
      is_context = is_context.at[start:start + v.context_frames * k].set(True)
      start += f * k
    return ~(hide_context[:, None] & is_context[None])

  def _given_future_state(self, batch):
    """The window's true future proprio where the privileged-future diagnostic feeds it (else None)."""
    if not self.cfg.future_state_privileged:
      return None
    if "future_proprio" not in batch:
      raise ValueError("config.model.future_state_privileged feeds the true future proprio: the batch has no "
                       "`future_proprio` (it is a diagnostic of the future oracle, with no inference path)")
    return batch["future_proprio"]

  def with_estimate(self, tokens, future_state=None):
    """(B, M, D) tokens -> the decoder's cross-attention memory: plus the future-state probe's estimate (or the
    given `future_state`) and the privileged probe's state estimate (where they `feed` the decoder)."""
    memory = tokens if self.future_state is None else self.future_state.with_estimate(tokens, future_state)
    return memory if self.probe is None else jnp.concatenate(
        [memory, self.probe.with_estimate(tokens)[:, tokens.shape[1]:]], axis=1)

  def decoder_proprio(self, batch, tokens):
    """(B, P') what the decoder's proprio token reads: the proprio, and with `future_state_path='proprio'` the
    (gradient-stopped) future-state estimate from `tokens`, or the given true one, beside it."""
    if not (self.cfg.future_state_feed and self.cfg.future_state_path == "proprio"):
      return batch["proprio"]
    given = self._given_future_state(batch)
    state = self.future_state.estimate(tokens) if given is None else given
    b = batch["proprio"].shape[0]
    return jnp.concatenate([batch["proprio"], jax.lax.stop_gradient(state).reshape(b, -1)], axis=-1)

  def memory(self, features):
    """The decoder's cross-attention memory from the (B, N, D) features."""
    return self.with_estimate(self.tokens(features))

  def sample_actions(self, batch, cond, tau_v, rng, num_steps=None, noise_scale: float = 1.0):
    tokens = self.tokens(cond)
    cond, proprio = self.with_estimate(tokens, self._given_future_state(batch)), self.decoder_proprio(batch, tokens)
    kv = self.decoder.memory_kv(cond)  # the memory's keys and values: once per chunk, not per Euler step
    velocity = lambda x, tau: self.decoder(x, tau, proprio, cond, tau_v=tau_v, memory_kv=kv)
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

  def sample_with_future(self, batch, rng, num_steps=None, tau_v: float = 0.0, noise_scale: float = 1.0):
    """The oracle: action chunk (B, H_a, A) read from the batch's *true* future (`future_latents` or
    `future_images`) noised to `tau_v`, through exactly the features training computes (`training_features`,
    teacher forcing). At tau_v = 0 this is the VAM with a perfect video model; at tau_v = 1 the future is pure
    noise and the decoder acts from the context alone."""
    k_video, k_action = jax.random.split(rng)
    tau = jnp.full((batch["action_mask"].shape[0],), tau_v, jnp.float32)
    return self.sample_actions(batch, self.training_features(batch, tau, k_video), tau, k_action, num_steps,
                               noise_scale)

  def sample(self, batch, rng, num_steps=None, tau_v: float | None = None, noise_scale: float = 1.0):
    """Inference: action chunk (B, H_a, A) from the context frames (no future: the video flow imagines it from
    noise, `imagined_hidden_states`), instruction, proprio. A future in the batch is never read (but by the
    privileged-future diagnostic, `future_state_privileged`, which is no policy)."""
    tau_v = self.cfg.tau_v if tau_v is None else tau_v
    k_video, k_action = jax.random.split(rng)
    hidden = self.video.imagined_hidden_states(batch, k_video, tau_v, self.cfg.layer, self.cfg.video_steps)
    b = hidden.shape[0]
    return self.sample_actions(batch, self.features(hidden), jnp.full((b,), tau_v), k_action, num_steps, noise_scale)
