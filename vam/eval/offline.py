"""Offline metrics on held-out (val split) episodes: error of sampled action chunks against the demos.

Errors are root-mean-square over valid entries (the window's action mask), per action slot, in normalised
units and in native units (denormalised with the checkpoint's statistics: metres / 6D-rotation components /
radians / gripper command).
"""

import jax
import jax.numpy as jnp
import numpy as np

from vam.eval import restore

# What a policy's sample() reads: the context frames, instruction, embodiment, proprio, the chunk's shape.
INFERENCE_KEYS = ("images", "instruction", "embodiment_id", "proprio", "action_mask")


def action_error(restored, data_dir: str, windows_count: int, batch_size: int, seed: int, sample_steps: int,
                 tau_v: float | None = None) -> dict:
  """RMSE per slot of sampled chunks on held-out windows. `tau_v`: the inference tau_v of a video-action
  model (None: its config's; policies without a video model ignore it)."""
  space = restored.space
  it = restore.heldout_windows(restored, data_dir, batch_size, seed, future_frames=0)
  norm = restored.assets["normalization"]
  scale = np.stack([np.asarray(norm["action_scale"].get(e, np.ones(space.dim)), np.float32) for e in space.embodiments])
  kwargs = {} if tau_v is None else dict(tau_v=tau_v)

  sample = jax.jit(lambda params, batch, rng: restored.binder(params).sample(batch, rng, sample_steps, **kwargs))
  sq = {name: [0.0, 0.0, 0] for name in space.slots}  # normalised sum, native sum, count
  for i in range(max(1, windows_count // batch_size)):
    batch = next(it)
    inputs = {k: jnp.asarray(batch[k]) for k in INFERENCE_KEYS}
    pred = np.asarray(sample(restored.params, inputs, jax.random.PRNGKey(seed + i)))
    err = pred - batch["actions"]
    native = err * scale[batch["embodiment_id"]][:, None, :]
    for name, slot in space.slots.items():
      m = batch["action_mask"][..., slot.slice]
      sq[name][0] += float(np.sum(np.square(err[..., slot.slice])[m]))
      sq[name][1] += float(np.sum(np.square(native[..., slot.slice])[m]))
      sq[name][2] += int(m.sum())
  return {name: dict(rmse_normalised=float(np.sqrt(a / n)), rmse_native=float(np.sqrt(b / n)), entries=n)
          for name, (a, b, n) in sq.items() if n}


def action_error_by_tau_v(restored, data_dir: str, taus, windows_count: int, batch_size: int, seed: int,
                          sample_steps: int) -> dict:
  """A video-action model's offline action error as a function of the inference tau_v (how far the video
  flow is integrated before the decoder reads the hidden states): {tau_v: {slot: errors}}."""
  return {f"{float(t):g}": action_error(restored, data_dir, windows_count, batch_size, seed, sample_steps,
                                        tau_v=float(t)) for t in taus}
