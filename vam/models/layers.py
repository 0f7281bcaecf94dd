"""Shared transformer pieces: sinusoidal time embedding, attention with QK-RMSNorm and optional rotary
positions, LoRA-capable linear layers, adaLN modulation; and the memory/precision knobs every model shares
(rematerialisation policies, the compute dtype of its matmuls)."""

import jax
import jax.numpy as jnp
from flax import nnx

# What a rematerialised block keeps from its forward pass (the rest is recomputed in the backward pass):
# nothing ("full"), matmul outputs ("dots"), or matmul outputs without a batch dimension ("dots_no_batch",
# i.e. weights-only products). False/"none": keep everything (no remat).
REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def remat(fn, policy, **kwargs):
  """`fn` rematerialised under `policy` (a REMAT_POLICIES name; True = "full"; False/"none"/"" = unchanged)."""
  if policy is True:
    policy = "full"
  if policy in (False, None, "", "none"):
    return fn
  if policy not in REMAT_POLICIES:
    raise ValueError(f"remat policy {policy!r}; valid: {['none'] + list(REMAT_POLICIES)}")
  return jax.checkpoint(fn, policy=REMAT_POLICIES[policy], **kwargs)


def set_compute_dtype(model: nnx.Module, dtype: str) -> nnx.Module:
  """Mixed precision: every Linear/Conv/Embed of `model` computes in `dtype` (inputs and weights cast at the
  call) while its parameters -- the optimizer's master weights -- stay float32. Norms, softmax, the
  residual stream and losses stay float32 (type promotion lifts a bf16 matmul output when it meets them)."""
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype={dtype!r}; valid: {list(COMPUTE_DTYPES)}")
  for _, module in nnx.iter_graph(model):
    if isinstance(module, (nnx.Linear, nnx.Conv, nnx.Embed, nnx.Einsum)):
      module.dtype = COMPUTE_DTYPES[dtype]
  return model


def timestep_embedding(t, dim: int, max_period: float = 10_000.0):
  """Sinusoidal embedding of flow times t (B,) in [0, 1] -> (B, dim)."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half) / half)
  args = (t * 1000.0)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class LoraLinear(nnx.Module):
  """`base` (an nnx.Linear) plus, when rank > 0, a low-rank update `x A B * alpha / rank` with B = 0 at init.

  The base sits under its own name whatever the rank, so a rank-0 (pretrained) checkpoint and a LoRA model
  share parameter paths: fine-tuning loads the base and trains only `lora_a`/`lora_b`."""

  def __init__(self, d_in: int, d_out: int, *, rank: int = 0, alpha: float | None = None, use_bias: bool = True,
               rngs: nnx.Rngs):
    self.base = nnx.Linear(d_in, d_out, use_bias=use_bias, rngs=rngs)
    self.rank = rank
    if rank > 0:
      self.scale = (alpha or rank) / rank
      self.lora_a = nnx.Param(jax.random.normal(rngs.params(), (d_in, rank)) / jnp.sqrt(d_in))
      self.lora_b = nnx.Param(jnp.zeros((rank, d_out)))

  def __call__(self, x):
    y = self.base(x)
    if self.rank > 0:
      y = y + (x @ self.lora_a.value) @ self.lora_b.value * self.scale
    return y


class Mlp(nnx.Module):
  def __init__(self, d_in: int, d_hidden: int, d_out: int, *, linear=nnx.Linear, rngs: nnx.Rngs):
    self.fc1 = linear(d_in, d_hidden, rngs=rngs)
    self.fc2 = linear(d_hidden, d_out, rngs=rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x)))


class Attention(nnx.Module):
  """Multi-head attention (self or cross) with RMS-normalised queries and keys."""

  def __init__(self, dim: int, heads: int, kv_dim: int | None = None, *, linear=nnx.Linear, rngs: nnx.Rngs):
    if dim % heads:
      raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
    kv_dim = kv_dim or dim
    self.heads, self.head_dim = heads, dim // heads
    self.q = linear(dim, dim, use_bias=False, rngs=rngs)
    self.k = linear(kv_dim, dim, use_bias=False, rngs=rngs)
    self.v = linear(kv_dim, dim, use_bias=False, rngs=rngs)
    self.out = linear(dim, dim, rngs=rngs)
    self.q_norm = nnx.RMSNorm(self.head_dim, rngs=rngs)
    self.k_norm = nnx.RMSNorm(self.head_dim, rngs=rngs)

  def split_heads(self, y):
    return y.reshape(*y.shape[:-1], self.heads, self.head_dim)

  def keys_values(self, context):
    """(B, M, Dc) -> the (normalised) keys and the values, each (B, M, heads, head_dim)."""
    return self.k_norm(self.split_heads(self.k(context))), self.split_heads(self.v(context))

  def __call__(self, x, context=None, mask=None, rope=None, kv=None):
    """x (B, N, D), context (B, M, Dc) or None (self-attention), mask (B, M) bool of valid keys,
    rope: (cos, sin) each (N, head_dim / 2) rotating queries and keys (self-attention only);
    kv: the context's `keys_values`, computed once by the caller (then `context` is not read)."""
    k, v = self.keys_values(x if context is None else context) if kv is None else kv
    q = self.q_norm(self.split_heads(self.q(x)))
    if rope is not None:
      q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    logits = jnp.einsum("bnhd,bmhd->bhnm", q, k) / jnp.sqrt(self.head_dim).astype(q.dtype)
    if mask is not None:
      logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    y = jnp.einsum("bhnm,bmhd->bnhd", weights, v)
    return self.out(y.reshape(*x.shape[:-1], -1))


