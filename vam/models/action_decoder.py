"""The flow-matching action decoder (METHOD.md, stage 2), shared by the VAM and the image baseline.

Tokens: [proprio token (or a learned mask token); H_a noisy action tokens], each embedded by an MLP,
plus learned absolute positions. Each block: cross-attention to the conditioning features ->
self-attention over the sequence -> MLP, each with adaLN shift/scale/gate (gates start at zero)
and QK-RMSNorm. Time conditioning fuses tau_a and (for the VAM) tau_v: their sinusoidal embeddings
pass through MLPs and a low-rank bilinear term; with `global_cond` the mean conditioning token is added to it
(FiLM by the observation, as in Diffusion Policy's U-Net). The output is the velocity of the action tokens,
predicted directly or implied by a prediction of the clean chunk (`prediction`, `vam.flow.velocity_from_x0`).
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vam import flow
from vam.models import layers


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  action_dim: int
  proprio_dim: int
  horizon: int  # H_a
  cond_dim: int  # width of the conditioning features
  width: int = 128
  depth: int = 4
  heads: int = 4
  mlp_ratio: int = 4
  time_dim: int = 128
  bilinear_rank: int = 16
  # Also FiLM every block with the mean of the conditioning tokens (added to the adaLN time conditioning):
  # observations then steer every layer from the first step, not only through cross-attention.
  global_cond: bool = False
  gate_init: float = 0.0  # adaLN gates at initialisation: 0 = adaLN-zero (DiT), 1 = open residual branches
  # What the output layer predicts (vam.flow.PREDICTIONS): the velocity, or the clean chunk turned into the
  # velocity it implies (the decoder returns a velocity either way).
  prediction: str = "velocity"
  # The cross-attention keys and values of the memory, which every block and every flow step reads unchanged:
  # True computes all blocks' in one matmul (`layers.stacked_keys_values`; the sampler then once per chunk, not
  # per Euler step); False, each block its own, every call (the same numbers, slower).
  stacked_memory_kv: bool = True

  def __post_init__(self):
    if self.prediction not in flow.PREDICTIONS:
      raise ValueError(f"config.model.decoder.prediction={self.prediction!r}; valid: {list(flow.PREDICTIONS)}")


class Block(nnx.Module):
  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    d = cfg.width
    self.norms = nnx.List([nnx.LayerNorm(d, use_scale=False, use_bias=False, rngs=rngs) for _ in range(3)])
    self.cross = layers.Attention(d, cfg.heads, kv_dim=cfg.cond_dim, rngs=rngs)
    self.self_attn = layers.Attention(d, cfg.heads, rngs=rngs)
    self.mlp = layers.Mlp(d, cfg.mlp_ratio * d, d, rngs=rngs)
    self.ada = layers.AdaLN(d, d, 3, gate_init=cfg.gate_init, rngs=rngs)

  def __call__(self, x, cond, cond_mask, c, kv=None):
    s1, g1, a1, s2, g2, a2, s3, g3, a3 = self.ada(c)
    x = x + a1 * self.cross(layers.modulate(self.norms[0](x), s1, g1), cond, cond_mask, kv=kv)
    x = x + a2 * self.self_attn(layers.modulate(self.norms[1](x), s2, g2))
    return x + a3 * self.mlp(layers.modulate(self.norms[2](x), s3, g3))


class ActionDecoder(nnx.Module):
  def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
    d = cfg.width
    self.cfg = cfg
    self.action_in = layers.Mlp(cfg.action_dim, d, d, rngs=rngs)
    self.proprio_in = layers.Mlp(cfg.proprio_dim, d, d, rngs=rngs)
    self.proprio_mask_token = nnx.Param(jnp.zeros((d,)))
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1 + cfg.horizon, d)))
    self.time_a = layers.Mlp(cfg.time_dim, d, d, rngs=rngs)
    self.time_v = layers.Mlp(cfg.time_dim, d, d, rngs=rngs)
    self.bilinear_a = nnx.Linear(cfg.time_dim, cfg.bilinear_rank, rngs=rngs)
    self.bilinear_v = nnx.Linear(cfg.time_dim, cfg.bilinear_rank, rngs=rngs)
    self.bilinear_out = nnx.Linear(cfg.bilinear_rank, d, rngs=rngs)
    self.global_in = layers.Mlp(cfg.cond_dim, d, d, rngs=rngs) if cfg.global_cond else None
    self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.depth)])
    self.final_norm = nnx.LayerNorm(d, use_scale=False, use_bias=False, rngs=rngs)
    self.final_ada = layers.AdaLN(d, d, 1, rngs=rngs)
    self.out = nnx.Linear(d, cfg.action_dim, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def memory_kv(self, cond):
    """Each block's cross-attention (keys, values) of the memory cond (B, M, cond_dim): what `__call__` takes as
    `memory_kv` (a sampler computes it once for all its flow steps). None without `stacked_memory_kv`."""
    if not self.cfg.stacked_memory_kv:
      return None
    return layers.stacked_keys_values([block.cross for block in self.blocks], cond)

  def __call__(self, noisy_actions, tau_a, proprio, cond, *, cond_mask=None, tau_v=None, proprio_dropped=None,
               memory_kv=None):
    """Velocity (B, H_a, A) of `noisy_actions` (B, H_a, A) at flow time tau_a (B,).

    proprio (B, P); cond (B, M, cond_dim) with optional cond_mask (B, M); tau_v (B,) for the VAM (the
    image baseline passes None); proprio_dropped (B,) bool replaces proprio with the mask token;
    memory_kv: `memory_kv(cond)`, computed once by a caller that calls the decoder several times on one cond.
    """
    cfg = self.cfg
    e_a = layers.timestep_embedding(tau_a, cfg.time_dim)
    c = self.time_a(e_a)
    if tau_v is not None:
      e_v = layers.timestep_embedding(tau_v, cfg.time_dim)
      c = c + self.time_v(e_v) + self.bilinear_out(self.bilinear_a(e_a) * self.bilinear_v(e_v))
    if self.global_in is not None:
      w = jnp.ones(cond.shape[:2], cond.dtype) if cond_mask is None else cond_mask.astype(cond.dtype)
      pooled = jnp.sum(cond * w[..., None], axis=1) / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0)
      c = c + self.global_in(pooled)
    p = self.proprio_in(proprio)
    if proprio_dropped is not None:
      p = jnp.where(proprio_dropped[:, None], self.proprio_mask_token.value[None], p)
    x = jnp.concatenate([p[:, None], self.action_in(noisy_actions)], axis=1) + self.pos.value[None]
    memory_kv = self.memory_kv(cond) if memory_kv is None else memory_kv
    for i, block in enumerate(self.blocks):
      x = block(x, cond, cond_mask, c, kv=None if memory_kv is None else memory_kv[i])
    shift, scale, _ = self.final_ada(c)
    out = self.out(layers.modulate(self.final_norm(x), shift, scale))[:, 1:]
    return flow.velocity_from_x0(noisy_actions, out, tau_a) if cfg.prediction == "x0" else out
