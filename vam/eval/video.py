"""Offline evaluation of video models on held-out (val split) clips.

Video model (`video_dit`): future frames sampled from the H_o context frames + instruction (Euler,
`video_sample_steps`) and decoded, scored by PSNR and SSIM against the real future frames, next to
  - the mean prediction: one Euler step from tau = 1, x1 - v(x1, 1) = E[future | context, instruction]
    (the MMSE estimate, which PSNR favours over a sharp sample),
  - copy-last-frame: the last context frame repeated (the trivial baseline a video model must beat),
  - copy-last-latent: the last context latent repeated and decoded ("nothing moves", through the
    autoencoder: what the untrained residual model predicts, so the gain the DiT itself brings),
  - autoencoder reconstruction of the real future (the ceiling the latent space allows);
each also by horizon (`by_horizon`: latent frame j of the future, (j + 1) * temporal_factor * frame_stride
control steps ahead at 10 Hz), with the latent MSE (standardised latents) of the mean prediction and of
copy-last-latent;
and the validation flow loss at `tau_buckets` fixed tau_v (bucket centres) with fixed noise, so that
checkpoints compare at low variance. Autoencoder: reconstruction PSNR/SSIM of the clips' frames.
Side-by-side videos (real | mean | sampled | copy last; an autoencoder's: real | reconstructed) go into the report.

PSNR: 10 log10(peak^2 / MSE) on [0, 1] frames, per frame then averaged; SSIM: Gaussian-window SSIM
(sigma 1.5, K1 0.01, K2 0.03) per channel, averaged. Only frames that exist (`future_mask`) count.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from vam.eval import report, restore
from vam.input import windows
from vam.models import registry, video_model


def psnr(pred: np.ndarray, real: np.ndarray) -> np.ndarray:
  """Frames (..., H, W, 3) in [0, 1] -> PSNR in dB per frame (...)."""
  mse = np.mean(np.square(pred - real), axis=(-3, -2, -1))
  return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))


def ssim(pred: np.ndarray, real: np.ndarray, sigma: float = 1.5) -> np.ndarray:
  """Frames (..., H, W, 3) in [0, 1] -> mean SSIM per frame (...)."""
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  axes_sigma = [0.0] * (pred.ndim - 3) + [sigma, sigma, 0.0]  # blur H and W only
  blur = lambda x: ndimage.gaussian_filter(x, axes_sigma, truncate=3.5)
  mu_x, mu_y = blur(pred), blur(real)
  var_x = blur(pred * pred) - mu_x ** 2
  var_y = blur(real * real) - mu_y ** 2
  cov = blur(pred * real) - mu_x * mu_y
  s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
  return np.mean(s, axis=(-3, -2, -1))


def _unit(x) -> np.ndarray:
  """[-1, 1] float or uint8 frames -> float64 in [0, 1]."""
  x = np.asarray(x)
  return x / 255.0 if x.dtype == np.uint8 else np.clip((x.astype(np.float64) + 1.0) / 2.0, 0.0, 1.0)


class _Scores:
  """Per-frame score lists, averaged at the end, overall and by horizon (the frame's index in the future
  grouped by `per_horizon` frames: one latent frame)."""

  def __init__(self, per_horizon: int = 1):
    self.values, self.by_horizon, self.per_horizon = {}, {}, per_horizon

  def add_values(self, key: str, values, mask):
    """`values` (B, T) per frame, counted where `mask` (B, T)."""
    v, m = np.asarray(values, np.float64), np.asarray(mask, bool)
    self.values.setdefault(key, []).extend(v[m].tolist())
    for f in range(v.shape[1]):
      self.by_horizon.setdefault(key, {}).setdefault(f // self.per_horizon, []).extend(v[:, f][m[:, f]].tolist())

  def add(self, name: str, pred, real, mask):
    self.add_values(f"{name}_psnr", psnr(pred, real), mask)
    self.add_values(f"{name}_ssim", ssim(pred, real), mask)

  def means(self) -> dict:
    return {k: float(np.mean(v)) for k, v in self.values.items() if v}

  def horizon_means(self) -> dict:
    """{metric: [mean at horizon 0, 1, ...]} (None where no frame of that horizon exists)."""
    return {k: [float(np.mean(h[j])) if h.get(j) else None for j in range(max(h) + 1)]
            for k, h in self.by_horizon.items()}


def evaluate(restored, data_dir: str, out: str, ec) -> dict:
  """Video metrics of one checkpoint (see the module docstring) and its side-by-side videos."""
  name = restored.config.model.name
  bind, params = restored.binder, restored.params
  it = restore.heldout_windows(restored, data_dir, ec.video_batch, ec.seed)
  tf = registry.temporal_factor(restored.config)
  scores, videos, clips = _Scores(per_horizon=tf), [], 0
  taus = (np.arange(ec.tau_buckets) + 0.5) / ec.tau_buckets
  loss_sums = np.zeros(ec.tau_buckets)

  reconstruct = jax.jit(lambda p, v: bind(p).decode(bind(p).encode(v)))
  predict = jax.jit(lambda p, b, rng: bind(p).predict_frames(b, rng, ec.video_sample_steps))
  predict_mean = jax.jit(lambda p, b, rng: _mean_prediction(bind(p), b, rng))
  loss_at = jax.jit(lambda p, b, tau, eps: bind(p).loss_at(b, tau, eps))

  for i in range(max(1, ec.video_clips // ec.video_batch)):
    host = next(it)
    if name == "autoencoder":
      real = host["images"]
      recon = _unit(reconstruct(params, jnp.asarray(real)))
      scores.add("reconstruction", recon, _unit(real), np.ones(real.shape[:2], bool))
      panels = [("real", real), ("reconstructed", recon)]
    else:
      batch = {k: jnp.asarray(host[k]) for k in video_model.PIXEL_KEYS}
      frame_mask = np.repeat(host["future_mask"], tf, axis=1)  # latent-frame mask -> frame mask
      real = _unit(host["future_images"])
      pred = _unit(predict(params, batch, jax.random.PRNGKey(ec.seed + i)))
      mean = predict_mean(params, batch, jax.random.PRNGKey(ec.seed + i))
      last = np.repeat(_unit(host["images"][:, -1:]), real.shape[1], axis=1)
      recon = _unit(reconstruct(params, batch["future_images"]))
      scores.add("predicted", pred, real, frame_mask)
      scores.add("predicted_mean", _unit(mean["frames"]), real, frame_mask)
      scores.add("copy_last", last, real, frame_mask)
      scores.add("copy_last_latent", _unit(mean["copy_last_frames"]), real, frame_mask)
      scores.add("reconstruction", recon, real, frame_mask)
      # Latent MSE per latent frame, repeated over its tf frames so it shares the frames' horizon grouping.
      for key in ("mean_latent_mse", "copy_last_latent_mse"):
        scores.add_values(key, np.repeat(np.asarray(mean[key]), tf, axis=1), frame_mask)
      b = real.shape[0]
      future_shape = jax.eval_shape(lambda p, bb: bind(p).latents(bb)[1], params, batch).shape
      eps = jax.random.normal(jax.random.PRNGKey(10_000 + ec.seed + i), future_shape)
      for j, tau in enumerate(taus):
        loss_sums[j] += float(jnp.mean(loss_at(params, batch, jnp.full((b,), tau, jnp.float32), eps)))
      panels = [("real", host["future_images"]), ("mean", _unit(mean["frames"])), ("sampled", pred),
                ("copy last", last)]
    clips += real.shape[0]
    if len(videos) < ec.video_samples:
      videos += _side_by_side(host, panels, name, restored.step, out, ec.video_samples - len(videos))
  metrics = scores.means()
  batches = max(1, ec.video_clips // ec.video_batch)
  if name == "video_dit":
    metrics["loss_by_tau"] = {f"{t:.4f}": float(s / batches) for t, s in zip(taus, loss_sums)}
    metrics["psnr_gain_over_copy_last"] = metrics["predicted_psnr"] - metrics["copy_last_psnr"]
    metrics["ssim_gain_over_copy_last"] = metrics["predicted_ssim"] - metrics["copy_last_ssim"]
    metrics["mean_psnr_gain_over_copy_last"] = metrics["predicted_mean_psnr"] - metrics["copy_last_psnr"]
    by_h = scores.horizon_means()
    stride = tf * windows.frame_stride(restored.config.data)
    metrics["by_horizon"] = dict(by_h, steps_ahead=[(j + 1) * stride for j in range(len(by_h["copy_last_psnr"]))])
    # The bar (issue 15): the mean prediction against copy-last-frame at the longest horizon trained for.
    metrics["mean_psnr_gain_at_longest"] = by_h["predicted_mean_psnr"][-1] - by_h["copy_last_psnr"][-1]
  metrics["clips"] = clips
  return dict(video=metrics, videos=videos)


def _mean_prediction(model, batch, rng) -> dict:
  """The mean prediction (one Euler step from tau = 1: E[future | context, instruction]) as frames and
  standardised latents, copy-last-latent's frames, and both latents' MSE to the real future per latent frame
  (B, H_f)."""
  context, future = model.latents(batch)
  mean = model.sample(batch, rng, 1)
  copy = jnp.broadcast_to(context[:, -1:], future.shape)
  mse = lambda z: jnp.mean(jnp.square(z - future), axis=(2, 3, 4))
  return dict(frames=model.decode(mean), copy_last_frames=model.decode(copy), mean_latent_mse=mse(mean),
              copy_last_latent_mse=mse(copy))


def _side_by_side(host, panels, name: str, step: int, out: str, count: int) -> list[dict]:
  """MP4s: the context frames, then the future frames as panels side by side (`panels`: [(label, frames
  (B, T, H, W, 3) uint8 or floats in [0, 1])], the real future first), captioned."""
  made = []
  labels = " | ".join(label for label, _ in panels)
  for i in range(min(count, panels[0][1].shape[0])):
    instruction = windows.decode_instruction(host["instruction"][i])
    real = panels[0][1][i]
    ctx = host["images"][i] if name != "autoencoder" else np.zeros((0,) + real.shape[1:], np.uint8)
    # uint8 frames pass through; floats arrive already in [0, 1] (`_unit` was applied for the metrics, and a
    # second `_unit` would map them to [0.5, 1]: washed-out videos).
    to_u8 = lambda x: x if x.dtype == np.uint8 else (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    frames = [np.concatenate([f] * len(panels), axis=1) for f in to_u8(ctx)]
    frames += [np.concatenate(row, axis=1) for row in zip(*[to_u8(p[i]) for _, p in panels])]
    captions = ["context"] * len(ctx) + [labels] * len(real)
    path = os.path.join(out, "videos", f"step{step}_clip{i}_{name}.mp4")
    made.append(dict(path=report.captioned_mp4(np.stack(frames), lambda t: (captions[t], instruction[:64]), path, fps=4),
                     label=f"clip {i}: {instruction} (left to right: {labels})"))
  return made
