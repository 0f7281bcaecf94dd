"""What a frozen video model's hidden states know about the task: a fresh probe trained on them.

The VAM's action decoder can act only on what the frozen video features say about where the target and the
object are (README "Policies that act"). This trains a small probe on the hidden states after DiT block `k`
(k = 0: the embedded latent patches, which a linear patch embedding makes as informative as the latents) of a
video model (a video run's workdir, or a VAM's: its frozen video model), at the VAM's inference point (context
latents clean, the future pure noise, tau_v = 1), on the robot dataset's train split, and reports on held-out
episodes the mean distance of its estimate from the true target and object positions, beside the distance of
the training mean. Readouts: `mean` (a per-token MLP averaged over tokens: the training-time
`PrivilegedProbe`), `attention` (a learned query attending over the tokens: it can pick the one token that
holds a 4-pixel block and read where it sits), `keypoints` (spatial-softmax keypoints over each frame's token
grid, refined within a token by offsets or, with `--subcells s`, by s x s scored sub-cells per token,
`layers.TokenKeypoints`: the readout a conv policy's spatial softmax gives the image
baseline). The control, `--layers pixels`: the same probe on raw 8-pixel
patches of the context frames (fixed random projection, nothing thrown away): what a probe of this size learns
in this budget from everything the camera saw.

    python -m vam.eval.feature_probe --workdir out/demo/video --layers pixels 0 3 --readout attention [--steps 1500]
        [--readout keypoints --subcells 4] [--data_dir DIR] [--out FILE.json]
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vam.eval import offline, restore
from vam.models import layers

READOUTS = ("mean", "attention", "keypoints")
KEYPOINTS = 8  # per frame (readout `keypoints`)


class FeatureProbe(nnx.Module):
  """Frozen tokens (B, N, D) -> the standardised task state (B, P): LayerNorm, a learned position embedding
  (the DiT's rotary positions act inside its attention only), a residual per-token MLP, then the readout."""

  def __init__(self, tokens: int, width: int, out_dim: int, readout: str, grid: tuple[int, int, int] | None = None,
               *, subcells: int = 1, rngs: nnx.Rngs):
    """grid: (frames, h, w) of the tokens; subcells: the keypoints' within-token refinement (readout
    `keypoints`, `layers.TokenKeypoints`)."""
    if readout not in READOUTS:
      raise ValueError(f"readout={readout!r}; valid: {list(READOUTS)}")
    if readout == "keypoints" and (grid is None or grid[0] * grid[1] * grid[2] != tokens):
      raise ValueError(f"readout 'keypoints' needs the (frames, h, w) grid of the {tokens} tokens; got {grid}")
    self.readout = readout
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (tokens, width)))
    self.mlp = layers.Mlp(width, 2 * width, width, rngs=rngs)
    if readout == "attention":
      self.query = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, width)))
      self.attend = layers.Attention(width, 4, rngs=rngs)
    if readout == "keypoints":
      self.keypoints = layers.TokenKeypoints(width, KEYPOINTS, grid[0], grid[1:], subcells=subcells, rngs=rngs)
    self.head = layers.Mlp(grid[0] * KEYPOINTS * width if readout == "keypoints" else width, width, out_dim,
                           rngs=rngs)

  def __call__(self, hidden):
    x = self.norm(hidden) + self.pos.value[None]
    x = x + self.mlp(x)
    if self.readout == "mean":
      return self.head(x).mean(axis=1)
    if self.readout == "keypoints":
      return self.head(self.keypoints(x).reshape(x.shape[0], -1))
    q = jnp.broadcast_to(self.query.value[None], (x.shape[0], 1, x.shape[-1]))
    return self.head(self.attend(q, x, None)[:, 0])


def video_model(restored):
  """The frozen video model of a restored video run or VAM."""
  return restored.model.video if restored.config.model.name == "vam" else restored.model


