"""Shared transformer pieces: sinusoidal time embedding, attention with QK-RMSNorm, adaLN modulation."""

import jax
import jax.numpy as jnp
from flax import nnx


def timestep_embedding(t, dim: int, max_period: float = 10_000.0):
  """Sinusoidal embedding of flow times t (B,) in [0, 1] -> (B, dim)."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half) / half)
  args = (t * 1000.0)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class Mlp(nnx.Module):
  def __init__(self, d_in: int, d_hidden: int, d_out: int, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(d_in, d_hidden, rngs=rngs)
    self.fc2 = nnx.Linear(d_hidden, d_out, rngs=rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x)))


class Attention(nnx.Module):
  """Multi-head attention (self or cross) with RMS-normalised queries and keys."""

  def __init__(self, dim: int, heads: int, kv_dim: int | None = None, *, rngs: nnx.Rngs):
    if dim % heads:
      raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
    kv_dim = kv_dim or dim
    self.heads, self.head_dim = heads, dim // heads
    self.q = nnx.Linear(dim, dim, use_bias=False, rngs=rngs)
    self.k = nnx.Linear(kv_dim, dim, use_bias=False, rngs=rngs)
    self.v = nnx.Linear(kv_dim, dim, use_bias=False, rngs=rngs)
    self.out = nnx.Linear(dim, dim, rngs=rngs)
    self.q_norm = nnx.RMSNorm(self.head_dim, rngs=rngs)
    self.k_norm = nnx.RMSNorm(self.head_dim, rngs=rngs)

  def __call__(self, x, context=None, mask=None):
    """x (B, N, D), context (B, M, Dc) or None (self-attention), mask (B, M) bool of valid keys."""
    context = x if context is None else context
    split = lambda y: y.reshape(*y.shape[:-1], self.heads, self.head_dim)
    q, k, v = self.q_norm(split(self.q(x))), self.k_norm(split(self.k(context))), split(self.v(context))
    logits = jnp.einsum("bnhd,bmhd->bhnm", q, k) / jnp.sqrt(self.head_dim).astype(q.dtype)
    if mask is not None:
      logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    y = jnp.einsum("bhnm,bmhd->bnhd", weights, v)
    return self.out(y.reshape(*x.shape[:-1], -1))


class AdaLN(nnx.Module):
  """Conditioning vector -> `n` (shift, scale, gate) triples; zero-initialised so blocks start as identity."""

  def __init__(self, cond_dim: int, dim: int, n: int, *, rngs: nnx.Rngs):
    self.n = n
    self.proj = nnx.Linear(cond_dim, 3 * n * dim, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, c):
    return jnp.split(self.proj(jax.nn.silu(c))[:, None, :], 3 * self.n, axis=-1)


def modulate(x, shift, scale):
  return x * (1.0 + scale) + shift
