"""The stage-1 video model: frozen autoencoder + instruction encoder + latent video DiT, trained by flow
matching on the future latents only (METHOD.md).

Batch keys (window of `vam.input.windows`): `instruction` (B, L) uint8, `embodiment_id` (B,), `future_mask`
(B, H_f) bool (latent frames that exist), and either pixels -- `images` (B, H_o * tf, H, W, 3), `future_images`
(B, H_f * tf, H, W, 3), encoded on the fly -- or precomputed latents `context_latents` (B, H_o, h, w, C) and
`future_latents` (B, H_f, h, w, C) (`python -m vam.data.latents`).

Latents are standardised per channel with `latent_mean`/`latent_std`, measured on training data when a
run starts (`calibrate`) and frozen with the autoencoder, so the DiT sees unit-scale inputs whatever the
autoencoder's latent scale. With `predict_residual` (default) the flow's data are the future latents minus
the last context latent, divided by their per-channel RMS (`residual_std`, also calibrated): most of a
robot scene does not move between frames, so "nothing changes" is the zero of the target space and the
model spends its capacity on the motion. With `velocity_skip` the velocity is the best context-free one for
standardised data plus the DiT's output (zero at init), so the untrained model already predicts "no
change" as its mean. `FROZEN` names the parameters the optimizer never updates.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vam import flow
from vam.models import autoencoder as autoencoder_lib
from vam.models import layers
from vam.models import text as text_lib
from vam.models import video_dit

FROZEN = r"^(autoencoder|latent_mean|latent_std|residual_std)(/|$)"  # matched against '/'-joined parameter paths
PIXEL_KEYS = ("images", "future_images", "future_mask", "instruction", "embodiment_id")
LATENT_KEYS = ("context_latents", "future_latents", "future_mask", "instruction", "embodiment_id")


@dataclasses.dataclass(frozen=True)
class VideoModelConfig:
  autoencoder: autoencoder_lib.AutoencoderConfig
  text: text_lib.TextConfig
  dit: video_dit.DiTConfig
  context_frames: int  # H_o latent frames
  future_frames: int  # H_f latent frames
  time_sampler: str = "logit_normal"
  time_mean: float = 0.0
  time_std: float = 1.0
  time_uniform: float = 0.1  # fraction of taus drawn uniformly instead: every tau, up to 1, gets trained
  sample_steps: int = 20
  predict_residual: bool = True  # flow on (future - last context latent) / residual_std
  velocity_skip: bool = True  # v = c(tau) x_tau + DiT output (flow.gaussian_velocity_skip)
  # Privileged-state supervision of stage 1 (simulated data only; training only): the hidden states after DiT
  # block `privileged_layer` (the block the VAM reads) regress the simulator's task state with this weight, so
  # that where the target and the object are is easy to read from them (README "What the features know").
  privileged_aux: float = 0.0
  privileged_dim: int = 0
  privileged_layer: int = 0


def psnr(pred, target, mask=None):
  """PSNR in dB of [-1, 1] frames (B, T, H, W, 3); per example (B,), over the frames where `mask` (B, T)."""
  se = jnp.mean(jnp.square(pred - target), axis=(2, 3, 4))
  m = jnp.ones(se.shape, bool) if mask is None else mask
  mse = jnp.sum(se * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1)
  return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))


class VideoModel(nnx.Module):
  def __init__(self, cfg: VideoModelConfig, *, rngs: nnx.Rngs):
    if cfg.dit.frames != cfg.context_frames + cfg.future_frames:
      raise ValueError(f"dit.frames={cfg.dit.frames} must be context_frames + future_frames "
                       f"({cfg.context_frames} + {cfg.future_frames})")
    if cfg.future_frames < 1:
      raise ValueError("the video model needs future_frames >= 1 (its targets)")
    self.cfg = cfg
    self.autoencoder = autoencoder_lib.VideoAutoencoder(cfg.autoencoder, rngs=rngs)
    c = cfg.autoencoder.latent_channels
    self.latent_mean = nnx.Param(jnp.zeros((c,)))
    self.latent_std = nnx.Param(jnp.ones((c,)))
    self.residual_std = nnx.Param(jnp.ones((c,)))
    self.text = text_lib.InstructionEncoder(cfg.text, rngs=rngs)
    self.dit = video_dit.VideoDiT(cfg.dit, rngs=rngs)
    if cfg.privileged_aux > 0 and not 1 <= cfg.privileged_layer <= cfg.dit.depth:
      raise ValueError(f"config.model.privileged_layer={cfg.privileged_layer} must be in [1, {cfg.dit.depth}]")
    self.probe = (layers.PrivilegedProbe(cfg.dit.width, cfg.privileged_dim, cfg.privileged_aux, rngs=rngs)
                  if cfg.privileged_aux > 0 else None)

  # ---- latents ----
  def encode(self, video):
    """Pixels (B, T, H, W, 3) -> standardised latents (B, T / tf, h, w, C) (no gradient to the autoencoder)."""
    return self.standardise(jax.lax.stop_gradient(self.autoencoder.encode(video)))

  def standardise(self, z):
    return (z - self.latent_mean.value) / self.latent_std.value

  def decode(self, z):
    """Standardised latents -> frames in [-1, 1]."""
    return self.autoencoder.decode(z * self.latent_std.value + self.latent_mean.value)

  def latents(self, batch):
    """(context, future) standardised latents of a batch, from stored latents or by encoding its pixels."""
    if "context_latents" in batch:
      return self.standardise(batch["context_latents"]), self.standardise(batch["future_latents"])
    return self.encode(batch["images"]), self.encode(batch["future_images"])

  def calibrate(self, batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-channel (C,) mean and std of the raw latents of a batch (context and future frames), and the RMS
    of the standardised future-minus-last-context residual (over the future frames that exist)."""
    if "context_latents" in batch:
      ctx, fut = batch["context_latents"], batch["future_latents"]
    else:
      ctx, fut = self.autoencoder.encode(batch["images"]), self.autoencoder.encode(batch["future_images"])
    z = jnp.concatenate([ctx, fut], axis=1)
    axes = tuple(range(z.ndim - 1))
    mean, std = jnp.mean(z, axis=axes), jnp.maximum(jnp.std(z, axis=axes), 1e-3)
    residual = (fut - ctx[:, -1:]) / std
    m = jnp.broadcast_to(batch["future_mask"][:, :, None, None, None], residual.shape[:-1] + (1,))
    rms = jnp.sqrt(jnp.sum(jnp.square(residual) * m, axis=axes) / jnp.maximum(jnp.sum(m, axis=axes), 1.0))
    return mean, std, jnp.maximum(rms, 1e-3)

  # ---- the flow's data space: future latents (or their residual to the last context frame) ----
  def to_flow(self, context, future):
    if not self.cfg.predict_residual:
      return future
    return (future - context[:, -1:]) / self.residual_std.value

  def from_flow(self, context, x):
    if not self.cfg.predict_residual:
      return x
    return context[:, -1:] + x * self.residual_std.value

  # ---- the flow ----
  def condition(self, batch):
    words, mask = self.text(batch["instruction"])
    return words, mask

  def velocity(self, context, noisy_future, tau, words, word_mask, embodiment_id, also_hidden: int | None = None):
    """The flow's velocity (B, H_f, h, w, C); with `also_hidden=k`, (velocity, hidden states after block k)."""
    out = self.dit(context, noisy_future, tau, words, word_mask, embodiment_id, also_hidden=also_hidden)
    v, hidden = (out, None) if also_hidden is None else out
    if self.cfg.velocity_skip:  # the DiT learns the correction to the best context-free velocity
      v = v + flow.gaussian_velocity_skip(tau)[:, None, None, None, None] * noisy_future
    return v if also_hidden is None else (v, hidden)

  def flow_data(self, batch):
    """What every flow computation starts from: context latents (B, H_o, h, w, C), the flow's clean data x0
    (B, H_f, h, w, C) and the instruction tokens and mask."""
    context, future = self.latents(batch)
    words, word_mask = self.condition(batch)
    return context, self.to_flow(context, future), words, word_mask

  def loss(self, batch, rng):
    """Flow matching on the future latents only (masked by `future_mask`). Returns (loss, metrics)."""
    k_t, k_eps = jax.random.split(rng)
    context, x0, words, word_mask = self.flow_data(batch)
    b = x0.shape[0]
    tau = flow.sample_time(k_t, (b,), self.cfg.time_sampler, mean=self.cfg.time_mean, std=self.cfg.time_std)
    # The logit-normal hardly reaches tau ~ 1, where sampling starts: mix in a few uniform draws.
    k_u, k_pick = jax.random.split(jax.random.fold_in(k_t, 1))
    tau = jnp.where(jax.random.uniform(k_pick, (b,)) < self.cfg.time_uniform, jax.random.uniform(k_u, (b,)), tau)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    x_tau = flow.interpolate(x0, eps, tau)
    mask = batch["future_mask"][:, :, None, None, None]
    if self.probe is None:
      v = self.velocity(context, x_tau, tau, words, word_mask, batch["embodiment_id"])
      loss = flow.loss(v, x0, eps, mask)
      return loss, {"flow_loss": loss}
    v, hidden = self.velocity(context, x_tau, tau, words, word_mask, batch["embodiment_id"],
                              also_hidden=self.cfg.privileged_layer)
    loss = flow.loss(v, x0, eps, mask)
    aux, metrics = self.probe(hidden, batch["privileged"])
    return loss + aux, {"flow_loss": loss, **metrics}

  def loss_at(self, batch, tau, eps):
    """Per-example flow loss (B,) at given times tau (B,) and noise eps (B, H_f, h, w, C): low-variance
    validation losses bucketed by tau (fixed times and noise)."""
    context, x0, words, word_mask = self.flow_data(batch)
    v = self.velocity(context, flow.interpolate(x0, eps, tau), tau, words, word_mask, batch["embodiment_id"])
    err = jnp.mean(jnp.square(v - flow.target_velocity(x0, eps)), axis=(2, 3, 4))
    m = batch["future_mask"]
    return jnp.sum(err * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1)

  def hidden_states(self, batch, tau_v, layer: int, rng):
    """Hidden states after DiT block `layer` (B, N, D) with the ground-truth future latents noised to tau_v (B,)
    (teacher forcing: how stage 2 trains)."""
    context, x0, words, word_mask = self.flow_data(batch)
    eps = jax.random.normal(rng, x0.shape, x0.dtype)
    return self.dit(context, flow.interpolate(x0, eps, tau_v), tau_v, words, word_mask,
                    batch["embodiment_id"], layer=layer)

  def context_latents(self, batch):
    """Standardised context latents (B, H_o, h, w, C) from stored latents or the context frames."""
    return self.standardise(batch["context_latents"]) if "context_latents" in batch else self.encode(batch["images"])

  def imagined_hidden_states(self, batch, rng, tau_v: float, layer: int, num_steps: int):
    """Inference (METHOD.md): the future is unknown, so it starts as noise at tau = 1 and is integrated down
    to `tau_v` with `num_steps` Euler steps (tau_v = 1: none, a single forward pass); returns the hidden
    states after block `layer` (B, N, D) at that point."""
    context = self.context_latents(batch)
    words, word_mask = self.condition(batch)
    b, (h, w), c = context.shape[0], self.cfg.dit.latent_size, self.cfg.dit.latent_channels
    x = jax.random.normal(rng, (b, self.cfg.future_frames, h, w, c), context.dtype)
    if tau_v < 1.0:
      velocity = lambda x, tau: self.velocity(context, x, tau, words, word_mask, batch["embodiment_id"])
      x = flow.euler(velocity, x, max(1, num_steps), tau_end=tau_v)
    tau = jnp.full((b,), tau_v, context.dtype)
    return self.dit(context, x, tau, words, word_mask, batch["embodiment_id"], layer=layer)

  def sample(self, batch, rng, num_steps: int | None = None, tau_stop: float = 0.0):
    """Standardised future latents (B, H_f, h, w, C): Euler integration of the flow from noise at tau = 1 down
    to `tau_stop` (at tau_stop > 0 the result is the partly denoised state, mapped back to latents)."""
    context, future = self.latents(batch)
    words, word_mask = self.condition(batch)
    velocity = lambda x, tau: self.velocity(context, x, tau, words, word_mask, batch["embodiment_id"])
    noise = jax.random.normal(rng, future.shape, future.dtype)
    x = flow.euler(velocity, noise, num_steps or self.cfg.sample_steps, tau_end=tau_stop)
    return self.from_flow(context, x)

  def predict_frames(self, batch, rng, num_steps: int | None = None):
    """Sampled future frames in [-1, 1] (B, H_f * tf, H, W, 3)."""
    return self.decode(self.sample(batch, rng, num_steps))
