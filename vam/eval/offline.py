"""Offline metrics on held-out (val split) episodes: error of sampled action chunks against the demos, beside
the same error of two simple references that any useful policy must beat: `hold` (stay still: zero joint
deltas, the current pose, the gripper as it is) and `last` (repeat the previous step's action).

Errors are root-mean-square over valid entries (the window's action mask), per action slot, in normalised
units and in native units (denormalised with the checkpoint's statistics: metres / 6D-rotation components /
radians or metres of joint-target deltas / gripper command). Windows are drawn task-balanced.
"""

import jax
import jax.numpy as jnp
import numpy as np

from vam.eval import restore

# What a policy's sample() reads: the context frames, instruction, embodiment, proprio, the chunk's shape.
INFERENCE_KEYS = ("images", "instruction", "embodiment_id", "proprio", "action_mask")
OPTIONAL_KEYS = ("privileged",)
REFERENCES = ("hold", "last")
# The privileged state's position blocks (vam/sim/env.py `privileged_state`) the state-estimate error reports.
STATE_PARTS = {"target": slice(0, 3), "object": slice(3, 6)}


def action_error(restored, data_dir: str, windows_count: int, batch_size: int, seed: int, sample_steps: int,
                 tau_v: float | None = None, noise_scale: float = 1.0) -> dict:
  """{slot: {rmse_normalised, rmse_native, entries, hold_rmse_*, last_rmse_*}} of sampled chunks on held-out
  windows. `tau_v`: the inference tau_v of a video-action model (None: its config's); `noise_scale`: the
  action flow's sampling temperature."""
  space = restored.space
  it = restore.heldout_windows(restored, data_dir, batch_size, seed, future_frames=0)
  scale = restored.normalizer.action_scale_table()
  kwargs = dict(noise_scale=noise_scale, **({} if tau_v is None else dict(tau_v=tau_v)))

  sample = jax.jit(lambda params, batch, rng: restored.binder(params).sample(batch, rng, sample_steps, **kwargs))
  kinds = ("policy",) + REFERENCES
  sq = {name: {k: [0.0, 0.0] for k in kinds} for name in space.slots}  # normalised, native sums
  count = {name: 0 for name in space.slots}
  for i in range(max(1, windows_count // batch_size)):
    batch = next(it)
    inputs = {k: jnp.asarray(batch[k]) for k in INFERENCE_KEYS + OPTIONAL_KEYS if k in batch}
    preds = dict(policy=np.asarray(sample(restored.params, inputs, jax.random.PRNGKey(seed + i))),
                 **{k: batch[f"{k}_actions"] for k in REFERENCES})
    row_scale = scale[batch["embodiment_id"]][:, :batch["actions"].shape[1]]
    for name, slot in space.slots.items():
      m = batch["action_mask"][..., slot.slice]
      count[name] += int(m.sum())
      for kind, pred in preds.items():
        err = (pred - batch["actions"])[..., slot.slice]
        sq[name][kind][0] += float(np.sum(np.square(err)[m]))
        sq[name][kind][1] += float(np.sum(np.square(err * row_scale[..., slot.slice])[m]))
  out = {}
  for name, n in count.items():
    if not n:
      continue
    row = dict(entries=n)
    for kind, (a, b) in sq[name].items():
      prefix = "" if kind == "policy" else f"{kind}_"
      row[f"{prefix}rmse_normalised"], row[f"{prefix}rmse_native"] = float(np.sqrt(a / n)), float(np.sqrt(b / n))
    out[name] = row
  return out


def action_error_by_tau_v(restored, data_dir: str, taus, windows_count: int, batch_size: int, seed: int,
                          sample_steps: int, noise_scale: float = 1.0) -> dict:
  """A video-action model's offline action error as a function of the inference tau_v (how far the video
  flow is integrated before the decoder reads the hidden states): {tau_v: {slot: errors}}."""
  return {f"{float(t):g}": action_error(restored, data_dir, windows_count, batch_size, seed, sample_steps,
                                        tau_v=float(t), noise_scale=noise_scale) for t in taus}


def state_estimate_error(restored, data_dir: str, windows_count: int, batch_size: int, seed: int) -> dict:
  """How well a policy's privileged-state probe locates the task from held-out frames alone:
  {part: {error_m, mean_error_m, windows}}, the mean distance (metres) between the estimated and the true
  position of the target and of the manipulated object, beside the same distance of the training mean (what
  an estimator that ignores the image reads). {} for a model without a probe or data without the state."""
  if restored.config.model.get("privileged_aux", 0.0) <= 0:
    return {}
  it = restore.heldout_windows(restored, data_dir, batch_size, seed, future_frames=0)
  estimate = jax.jit(lambda params, batch: restored.binder(params).estimate_state(batch))
  tally = StateDistances(restored)
  for _ in range(max(1, windows_count // batch_size)):
    batch = next(it)
    if "privileged" not in batch:
      return {}
    inputs = {k: jnp.asarray(batch[k]) for k in INFERENCE_KEYS if k in batch}
    tally.add(np.asarray(estimate(restored.params, inputs)), batch)
  return tally.result()


class StateDistances:
  """Accumulates, over batches of windows, the distance (metres) of standardised state estimates from the
  windows' true `privileged` state, per `STATE_PARTS` block, beside the training mean's distance."""

  def __init__(self, restored):
    self.names = restored.space.embodiments
    self.scales = {n: np.asarray(v) for n, v in restored.normalizer.privileged_scale.items()}
    self.sums = {part: [0.0, 0.0] for part in STATE_PARTS}
    self.count = 0

  def add(self, estimate, batch) -> None:
    """estimate (B, P) standardised; batch with `privileged` (B, P) and `embodiment_id` (B,)."""
    scale = np.stack([self.scales[self.names[int(e)]] for e in batch["embodiment_id"]])  # -> metres
    err, true = (estimate - batch["privileged"]) * scale, batch["privileged"] * scale
    for part, sl in STATE_PARTS.items():
      self.sums[part][0] += float(np.linalg.norm(err[:, sl], axis=-1).sum())
      self.sums[part][1] += float(np.linalg.norm(true[:, sl], axis=-1).sum())
    self.count += len(scale)

  def result(self) -> dict:
    n = max(self.count, 1)
    return {part: dict(error_m=a / n, mean_error_m=b / n, windows=self.count) for part, (a, b) in self.sums.items()}
