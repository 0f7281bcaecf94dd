"""The latent video diffusion transformer of METHOD.md's stage 1.

    dit = VideoDiT(DiTConfig(...), rngs=nnx.Rngs(0))
    v = dit(context, noisy_future, tau, text, text_mask, embodiment_id)        # velocity of the future latents
    h = dit(context, noisy_future, tau, text, text_mask, embodiment_id, layer=k)  # hidden states after layer k

Latents (B, F, h, w, C) are cut into p x p patches -> tokens (B, F * h/p * w/p, D), ordered frame-major.
Context frames are clean (their time is 0), future frames are noisy at `tau` (B,); every frame gets its own
adaLN conditioning (time embedding of its tau + the embodiment embedding), so one model serves any mix of
clean and noisy frames. Each block: self-attention with 3-D rotary positions (t, y, x) -> cross-attention to
the instruction tokens -> MLP, each with adaLN shift/scale/gate (gates start at zero: blocks start as the
identity). `layer=k` runs only the first k blocks and returns their hidden states (B, N, D) for the action
decoder; layer=None runs them all and returns the velocity of the future frames only.

Layers are either a Python loop or one `lax.scan` over stacked parameters (`scan_layers`: compiles once per
depth), optionally rematerialised (`remat`: recompute block activations in the backward pass). Every linear
layer of the blocks can carry a LoRA adapter (`lora_rank` > 0) over a base that fine-tuning keeps frozen.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from vam.models import layers, partitioning


@dataclasses.dataclass(frozen=True)
class DiTConfig:
  latent_channels: int
  latent_size: tuple[int, int]  # (h, w) of one latent frame
  frames: int  # context + future latent frames
  text_dim: int  # width of the instruction tokens
  num_embodiments: int
  width: int = 256
  depth: int = 6
  heads: int = 4
  mlp_ratio: int = 4
  patch: int = 2
  time_dim: int = 128
  lora_rank: int = 0
  lora_alpha: float = 0.0  # 0: alpha = rank
  scan_layers: bool = False
  remat: bool | str = False  # False/"none", True/"full", "dots", "dots_no_batch" (layers.REMAT_POLICIES)

  @property
  def grid(self) -> tuple[int, int]:
    return self.latent_size[0] // self.patch, self.latent_size[1] // self.patch

  @property
  def tokens_per_frame(self) -> int:
    return self.grid[0] * self.grid[1]


class DiTBlock(nnx.Module):
  def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
    d = cfg.width
    linear = functools.partial(layers.LoraLinear, rank=cfg.lora_rank, alpha=cfg.lora_alpha or None)
    self.norms = nnx.List([nnx.LayerNorm(d, use_scale=False, use_bias=False, rngs=rngs) for _ in range(3)])
    self.self_attn = layers.Attention(d, cfg.heads, linear=linear, rngs=rngs)
    self.cross = layers.Attention(d, cfg.heads, kv_dim=cfg.text_dim, linear=linear, rngs=rngs)
    self.mlp = layers.Mlp(d, cfg.mlp_ratio * d, d, linear=linear, rngs=rngs)
    # Conditioning -> 3 (shift, scale, gate) triples; zero-initialised so the block starts as the identity.
    self.ada = nnx.Linear(d, 9 * d, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, x, cond, text, text_mask, rope):
    """x (B, F, P, D) tokens by frame; cond (B, F, D) per-frame conditioning; text (B, L, Dt)."""
    b, f, p, d = x.shape
    mods = jnp.split(self.ada(jax.nn.silu(cond))[:, :, None, :], 9, axis=-1)  # each (B, F, 1, D)
    flat = lambda y: y.reshape(b, f * p, d)
    frames = lambda y: y.reshape(b, f, p, d)
    h = layers.modulate(self.norms[0](x), mods[0], mods[1])
    x = x + mods[2] * frames(self.self_attn(flat(h), rope=rope))
    h = layers.modulate(self.norms[1](x), mods[3], mods[4])
    x = x + mods[5] * frames(self.cross(flat(h), context=text, mask=text_mask))
    h = layers.modulate(self.norms[2](x), mods[6], mods[7])
    return x + mods[8] * self.mlp(h)


class VideoDiT(nnx.Module):
  def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
    h, w = cfg.latent_size
    if h % cfg.patch or w % cfg.patch:
      raise ValueError(f"latent size {cfg.latent_size} is not divisible by the patch {cfg.patch}")
    if (cfg.width // cfg.heads) % 2:
      raise ValueError(f"head width {cfg.width // cfg.heads} must be even (rotary positions)")
    self.cfg = cfg
    d, patch_dim = cfg.width, cfg.patch * cfg.patch * cfg.latent_channels
    self.patch_in = nnx.Linear(patch_dim, d, rngs=rngs)
    self.time = layers.Mlp(cfg.time_dim, d, d, rngs=rngs)
    self.embodiment = nnx.Embed(cfg.num_embodiments, d, rngs=rngs)
    if cfg.scan_layers:
      @nnx.split_rngs(splits=cfg.depth)
      @nnx.vmap(in_axes=(0,), out_axes=0)
      def stacked(rngs):
        return DiTBlock(cfg, rngs=rngs)
      self.blocks = stacked(rngs)  # every parameter has a leading (depth,) axis
    else:
      self.blocks = nnx.List([DiTBlock(cfg, rngs=rngs) for _ in range(cfg.depth)])
    self.final_norm = nnx.LayerNorm(d, use_scale=False, use_bias=False, rngs=rngs)
    self.final_ada = nnx.Linear(d, 2 * d, kernel_init=nnx.initializers.zeros, rngs=rngs)
    self.patch_out = nnx.Linear(d, patch_dim, kernel_init=nnx.initializers.zeros, rngs=rngs)

  # ---- tokens <-> latents ----
  def patchify(self, z):
    """(B, F, h, w, C) -> (B, F, P, p * p * C)."""
    b, f, h, w, c = z.shape
    p = self.cfg.patch
    z = z.reshape(b, f, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return z.reshape(b, f, (h // p) * (w // p), p * p * c)

  def unpatchify(self, tokens):
    """(B, F, P, p * p * C) -> (B, F, h, w, C)."""
    b, f = tokens.shape[:2]
    (gh, gw), p, c = self.cfg.grid, self.cfg.patch, self.cfg.latent_channels
    z = tokens.reshape(b, f, gh, gw, p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return z.reshape(b, f, gh * p, gw * p, c)

  def rope(self, frames: int):
    gh, gw = self.cfg.grid
    t, y, x = jnp.meshgrid(jnp.arange(frames), jnp.arange(gh), jnp.arange(gw), indexing="ij")
    positions = jnp.stack([t.ravel(), y.ravel(), x.ravel()], axis=-1)
    return layers.rope_3d(positions, self.cfg.width // self.cfg.heads)

  # ---- blocks ----
  def _run_blocks(self, x, cond, text, text_mask, rope, count: int, start: int = 0):
    """Blocks start+1 .. count (1-based) over x (B, F, P, D)."""
    def apply(graphdef, params, x):
      x = partitioning.constrain(x, ("batch", None, "sequence", "act_embed"))  # tokens over `sequence`
      return nnx.merge(graphdef, params)(x, cond, text, text_mask, rope)
    apply = layers.remat(apply, self.cfg.remat, static_argnums=(0,))
    if count <= start:
      return x
    if self.cfg.scan_layers:
      graphdef, params = nnx.split(self.blocks)
      chosen = jax.tree.map(lambda p: p[start:count], params)
      x, _ = jax.lax.scan(lambda x, p: (apply(graphdef, p, x), None), x, chosen)
      return x
    for block in list(self.blocks)[start:count]:
      graphdef, params = nnx.split(block)
      x = apply(graphdef, params, x)
    return x

  def __call__(self, context, noisy_future, tau, text, text_mask, embodiment_id, layer: int | None = None,
               also_hidden: int | None = None):
    """context (B, H_o, h, w, C) clean; noisy_future (B, H_f, h, w, C) at tau (B,); text (B, L, Dt) with
    text_mask (B, L); embodiment_id (B,). Returns the velocity (B, H_f, h, w, C), or with `layer=k` the
    hidden states after block k (B, (H_o + H_f) * P, D); with `also_hidden=k`, (velocity, those hidden states)
    from the one forward pass."""
    cfg = self.cfg
    if layer is not None and not 0 <= layer <= cfg.depth:
      raise ValueError(f"layer={layer}: the video DiT has blocks 1..{cfg.depth} (0: the embedded tokens)")
    b, h_o = context.shape[:2]
    h_f = noisy_future.shape[1]
    x = self.patch_in(self.patchify(jnp.concatenate([context, noisy_future], axis=1)))  # (B, F, P, D)
    frame_tau = jnp.concatenate([jnp.zeros((b, h_o)), jnp.broadcast_to(tau[:, None], (b, h_f))], axis=1)
    temb = layers.timestep_embedding(frame_tau.reshape(-1), cfg.time_dim).reshape(b, h_o + h_f, -1)
    cond = self.time(temb) + self.embodiment(embodiment_id)[:, None]  # (B, F, D)
    rope = self.rope(h_o + h_f)
    if layer is not None:
      return self._run_blocks(x, cond, text, text_mask, rope, layer).reshape(b, -1, cfg.width)
    hidden = None
    if also_hidden is not None:
      if not 0 <= also_hidden <= cfg.depth:
        raise ValueError(f"also_hidden={also_hidden}: the video DiT has blocks 1..{cfg.depth} (0: embedded tokens)")
      x = self._run_blocks(x, cond, text, text_mask, rope, also_hidden)
      hidden = x.reshape(b, -1, cfg.width)
    x = self._run_blocks(x, cond, text, text_mask, rope, cfg.depth, start=also_hidden or 0)
    shift, scale = jnp.split(self.final_ada(jax.nn.silu(cond))[:, :, None, :], 2, axis=-1)
    out = self.unpatchify(self.patch_out(layers.modulate(self.final_norm(x), shift, scale))[:, h_o:])
    return out if also_hidden is None else (out, hidden)
