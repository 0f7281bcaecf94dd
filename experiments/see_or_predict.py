"""Can a frame of the future tell where the arm will be better than the present predicts it? The perception rung
behind README "Does the decoder read the future?": the same small conv net (the image baseline's encoder: ResNet
stages with GroupNorm, 32 spatial-softmax keypoints per frame, random shifts) regresses the robot's joint
positions 4 steps ahead from either

  see       the frame 4 steps ahead (and the joints now): perceiving the future, as a perfect video model offers it
  predict   the two context frames t - 4 and t (and the joints now): predicting the future from the present

trained on the demos' training split, scored on the held-out (val) split, per robot, in units of the held-out
standard deviation of each joint's 4-step change. If `see` is no better than `predict`, then at this image size
the true future frames cannot make an inverse-dynamics decoder more precise than the context already does.

    python experiments/see_or_predict.py --data_dir out/demo/data [--steps 1500] [--out results/see_or_predict.json]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vam import embodiment as embodiment_lib
from vam.input import sources
from vam.models import encoders, layers

AHEAD = 4  # steps ahead: the demo's first future frame (frame stride 4)


def examples(data_dir: str, split: str, robot: str) -> dict:
  """Every other step t of the split's episodes of `robot`: frames t-4, t, t+4 (clamped), joints now and ahead."""
  src = sources.EpisodeSource(os.path.join(data_dir, "sim_robot", "1.0.0"), split)
  out = {k: [] for k in ("past", "now", "ahead", "q_now", "q_ahead")}
  for i in range(len(src)):
    ep = src.episode(i)
    if ep["embodiment"] != robot:
      continue
    T = len(ep["action"])
    q = np.stack([embodiment_lib.joint_positions(robot, s) for s in ep["state"]])
    for t in range(0, T, 2):
      out["past"].append(ep["images"][max(t - AHEAD, 0)])
      out["now"].append(ep["images"][t])
      out["ahead"].append(ep["images"][min(t + AHEAD, T - 1)])
      out["q_now"].append(q[t])
      out["q_ahead"].append(q[min(t + AHEAD, T - 1)])
  return {k: np.asarray(v) for k, v in out.items()}


class Regressor(nnx.Module):
  """Frames (B, F, 64, 64, 3) uint8 + joints now (B, J) -> the joints' change to AHEAD steps later (B, J)."""

  def __init__(self, frames: int, joints: int, *, rngs: nnx.Rngs):
    cfg = encoders.EncoderConfig(kind="conv", width=128, channels=(16, 32, 64), groups=8, readout="keypoints",
                                 keypoints=32, frames=frames, shift=4)
    self.encoder = encoders.ConvEncoder(cfg, rngs=rngs)
    self.head = layers.Mlp(frames * 32 * 128 + joints, 256, joints, rngs=rngs)

  def __call__(self, frames, q_now):
    tokens = self.encoder(frames)
    return self.head(jnp.concatenate([tokens.reshape(tokens.shape[0], -1), q_now], axis=-1))


def fit(train: dict, val: dict, inputs: tuple[str, ...], steps: int, batch: int, seed: int) -> dict:
  """Trains one Regressor on `inputs` frames; RMSE of the held-out change (standardised) and of predicting none."""
  mean, std = train["q_now"].mean(0), train["q_now"].std(0) + 1e-6
  delta_std = (val["q_ahead"] - val["q_now"]).std(0) + 1e-6
  norm_q = lambda q: (q - mean) / std
  target = lambda d: (d["q_ahead"] - d["q_now"]) / delta_std
  frames = lambda d, idx: np.stack([d[k][idx] for k in inputs], axis=1)
  model = Regressor(len(inputs), train["q_now"].shape[1], rngs=nnx.Rngs(seed))
  opt = nnx.Optimizer(model, optax.adamw(optax.cosine_decay_schedule(1e-3, steps, 0.1), weight_decay=1e-4),
                      wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, x, q, y, rng):
    def loss_fn(m):
      return jnp.mean(jnp.square(m(encoders.random_shift(x, rng, 4), q) - y))
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss

  rng = np.random.default_rng(seed)
  t0 = time.time()
  for i in range(steps):
    idx = rng.integers(0, len(train["q_now"]), batch)
    step(model, opt, jnp.asarray(frames(train, idx)), jnp.asarray(norm_q(train["q_now"][idx])),
         jnp.asarray(target(train)[idx]), jax.random.PRNGKey(i))
  predict = nnx.jit(lambda m, x, q: m(x, q))
  preds = [np.asarray(predict(model, jnp.asarray(frames(val, np.arange(s, min(s + 256, len(val["q_now"]))))),
                              jnp.asarray(norm_q(val["q_now"][s:s + 256]))))
           for s in range(0, len(val["q_now"]), 256)]
  err = np.concatenate(preds) - target(val)
  return dict(rmse=float(np.sqrt(np.mean(err ** 2))), rmse_per_joint=np.sqrt(np.mean(err ** 2, 0)).round(4).tolist(),
              train_seconds=round(time.time() - t0))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir", required=True)
  p.add_argument("--robots", nargs="+", default=["arm6", "gantry"])
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="results/see_or_predict.json")
  args = p.parse_args(argv)
  result = {}
  for robot in args.robots:
    train, val = examples(args.data_dir, "train", robot), examples(args.data_dir, "val", robot)
    delta = (val["q_ahead"] - val["q_now"]) / ((val["q_ahead"] - val["q_now"]).std(0) + 1e-6)
    r = dict(train_examples=len(train["q_now"]), val_examples=len(val["q_now"]),
             no_change=float(np.sqrt(np.mean(delta ** 2))))
    r["see"] = fit(train, val, ("ahead",), args.steps, args.batch, args.seed)
    r["predict"] = fit(train, val, ("past", "now"), args.steps, args.batch, args.seed)
    result[robot] = r
    print(robot, "see", r["see"]["rmse"], "predict", r["predict"]["rmse"], flush=True)
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
  doc = dict(commit=commit, command="python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]),
             ahead_steps=AHEAD, steps=args.steps, batch=args.batch,
             units="RMSE of the joints' change over the next 4 steps, in held-out standard deviations per joint "
                   "(no_change: predicting that the joints stay)", robots=result)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(doc, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
