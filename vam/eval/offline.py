"""Offline metrics on held-out (val split) episodes: error of sampled action chunks against the demos.

Errors are root-mean-square over valid entries (the window's action mask), per action slot, in normalised
units and in native units (denormalised with the checkpoint's statistics: metres / 6D-rotation components /
radians / gripper command).
"""

import jax
import jax.numpy as jnp
import numpy as np

from vam.eval import restore
from vam.models import policies


def action_error(restored, data_dir: str, windows_count: int, batch_size: int, seed: int, sample_steps: int) -> dict:
  space = restored.space
  it = restore.heldout_windows(restored, data_dir, batch_size, seed, future_frames=0)
  norm = restored.assets["normalization"]
  scale = np.stack([np.asarray(norm["action_scale"].get(e, np.ones(space.dim)), np.float32) for e in space.embodiments])

  sample = jax.jit(lambda params, batch, rng: restored.binder(params).sample(batch, rng, sample_steps))
  sq = {name: [0.0, 0.0, 0] for name in space.slots}  # normalised sum, native sum, count
  for i in range(max(1, windows_count // batch_size)):
    batch = next(it)
    pred = np.asarray(sample(restored.params, {k: jnp.asarray(batch[k]) for k in policies.INPUT_KEYS},
                             jax.random.PRNGKey(seed + i)))
    err = pred - batch["actions"]
    native = err * scale[batch["embodiment_id"]][:, None, :]
    for name, slot in space.slots.items():
      m = batch["action_mask"][..., slot.slice]
      sq[name][0] += float(np.sum(np.square(err[..., slot.slice])[m]))
      sq[name][1] += float(np.sum(np.square(native[..., slot.slice])[m]))
      sq[name][2] += int(m.sum())
  return {name: dict(rmse_normalised=float(np.sqrt(a / n)), rmse_native=float(np.sqrt(b / n)), entries=n)
          for name, (a, b, n) in sq.items() if n}
