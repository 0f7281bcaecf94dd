"""Optimizer, learning-rate schedule, frozen parameters and EMA, from `config.optimizer`.

Which parameters train: all, minus those matching the model's frozen pattern (e.g. the video model's
autoencoder), and -- when `config.optimizer.trainable` is a regex -- only those it matches (LoRA
fine-tuning: 'lora_'). Frozen parameters get no optimizer state and no gradient (`trainable_mask`).
"""

import re

import jax
import jax.numpy as jnp
import optax

from vam.train import sharding

OPTIMIZERS = ("adamw",)
SCHEDULES = ("cosine", "constant")


def schedule(cfg, total_steps: int) -> optax.Schedule:
  """Linear warm-up to `cfg.lr`, then cosine decay to `cfg.lr * cfg.final_lr_fraction` (or constant)."""
  warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
  if cfg.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)), optax.constant_schedule(cfg.lr)],
                                [warmup])
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(warmup, 1), max(total_steps, warmup + 1),
                                              end_value=cfg.lr * cfg.final_lr_fraction)
  raise ValueError(f"config.optimizer.schedule={cfg.schedule!r}; valid: {list(SCHEDULES)}")


def trainable_mask(params, frozen: str | None = None, trainable: str | None = None):
  """Pytree of bools like `params`: True where the parameter trains (see the module docstring)."""
  def is_trainable(path, _):
    name = sharding.path_name(path)
    if frozen and re.search(frozen, name):
      return False
    return not trainable or re.search(trainable, name) is not None
  mask = jax.tree_util.tree_map_with_path(is_trainable, params)
  if not any(jax.tree.leaves(mask)):
    raise ValueError(f"no parameter is trainable (config.optimizer.trainable={trainable!r}, frozen={frozen!r})")
  return mask


def make(cfg, total_steps: int, mask=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with global-norm clipping and the schedule; `mask` (from `trainable_mask`, or a function of the
  params returning it) leaves the other parameters untouched, without optimizer state."""
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f"config.optimizer.name={cfg.name!r}; valid: {list(OPTIMIZERS)}")
  lr = schedule(cfg, total_steps)
  # No weight decay on biases, norms and 1-D parameters (the usual transformer recipe).
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                   optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask))
  if mask is not None:
    labels = lambda params: jax.tree.map(lambda m: "train" if m else "frozen", mask(params) if callable(mask) else mask)
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, lr


def ema_update(ema, params, step, decay: float, mask=None):
  """EMA with a warm-up (decay ramps as (1 + step) / (10 + step)) so short runs are not dominated by init.
  Frozen parameters (False in `mask`) are copied, not averaged (averaging would change their last bits)."""
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
  average = lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype)
  if mask is None:
    return jax.tree.map(average, ema, params)
  return jax.tree.map(lambda e, p, m: average(e, p) if m else p, ema, params, mask)