def stacked_keys_values(attentions, context):
  """`keys_values` of one context for several Attention layers, as ONE matmul of the context with their K and V
  kernels side by side (the same numbers as each layer's own; for small models one wide matmul runs several
  times faster than 2 x len(attentions) narrow ones). Falls back to per-layer calls where a layer's projections
  are not bias-free nnx.Linear (e.g. LoRA)."""
  linears = [lin for a in attentions for lin in (a.k, a.v)]
  if not all(type(lin) is nnx.Linear and lin.bias is None for lin in linears):  # pylint: disable=unidiomatic-typecheck
    return [a.keys_values(context) for a in attentions]
  dtype = linears[0].dtype or context.dtype
  kernel = jnp.concatenate([lin.kernel.value for lin in linears], axis=1).astype(dtype)
  out = jnp.split(context.astype(dtype) @ kernel, 2 * len(attentions), axis=-1)
  return [(a.k_norm(a.split_heads(out[2 * i])), a.split_heads(out[2 * i + 1])) for i, a in enumerate(attentions)]


class TransformerBlock(nnx.Module):
  """Pre-norm transformer block (self-attention with QK-RMSNorm, MLP)."""

  def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = Attention(dim, heads, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.mlp = Mlp(dim, 4 * dim, dim, rngs=rngs)

  def __call__(self, x, mask=None):
    x = x + self.attn(self.norm1(x), mask=mask)
    return x + self.mlp(self.norm2(x))


def rope_3d(positions, head_dim: int, base: float = 10_000.0):
  """Rotary angles for tokens at integer (t, y, x) `positions` (N, 3): (cos, sin), each (N, head_dim / 2).

  The head's frequency pairs are split over the three axes (time gets the remainder), each axis with its
  own geometric frequency ladder, so attention logits depend on relative offsets in time and space."""
  if head_dim % 2:
    raise ValueError(f"rotary positions need an even head width, got {head_dim}")
  pairs = head_dim // 2
  per_axis = [pairs - 2 * (pairs // 3), pairs // 3, pairs // 3]
  angles = []
  for axis, n in enumerate(per_axis):
    if n:
      freqs = base ** (-jnp.arange(n) / n)
      angles.append(positions[:, axis:axis + 1].astype(jnp.float32) * freqs[None])
  angles = jnp.concatenate(angles, axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, cos, sin):
  """Rotates x (B, N, H, D) pairwise (first half, second half of D) by per-token angles (N, D / 2)."""
  x1, x2 = jnp.split(x, 2, axis=-1)
  c, s = cos[None, :, None, :].astype(x.dtype), sin[None, :, None, :].astype(x.dtype)
  return jnp.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)


class AdaLN(nnx.Module):
  """Conditioning vector -> `n` (shift, scale, gate) triples. Zero-initialised (adaLN-zero: blocks start as the
  identity); `gate_init` > 0 opens the residual gates from the start instead (faster-starting for small models:
  every block gets gradients at step 1)."""

  def __init__(self, cond_dim: int, dim: int, n: int, *, gate_init: float = 0.0, rngs: nnx.Rngs):
    self.n = n
    self.proj = nnx.Linear(cond_dim, 3 * n * dim, kernel_init=nnx.initializers.zeros, rngs=rngs)
    if gate_init:
      bias = jnp.zeros((n, 3, dim)).at[:, 2].set(gate_init)
      self.proj.bias.value = bias.reshape(-1)

  def __call__(self, c):
    return jnp.split(self.proj(jax.nn.silu(c))[:, None, :], 3 * self.n, axis=-1)


def modulate(x, shift, scale):
  return x * (1.0 + scale) + shift


def grid_coordinates(h: int, w: int):
  """(h * w, 2) the (x, y) of each cell of a row-major h x w grid, corners at -1 and 1."""
  ys, xs = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
  return jnp.stack([xs.ravel(), ys.ravel()], axis=-1)


def soft_argmax(scores, coords, temperature):
  """Spatial softmax: scores (B, N, K) over N cells at coords (N, 2) or (B, N, K, 2) -> (expected (B, K, 2)
  position per keypoint, the (B, N, K) softmax weights)."""
  attn = jax.nn.softmax(scores / temperature, axis=1)
  if coords.ndim == 2:
    return jnp.einsum("bnk,nc->bkc", attn, coords), attn
  return jnp.einsum("bnk,bnkc->bkc", attn, coords), attn


class TokenKeypoints(nnx.Module):
  """Spatial-softmax keypoints over a grid of tokens: (B, F * h * w, D) tokens (frame-major, row-major) ->
  (B, F * K, D), one token per frame and keypoint. Each keypoint is a softmax over the frame's tokens of a
  per-token score; its position is the expected token position, refined within the token, and its feature the
  softmax-pooled token. A coarse token holds where within it a 3-pixel ball sits, but the soft-argmax of a 4 x 4
  grid alone cannot say; two ways to refine: `subcells` = 1, a per-token offset of up to half the token spacing;
  `subcells` = s > 1, each token scores an s x s grid of sub-cells (the score map "unpatchified" to (s h) x (s w)
  cells, as the DiT's output layer unpatchifies latents), and the softmax runs over every sub-cell of the frame.
  Position and feature are embedded together, plus a learned embedding of the frame and keypoint. This is the
  readout a conv policy's spatial softmax gives the baseline, on a transformer's tokens."""

  def __init__(self, width: int, keypoints: int, frames: int, grid: tuple[int, int], *, subcells: int = 1,
               rngs: nnx.Rngs):
    if subcells < 1:
      raise ValueError(f"TokenKeypoints: subcells={subcells} must be >= 1 (config.model.keypoint_subcells)")
    self.keypoints, self.frames, self.grid, self.subcells = keypoints, frames, tuple(grid), subcells
    # per keypoint: score, x offset, y offset (subcells 1) | one score per sub-cell (subcells > 1)
    self.score = nnx.Linear(width, (3 if subcells == 1 else subcells * subcells) * keypoints, rngs=rngs)
    self.temperature = nnx.Param(jnp.ones(()))
    self.embed = Mlp(2 + width, width, width, rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (frames * keypoints, width)))

  def _cell_coordinates(self):
    """(h * w, s * s, 2): the (x, y) of each token's sub-cell centres; token centres as `grid_coordinates`."""
    (h, w), s = self.grid, self.subcells
    step = jnp.asarray([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])  # distance between token centres
    frac = (jnp.arange(s) + 0.5) / s - 0.5  # sub-cell centres within a token, in token spacings
    sy, sx = jnp.meshgrid(frac, frac, indexing="ij")
    within = jnp.stack([sx.ravel(), sy.ravel()], axis=-1) * step  # (s * s, 2)
    return grid_coordinates(h, w)[:, None] + within[None]

  def points(self, tokens):
    """(B, F * h * w, D) -> ((B, F, K, 2) keypoint positions, (B, F, K, D) pooled features). Positions: token
    centres span [-1, 1]; a keypoint may sit up to half a token spacing beyond, within an edge token."""
    b, n, d = tokens.shape
    (h, w), k, f, s = self.grid, self.keypoints, self.frames, self.subcells
    if n != f * h * w:
      raise ValueError(f"TokenKeypoints: {n} tokens, expected {f} frames x {h} x {w}")
    x = tokens.reshape(b * f, h * w, d)
    if s == 1:
      out = self.score(x).reshape(b * f, h * w, k, 3)
      spacing = jnp.asarray([1.0 / max(w - 1, 1), 1.0 / max(h - 1, 1)])  # half the distance between centres
      coords = grid_coordinates(h, w)[None, :, None] + jnp.tanh(out[..., 1:]) * spacing
      points, attn = soft_argmax(out[..., 0], coords, self.temperature.value)
    else:  # (B F, h w, K, s s) scores -> one softmax over the frame's h w s s sub-cells
      scores = self.score(x).reshape(b * f, h * w, k, s * s).transpose(0, 1, 3, 2).reshape(b * f, -1, k)
      points, attn = soft_argmax(scores, self._cell_coordinates().reshape(-1, 2), self.temperature.value)
      attn = attn.reshape(b * f, h * w, s * s, k).sum(axis=2)  # a token's weight: its sub-cells' sum
    pooled = jnp.einsum("bnk,bnd->bkd", attn, x)
    return points.reshape(b, f, k, 2), pooled.reshape(b, f, k, d)

  def __call__(self, tokens):
    points, pooled = self.points(tokens)
    b, f, k, d = pooled.shape
    x = self.embed(jnp.concatenate([points, pooled], axis=-1)).reshape(b, f * k, d)
    return x + self.pos.value[None]


class GridKeypoints(nnx.Module):
  """Spatial-softmax keypoints on the latent grid itself: each (B, F * h * w, D) token is unpatchified to its
  p x p cells of `channels` features (a learned linear map, as the DiT's output layer unpatchifies its velocity),
  giving every frame a (p h) x (p w) feature map at the latents' own resolution; a 3 x 3 conv with GroupNorm reads
  each frame's map beside its difference to the newest context frame's (what moved), and K keypoints per frame
  are a spatial softmax over the result: (B, F * K, D) tokens of position and pooled feature. The 4 x 4-token grid
  of a small DiT cannot say where within a token an arm ends; its tokens' unpatchified cells can."""

  def __init__(self, width: int, keypoints: int, frames: int, grid: tuple[int, int], patch: int, context_frames: int,
               channels: int = 32, *, rngs: nnx.Rngs):
    if keypoints < 1 or not 1 <= context_frames <= frames:
      raise ValueError(f"GridKeypoints: keypoints={keypoints} must be >= 1 and context_frames={context_frames} in "
                       f"[1, frames={frames}] (config.model.grid_keypoints)")
    self.keypoints, self.frames, self.grid, self.patch = keypoints, frames, tuple(grid), patch
    self.context_frames, self.channels = context_frames, channels
    self.unpatch = nnx.Linear(width, patch * patch * channels, rngs=rngs)
    self.conv = nnx.Conv(2 * channels, channels, (3, 3), rngs=rngs)
    self.norm = nnx.GroupNorm(channels, num_groups=next(g for g in (8, 4, 2, 1) if channels % g == 0), rngs=rngs)
    self.score = nnx.Conv(channels, keypoints, (1, 1), rngs=rngs)
    self.temperature = nnx.Param(jnp.ones(()))
    self.embed = Mlp(2 + channels, width, width, rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (frames * keypoints, width)))

  def feature_maps(self, tokens):
    """(B, F * h * w, D) -> (B, F, p h, p w, channels), each token's p x p cells in place."""
    b, n, _ = tokens.shape
    (h, w), p, f, c = self.grid, self.patch, self.frames, self.channels
    if n != f * h * w:
      raise ValueError(f"GridKeypoints: {n} tokens, expected {f} frames x {h} x {w}")
    x = self.unpatch(tokens).reshape(b, f, h, w, p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, f, h * p, w * p, c)

  def __call__(self, tokens):
    maps = self.feature_maps(tokens)
    b, f, hh, ww, c = maps.shape
    moved = maps - maps[:, self.context_frames - 1:self.context_frames]
    x = jnp.concatenate([maps, moved], axis=-1).reshape(b * f, hh, ww, 2 * c)
    x = jax.nn.silu(self.norm(self.conv(x)))
    scores = self.score(x).reshape(b * f, hh * ww, self.keypoints)
    points, attn = soft_argmax(scores, grid_coordinates(hh, ww), self.temperature.value)
    pooled = jnp.einsum("bnk,bnc->bkc", attn, x.reshape(b * f, hh * ww, c))
    out = self.embed(jnp.concatenate([points, pooled], axis=-1)).reshape(b, f * self.keypoints, -1)
    return out + self.pos.value[None]