def pixel_tokens(images, patch: int, width: int, seed: int = 0):
  """The control: context frames (B, F, H, W, 3) uint8 cut into patch x patch pixel patches, each projected to
  `width` by a fixed random (seeded, injective) linear map -> (B, F * (H / patch) * (W / patch), width): a
  tokenisation that has thrown nothing away, for a probe to be compared with on equal terms."""
  b, f, h, w, c = images.shape
  x = images.astype(jnp.float32) / 127.5 - 1.0
  x = x.reshape(b, f, h // patch, patch, w // patch, patch, c).transpose(0, 1, 2, 4, 3, 5, 6)
  x = x.reshape(b, f * (h // patch) * (w // patch), patch * patch * c)
  proj = jax.random.normal(jax.random.PRNGKey(seed), (x.shape[-1], width)) / jnp.sqrt(x.shape[-1])
  return x @ proj


def probe_layer(restored, data_dir: str, layer: int | str, readout: str, steps: int, batch_size: int, lr: float,
                windows_count: int, seed: int = 0, subcells: int = 1) -> dict:
  """Trains a `FeatureProbe` on block `layer`'s frozen hidden states (`layer="pixels"`: on `pixel_tokens` of
  the context frames, 8-pixel patches, the video model's width); -> {part: {error_m, mean_error_m, windows}}
  on held-out windows (`offline.STATE_PARTS`), plus the training MSE (standardised; over the first and the
  last tenth of the steps) and the wall time."""
  video = video_model(restored)
  if layer == "pixels":
    hidden = jax.jit(lambda batch: pixel_tokens(batch["images"], 8, video.cfg.dit.width, seed))
    grid = (restored.config.data.context_frames, restored.image_size // 8, restored.image_size // 8)
  else:
    grid = (video.cfg.dit.frames, *video.cfg.dit.grid)
    hidden = jax.jit(lambda batch: jax.lax.stop_gradient(
        video.imagined_hidden_states(batch, jax.random.PRNGKey(seed), 1.0, layer, 1)))
  keys = ("context_latents", "images", "instruction", "embodiment_id")
  inputs = lambda b: {k: jnp.asarray(b[k]) for k in keys if k in b}
  train_it = restore.heldout_windows(restored, data_dir, batch_size, seed, split="train")
  first = next(train_it)
  if "privileged" not in first:
    raise ValueError(f"{data_dir}: the windows carry no privileged state (steps/observation/privileged)")
  h0 = hidden(inputs(first))
  probe = FeatureProbe(h0.shape[1], h0.shape[2], first["privileged"].shape[-1], readout, grid, subcells=subcells,
                       rngs=nnx.Rngs(seed))
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, min(50, steps // 2), max(steps, 2), lr * 0.1)
  opt = nnx.Optimizer(probe, optax.adamw(schedule), wrt=nnx.Param)

  @nnx.jit
  def step(probe, opt, h, target):
    loss, grads = nnx.value_and_grad(lambda p: jnp.mean(jnp.square(p(h) - target)))(probe)
    opt.update(probe, grads)
    return loss

  t0, batch, losses = time.perf_counter(), first, []
  for i in range(steps):
    losses.append(step(probe, opt, h0 if i == 0 else hidden(inputs(batch)), jnp.asarray(batch["privileged"])))
    batch = next(train_it)
  losses = np.asarray(jax.device_get(losses))
  tail = max(1, steps // 10)  # training MSE: the first and the last tenth of the steps
  tally = offline.StateDistances(restored)
  val_it = restore.heldout_windows(restored, data_dir, batch_size, seed)
  estimate = nnx.jit(lambda p, h: p(h))
  for _ in range(max(1, windows_count // batch_size)):
    b = next(val_it)
    tally.add(np.asarray(estimate(probe, hidden(inputs(b)))), b)
  out = tally.result()
  return dict(out, first_train_mse=float(losses[:tail].mean()), train_mse=float(losses[-tail:].mean()),
              seconds=time.perf_counter() - t0)


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m vam.eval.feature_probe", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a video run's or a VAM's training workdir")
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--data_dir", default=None, help="default: the run's config.data_dir")
  parser.add_argument("--dataset", default="sim_robot", help="the dataset (of data_dir) whose windows are probed")
  parser.add_argument("--layers", nargs="+", default=["0"],
                      help="DiT blocks (0: the embedded patches) and/or `pixels` (the raw-pixel control)")
  parser.add_argument("--readout", default="attention", choices=READOUTS)
  parser.add_argument("--subcells", type=int, default=1,
                      help="readout keypoints: 1 = per-token offsets, s > 1 = s x s scored sub-cells per token")
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--windows", type=int, default=512, help="held-out windows measured")
  parser.add_argument("--out", default=None, help="JSON file (default: WORKDIR/eval/feature_probe.json)")
  args = parser.parse_args(argv)
  if args.subcells != 1 and args.readout != "keypoints":
    parser.error(f"--subcells {args.subcells} applies to --readout keypoints only (got --readout {args.readout})")
  if args.subcells < 1:
    parser.error(f"--subcells {args.subcells} must be >= 1")
  restored = restore.load(args.workdir, args.step)
  restored.config.data.mixture = {args.dataset: 1.0}
  data_dir = args.data_dir or restored.config.data_dir
  depth = video_model(restored).cfg.dit.depth
  chosen = [k if k == "pixels" else int(k) for k in args.layers if k == "pixels" or k.isdigit()]
  bad = [k for k in args.layers if not (k == "pixels" or (k.isdigit() and int(k) <= depth))]
  if bad:
    parser.error(f"--layers {bad}: the video DiT has blocks 1..{depth} (0: the embedded patches) or `pixels`")
  result = dict(workdir=restored.workdir, step=restored.step, readout=args.readout, subcells=args.subcells,
                steps=args.steps, layers={})
  for k in chosen:
    r = probe_layer(restored, data_dir, k, args.readout, args.steps, args.batch_size, args.lr, args.windows,
                    subcells=args.subcells)
    result["layers"][str(k)] = r
    print(f"layer {k}: target {r['target']['error_m'] * 100:.1f} cm, object {r['object']['error_m'] * 100:.1f} cm "
          f"(training mean {r['object']['mean_error_m'] * 100:.1f} cm; train MSE {r['train_mse']:.4f}; "
          f"{r['seconds']:.0f} s)", flush=True)
  out = args.out or os.path.join(args.workdir, "eval", "feature_probe.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=1)
  print(f"feature probe: {os.path.abspath(out)}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
