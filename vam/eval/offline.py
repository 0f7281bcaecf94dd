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
from vam.input import windows
from vam.models import registry

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


# Keys the oracle's paths read beyond INFERENCE_KEYS: the window's true future (frames, or stored latents where a
# batch carries them; `heldout_windows` gives pixels, which the frozen autoencoder encodes as at inference) and
# `future_proprio`, which only a decoder of the privileged-future diagnostic (`model.future_state_privileged`)
# reads -- in *every* row, so for such a decoder "context_only", "imagined" and "other_future" mean the context /
# imagined / another window's frames *plus the window's own true future joints*.
FUTURE_KEYS = ("future_images", "context_latents", "future_latents", "future_proprio")


def future_steps(restored) -> int:
  """How many steps of the action chunk the video model's future frames cover: the last future frame is the
  scene H_f * d steps ahead (d = temporal factor x frame stride, vam/input/windows.py), after actions 0 .. H_f * d
  - 1 of the chunk."""
  d = restored.config.data
  stride = windows.frame_stride(d) * registry.temporal_factor(restored.config)
  return min(d.action_horizon, d.future_frames * stride)


def future_oracle(restored, data_dir: str, windows_count: int, batch_size: int, seed: int, sample_steps: int,
                  oracle_taus=(0.0, 0.25, 0.5), noise_scale: float = 1.0, executed_steps: int = 8) -> dict:
  """What the future is worth to a video-action model's decoder, on held-out windows (normalised RMSE of the
  sampled chunk over the own slots' valid entries):

    true_future@t   the window's ground-truth future latents noised to tau_v = t, read through the features
                    training computes (`VideoActionModel.sample_with_future`): t = 0 is a perfect video model
    other_future@0  the same with each window reading *another* window's clean future (the batch rolled by one):
                    what reading a wrong future costs, i.e. whether the decoder reads the future at all
    context_only    tau_v = 1, the future pure noise: what the decoder makes of the context frames alone
    imagined        the inference path (`sample`): the future imagined by the video flow down to the config's tau_v
    hold            stay still (the reference any policy must beat)

  Every row sees the same windows and the same action-sampling noise (paired). Each row reports the error over
  all chunk steps, by step, over the steps the future frames cover (`future_steps`), over those beyond, and over
  the `executed_steps` the closed loop runs before replanning; `oracle_ratio` is true_future@0 over context_only
  on the executed steps (< 1: the decoder gains from the true future). A decoder with a future-state probe also
  gets `future_state_mse`: how well the probe places the robot at the future frames reading the true future,
  another window's, or the context alone, beside assuming it stays where it is now."""
  cfg = restored.config
  if cfg.model.name != "vam":
    raise ValueError(f"future_oracle: {restored.workdir} holds a {cfg.model.name!r} model; the oracle is for "
                     "video-action models (config.model.name='vam')")
  oracle_taus = sorted({0.0, *map(float, oracle_taus)})  # tau_v = 0 (a perfect video model) is always measured
  horizon, covered = cfg.data.action_horizon, future_steps(restored)
  executed = min(executed_steps, horizon)
  it = restore.heldout_windows(restored, data_dir, batch_size, seed)  # with the config's H_f future frames
  common = dict(noise_scale=noise_scale)
  oracle = jax.jit(lambda params, batch, rng, tau_v: restored.binder(params).sample_with_future(
      batch, rng, sample_steps, tau_v=tau_v, **common))
  imagined = jax.jit(lambda params, batch, rng: restored.binder(params).sample(batch, rng, sample_steps, **common))
  rows = [f"true_future@{float(t):g}" for t in oracle_taus] + ["other_future@0", "context_only", "imagined", "hold"]
  sq = {r: np.zeros(horizon) for r in rows}
  count = np.zeros(horizon)
  # A decoder with a future-state probe: how well it places the robot at the future frames, by what it reads.
  has_probe = getattr(restored.model, "future_state", None) is not None
  estimate = jax.jit(lambda params, batch, rng, tau_v: _future_state_estimate(restored.binder(params), batch, rng,
                                                                            tau_v))
  state_sq, state_n = {k: 0.0 for k in ("true_future@0", "other_future@0", "context_only", "now")}, 0
  for i in range(max(1, windows_count // batch_size)):
    batch = next(it)
    inputs = {k: jnp.asarray(batch[k]) for k in INFERENCE_KEYS + OPTIONAL_KEYS + FUTURE_KEYS if k in batch}
    rolled = {k: (jnp.roll(v, 1, axis=0) if k in ("future_images", "future_latents") else v)
              for k, v in inputs.items()}
    rng = jax.random.PRNGKey(seed + i)
    preds = {f"true_future@{float(t):g}": oracle(restored.params, inputs, rng, float(t)) for t in oracle_taus}
    preds["other_future@0"] = oracle(restored.params, rolled, rng, 0.0)
    preds["context_only"] = oracle(restored.params, inputs, rng, 1.0)
    preds["imagined"] = imagined(restored.params, inputs, rng)
    preds["hold"] = batch["hold_actions"]
    if has_probe:
      # as in training: labelled windows only (a video-only window's proprio is zeros, which "now" matches)
      m = batch["future_mask"] & batch["action_mask"].any(axis=(1, 2))[:, None]
      for name, (b, t) in (("true_future@0", (inputs, 0.0)), ("other_future@0", (rolled, 0.0)),
                           ("context_only", (inputs, 1.0))):
        est = np.asarray(estimate(restored.params, b, rng, t))
        state_sq[name] += float(np.sum(np.mean(np.square(est - batch["future_proprio"]), axis=-1)[m]))
      now = np.broadcast_to(batch["proprio"][:, None], batch["future_proprio"].shape)
      state_sq["now"] += float(np.sum(np.mean(np.square(now - batch["future_proprio"]), axis=-1)[m]))
      state_n += int(m.sum())
    # The episode's own slots (held-out windows carry no mapped ones); valid entries only.
    mask = batch["action_mask"] & ~batch["mapped_mask"]
    count += mask.sum(axis=(0, 2))
    for r, pred in preds.items():
      sq[r] += np.sum(np.where(mask, np.square(np.asarray(pred) - batch["actions"]), 0.0), axis=(0, 2))
  rmse = lambda s, c: float(np.sqrt(s.sum() / max(c.sum(), 1)))
  out_rows = {}
  for r in rows:
    out_rows[r] = dict(all=rmse(sq[r], count), covered=rmse(sq[r][:covered], count[:covered]),
                       beyond=rmse(sq[r][covered:], count[covered:]) if covered < horizon else None,
                       executed=rmse(sq[r][:executed], count[:executed]),
                       by_step=[rmse(sq[r][k:k + 1], count[k:k + 1]) for k in range(horizon)])
  out = dict(future_steps=covered, executed_steps=executed, imagined_tau_v=float(cfg.model.tau_v),
             entries=int(count.sum()), windows=max(1, windows_count // batch_size) * batch_size, rows=out_rows,
             oracle_ratio=out_rows["true_future@0"]["executed"] / max(out_rows["context_only"]["executed"], 1e-12))
  if has_probe:  # mean squared error of the normalised proprio at the future frames; `now`: it stays put
    out["future_state_mse"] = {k: v / max(state_n, 1) for k, v in state_sq.items()}
  return out


def _future_state_estimate(model, batch, rng, tau_v):
  """A VAM's future-state probe estimate (B, H_f, P) from the batch's true future noised to tau_v (teacher forcing,
  as `sample_with_future` reads it)."""
  tau = jnp.full((batch["action_mask"].shape[0],), tau_v, jnp.float32)
  return model.future_state.estimate(model.tokens(model.training_features(batch, tau, rng)))


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