class FutureStateProbe(nnx.Module):
  """Where the robot will be: one learned query per future frame cross-attends to the decoder's memory (B, M, D)
  and an MLP regresses that frame's normalised proprio (B, H_f, P) -- the robot's own joint state, in every
  action-labelled demo, not the simulator's. Trained by its own loss (`weight` x masked MSE); with `feed`, its
  estimate (no gradient from the action loss, so it stays an estimator) becomes H_f more decoder tokens, and the
  decoder reads the arm's future pose from the frames instead of having to learn to see it through the flow loss.
  """

  def __init__(self, width: int, future_frames: int, proprio_dim: int, weight: float, *, feed: bool = False,
               heads: int = 4, rngs: nnx.Rngs):
    self.weight = weight
    self.queries = nnx.Param(0.02 * jax.random.normal(rngs.params(), (future_frames, width)))
    self.attend = Attention(width, heads, rngs=rngs)
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.head = Mlp(width, width, proprio_dim, rngs=rngs)
    self.feed_in = Mlp(proprio_dim, width, width, rngs=rngs) if feed else None
    self.feed_pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (future_frames, width))) if feed else None

  def estimate(self, memory):
    """(B, M, D) -> (B, H_f, P) the normalised proprio at each future frame."""
    q = jnp.broadcast_to(self.queries.value[None], (memory.shape[0],) + self.queries.value.shape)
    x = q + self.attend(q, context=memory)
    return self.head(self.norm(x))

  def __call__(self, memory, target, mask):
    """(weighted loss, metrics): masked MSE of the estimate against `target` (B, H_f, P) where `mask` (B, H_f)."""
    err = jnp.mean(jnp.square(self.estimate(memory) - target), axis=-1)
    m = mask.astype(err.dtype)
    mse = jnp.sum(err * m) / jnp.maximum(jnp.sum(m), 1.0)
    return self.weight * mse, {"future_state_mse": mse}

  def with_estimate(self, memory, given=None):
    """(B, M, D) -> (B, M + H_f, D): the memory plus the embedded (gradient-stopped) estimate (`feed`), or the
    `given` (B, H_f, P) future state in its place (the privileged-future diagnostic)."""
    if self.feed_in is None:
      return memory
    state = self.estimate(memory) if given is None else given
    tokens = self.feed_in(jax.lax.stop_gradient(state)) + self.feed_pos.value[None]
    return jnp.concatenate([memory, tokens], axis=1)


