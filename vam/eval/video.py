"""Offline evaluation of video models on held-out (val split) clips.

Video model (`video_dit`): future frames sampled from the H_o context frames + instruction (Euler,
`video_sample_steps`) and decoded, scored by PSNR and SSIM against the real future frames, next to
  - the mean prediction: one Euler step from tau = 1, x1 - v(x1, 1) = E[future | context, instruction]
    (the MMSE estimate, which PSNR favours over a sharp sample),
  - copy-last-frame: the last context frame repeated (the trivial baseline a video model must beat),
  - autoencoder reconstruction of the real future (the ceiling the latent space allows);
and the validation flow loss at `tau_buckets` fixed tau_v (bucket centres) with fixed noise, so that
checkpoints compare at low variance. Autoencoder: reconstruction PSNR/SSIM of the clips' frames.
Side-by-side videos (real | predicted) go into the report.

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
  """Per-frame score lists, averaged at the end."""

  def __init__(self):
    self.values = {}

  def add(self, name: str, pred, real, mask):
    m = np.asarray(mask, bool)
    self.values.setdefault(f"{name}_psnr", []).extend(psnr(pred, real)[m].tolist())
    self.values.setdefault(f"{name}_ssim", []).extend(ssim(pred, real)[m].tolist())

  def means(self) -> dict:
    return {k: float(np.mean(v)) for k, v in self.values.items() if v}


def evaluate(restored, data_dir: str, out: str, ec) -> dict:
  """Video metrics of one checkpoint (see the module docstring) and its side-by-side videos."""
  name = restored.config.model.name
  bind, params = restored.binder, restored.params
  it = restore.heldout_windows(restored, data_dir, ec.video_batch, ec.seed)
  scores, videos, clips = _Scores(), [], 0
  taus = (np.arange(ec.tau_buckets) + 0.5) / ec.tau_buckets
  loss_sums = np.zeros(ec.tau_buckets)

  reconstruct = jax.jit(lambda p, v: bind(p).decode(bind(p).encode(v)))
  predict = jax.jit(lambda p, b, rng: bind(p).predict_frames(b, rng, ec.video_sample_steps))
  predict_mean = jax.jit(lambda p, b, rng: bind(p).predict_frames(b, rng, 1))
  loss_at = jax.jit(lambda p, b, tau, eps: bind(p).loss_at(b, tau, eps))

  for i in range(max(1, ec.video_clips // ec.video_batch)):
    host = next(it)
    if name == "autoencoder":
      real = host["images"]
      recon = _unit(reconstruct(params, jnp.asarray(real)))
      scores.add("reconstruction", recon, _unit(real), np.ones(real.shape[:2], bool))
      sides = [(real, recon)]
    else:
      batch = {k: jnp.asarray(host[k]) for k in video_model.PIXEL_KEYS}
      tf = registry.temporal_factor(restored.config)
      frame_mask = np.repeat(host["future_mask"], tf, axis=1)  # latent-frame mask -> frame mask
      real = _unit(host["future_images"])
      pred = _unit(predict(params, batch, jax.random.PRNGKey(ec.seed + i)))
      mean_pred = _unit(predict_mean(params, batch, jax.random.PRNGKey(ec.seed + i)))
      last = np.repeat(_unit(host["images"][:, -1:]), real.shape[1], axis=1)
      recon = _unit(reconstruct(params, batch["future_images"]))
      scores.add("predicted", pred, real, frame_mask)
      scores.add("predicted_mean", mean_pred, real, frame_mask)
      scores.add("copy_last", last, real, frame_mask)
      scores.add("reconstruction", recon, real, frame_mask)
      b = real.shape[0]
      future_shape = jax.eval_shape(lambda p, bb: bind(p).latents(bb)[1], params, batch).shape
      eps = jax.random.normal(jax.random.PRNGKey(10_000 + ec.seed + i), future_shape)
      for j, tau in enumerate(taus):
        loss_sums[j] += float(jnp.mean(loss_at(params, batch, jnp.full((b,), tau, jnp.float32), eps)))
      sides = [(host["future_images"], pred)]
    clips += real.shape[0]
    if len(videos) < ec.video_samples:
      videos += _side_by_side(host, sides[0], name, restored.step, out, ec.video_samples - len(videos))
  metrics = scores.means()
  batches = max(1, ec.video_clips // ec.video_batch)
  if name == "video_dit":
    metrics["loss_by_tau"] = {f"{t:.4f}": float(s / batches) for t, s in zip(taus, loss_sums)}
    metrics["psnr_gain_over_copy_last"] = metrics["predicted_psnr"] - metrics["copy_last_psnr"]
    metrics["ssim_gain_over_copy_last"] = metrics["predicted_ssim"] - metrics["copy_last_ssim"]
    metrics["mean_psnr_gain_over_copy_last"] = metrics["predicted_mean_psnr"] - metrics["copy_last_psnr"]
  metrics["clips"] = clips
  return dict(video=metrics, videos=videos)


def _side_by_side(host, pair, name: str, step: int, out: str, count: int) -> list[dict]:
  """MP4s: context frames then [real | predicted (or reconstructed)] future frames, captioned."""
  real, other = pair
  made = []
  for i in range(min(count, real.shape[0])):
    instruction = windows.decode_instruction(host["instruction"][i])
    ctx = host["images"][i] if name != "autoencoder" else np.zeros((0,) + real.shape[2:], np.uint8)
    # uint8 frames pass through; floats arrive already in [0, 1] (`_unit` was applied for the metrics, and a
    # second `_unit` would map them to [0.5, 1]: washed-out videos).
    to_u8 = lambda x: x if x.dtype == np.uint8 else (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    frames = [np.concatenate([f, f], axis=1) for f in to_u8(ctx)]
    frames += [np.concatenate([a, b], axis=1) for a, b in zip(to_u8(real[i]), to_u8(other[i]))]
    labels = ["context"] * len(ctx) + ["real | " + ("reconstructed" if name == "autoencoder" else "predicted")] * len(real[i])
    path = os.path.join(out, "videos", f"step{step}_clip{i}_{name}.mp4")
    made.append(dict(path=report.captioned_mp4(np.stack(frames), lambda t: (labels[t], instruction[:64]), path, fps=4),
                     label=f"clip {i}: {instruction} (left real, right {'reconstructed' if name == 'autoencoder' else 'predicted'})"))
  return made
