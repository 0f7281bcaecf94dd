"""Optimizer, learning-rate schedule and EMA, from `config.optimizer`."""

import jax
import jax.numpy as jnp
import optax

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


def make(cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f"config.optimizer.name={cfg.name!r}; valid: {list(OPTIMIZERS)}")
  lr = schedule(cfg, total_steps)
  # No weight decay on biases, norms and 1-D parameters (the usual transformer recipe).
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                   optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask))
  return tx, lr


def ema_update(ema, params, step, decay: float):
  """EMA with a warm-up (decay ramps as (1 + step) / (10 + step)) so short runs are not dominated by init."""
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
  return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)