class PrivilegedProbe(nnx.Module):
  """Auxiliary privileged-state supervision of observation features: the simulator's task state (target and
  object positions, task one-hot; standardised) regressed from the tokens (B, M, D) by a per-token MLP averaged
  over tokens. It tells the features which few pixels matter, which a few hundred demonstrations alone do not
  (README "The recipe"). The true state is read in training only; with `feed`, the probe's *estimate* (no
  gradient from the action loss, so it stays an estimator) becomes one more decoder token, embedded as the
  state policy embeds the true state: the decoder then reads what the state policy reads, estimated from pixels."""

  def __init__(self, width: int, privileged_dim: int, weight: float, *, feed: bool = False, rngs: nnx.Rngs):
    if privileged_dim <= 0:
      raise ValueError("config.model.privileged_aux > 0 needs config.model.privileged_dim > 0")
    self.weight = weight
    self.head = Mlp(width, width, privileged_dim, rngs=rngs)
    self.feed_in = Mlp(privileged_dim, width, width, rngs=rngs) if feed else None

  def estimate(self, features):
    """(B, M, D) tokens -> (B, P) the standardised task state they imply."""
    return self.head(features).mean(axis=1)

  def with_estimate(self, features):
    """(B, M, D) -> (B, M + 1, D) with the embedded state estimate appended; `features` unchanged without feed."""
    if self.feed_in is None:
      return features
    token = self.feed_in(jax.lax.stop_gradient(self.estimate(features)))[:, None]
    return jnp.concatenate([features, token], axis=1)

  def __call__(self, features, privileged):
    """-> (weighted loss, {"privileged_mse": mean squared error}) against privileged (B, P)."""
    mse = jnp.mean(jnp.square(self.estimate(features) - privileged))
    return self.weight * mse, {"privileged_mse": mse}
