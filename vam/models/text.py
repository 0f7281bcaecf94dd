"""The instruction encoder, trained with the model that uses it (no downloaded weights).

A byte-level transformer: the UTF-8 instruction (B, L) uint8, zero-padded, -> tokens (B, L', D) and a
key mask (B, L'), L' = min(L, text_len). Bytes need no tokenizer file, so checkpoints are self-contained.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vam.models import layers


@dataclasses.dataclass(frozen=True)
class TextConfig:
  width: int = 128
  depth: int = 2
  heads: int = 4
  text_len: int = 96  # instruction bytes read (the batch's may be longer: the rest is cut)


class InstructionEncoder(nnx.Module):
  def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs):
    self.text_len = cfg.text_len
    self.embed = nnx.Embed(256, cfg.width, rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.text_len, cfg.width)))
    self.blocks = nnx.List([layers.TransformerBlock(cfg.width, cfg.heads, rngs=rngs) for _ in range(cfg.depth)])
    self.norm = nnx.LayerNorm(cfg.width, rngs=rngs)

  def __call__(self, text):
    with jax.named_scope("instruction_encoder"):  # names its ops in benchmarks/profile.py
      text = text[:, :self.text_len]
      mask = text > 0
      mask = mask.at[:, 0].set(True)  # an empty instruction still has one key to attend to
      x = self.embed(text.astype(jnp.int32)) + self.pos.value[None, :text.shape[1]]
      for block in self.blocks:
        x = block(x, mask=mask)
      return self.norm(x), mask
