"""The video-action model: its stage-2 train step (frozen video DiT up to layer k + the action decoder) per
decoder size, and the latency of one action chunk at inference against the image baseline's, side by side
in one run (no datasets or checkpoints: randomly initialised models of the experiment configs; the compute
does not depend on the weights).

    python -m benchmarks.vam --out benchmarks/results/vam.json [--sizes quickstart,small,base] [--steps 5]

  peak_matmul        FLOP/s of a square matmul in this run (the MFU denominator)
  train/<size>       VAM train step on the quickstart video model: params, FLOPs (XLA), step time, MFU
  latency            one chunk for one observation (batch 1, jitted, median of --repeats): the VAM at
                     tau_v = 1 (encode context + k DiT blocks + 10 action Euler steps), the VAM at tau_v = 0.5
                     (+ video Euler steps), and the baseline (image encoder + 10 action Euler steps)
Ratios: each latency over the baseline's, and each size's MFU.
"""

import sys
import time

from absl import app, flags, logging

from benchmarks import report, synthetic
from vam import config as config_lib

flags.DEFINE_string("out", "benchmarks/results/vam.json", "where the JSON report goes")
flags.DEFINE_list("sizes", ["quickstart", "small", "base"], "action-decoder sizes (DECODERS) to measure")
flags.DEFINE_integer("steps", 5, "timed train steps per size")
flags.DEFINE_integer("repeats", 20, "timed chunks per latency measurement")
flags.DEFINE_integer("batch_size", 32, "global batch of the train-step measurement")
flags.DEFINE_integer("image_size", 64, "frame size")
flags.DEFINE_bool("latency", True, "also measure one chunk's latency, VAM vs baseline")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "config.compute_dtype of the train steps "
                  "(bfloat16: bf16 matmuls/convs, f32 master weights; the peak is then measured in bf16)")
FLAGS = flags.FLAGS
DECODERS = dict(  # width, depth, heads of the action decoder (the video model is the quickstart one; tiny: tiny)
    tiny=dict(width=32, depth=1, heads=2),
    quickstart=dict(width=128, depth=3, heads=4),
    small=dict(width=384, depth=6, heads=6),
    base=dict(width=768, depth=12, heads=12),
)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from vam import embodiment  # pylint: disable=g-import-not-at-top
  from vam.models import registry  # pylint: disable=g-import-not-at-top
  from vam.train import metrics, sharding, train  # pylint: disable=g-import-not-at-top

  peak = metrics.measure_peak_flops(dtype=jax.numpy.dtype(FLAGS.compute_dtype))
  spec = metrics.spec_peak_flops(FLAGS.compute_dtype)
  res = dict(peak_matmul=dict(flops_per_s=peak, spec_flops_per_s=spec, dtype=FLAGS.compute_dtype), train={},
             latency={})
  ratios = {}

  # ---- Train steps per decoder size ----
  for size in FLAGS.sizes:
    if size not in DECODERS:
      raise ValueError(f"--sizes: unknown size {size!r}; valid: {list(DECODERS)}")
    config = synthetic.vam_config(size == "tiny")
    with config.unlocked():
      config.model.decoder.update(DECODERS[size])
      config.batch_size = FLAGS.batch_size
      config.compute_dtype = FLAGS.compute_dtype
    space = embodiment.ActionSpace(tuple(config.data.embodiments))
    example = synthetic.window(config, space, FLAGS.image_size)
    mesh = sharding.make_mesh(dict(config.mesh))
    prog = train.build_program(config, space, FLAGS.image_size, example, mesh)
    step_time = synthetic.median_step_time(prog, example, config.batch_size, FLAGS.steps)
    res["train"][size] = dict(decoder=DECODERS[size], params=prog.num_params, trainable=prog.num_trainable,
                              batch_size=config.batch_size, flops_per_step=prog.flops_per_step,
                              step_time_s=step_time, examples_per_s=config.batch_size / step_time,
                              mfu=prog.flops_per_step / step_time / peak, memory=prog.memory,
                              mfu_vs_spec=prog.flops_per_step / step_time / spec if spec else None)
    ratios[f"mfu_{size}"] = res["train"][size]["mfu"]
    print(f"train {size}: {prog.num_trainable / 1e6:.1f}M trainable of {prog.num_params / 1e6:.1f}M, "
          f"{step_time:.3f} s/step, MFU {100 * ratios[f'mfu_{size}']:.1f}%", flush=True)

  # ---- Latency of one chunk (batch 1): VAM vs baseline ----
  def latency(config, sample):
    space = embodiment.ActionSpace(tuple(config.data.embodiments))
    example = synthetic.window(config, space, FLAGS.image_size)
    make = registry.factory(config, space.dim, len(space.embodiments), FLAGS.image_size)
    binder = registry.Binder(make)
    params = nnx.state(make(rngs=nnx.Rngs(0)), nnx.Param).to_pure_dict()
    keys = ("images", "instruction", "embodiment_id", "proprio", "action_mask")
    obs = {k: jax.numpy.asarray(example[k])[None] for k in keys}
    run = jax.jit(lambda p, o, rng: sample(binder(p), o, rng))
    t = time.perf_counter()
    jax.block_until_ready(run(params, obs, jax.random.PRNGKey(0)))
    compile_s = time.perf_counter() - t
    times = []
    for i in range(FLAGS.repeats):
      t = time.perf_counter()
      jax.block_until_ready(run(params, obs, jax.random.PRNGKey(i)))
      times.append(time.perf_counter() - t)
    return dict(median_ms=1e3 * float(np.median(times)), p90_ms=1e3 * float(np.percentile(times, 90)),
                compile_s=compile_s, chunk=list(example["action_mask"].shape))

  if not FLAGS.latency:
    report.write(FLAGS.out, "vam", dict(decoders={s: DECODERS[s] for s in FLAGS.sizes}, image_size=FLAGS.image_size,
                                        compute_dtype=FLAGS.compute_dtype), res, ratios)
    return
  vam = synthetic.vam_config(False)
  with vam.unlocked():
    vam.batch_size = 1
  baseline = config_lib.load("experiments/quickstart.py")
  res["latency"]["vam_tau_v_1"] = latency(vam, lambda m, o, rng: m.sample(o, rng, tau_v=1.0))
  res["latency"]["vam_tau_v_0.5"] = latency(vam, lambda m, o, rng: m.sample(o, rng, tau_v=0.5))
  res["latency"]["baseline"] = latency(baseline, lambda m, o, rng: m.sample(o, rng))
  for name, r in res["latency"].items():
    print(f"latency {name}: {r['median_ms']:.1f} ms per chunk (p90 {r['p90_ms']:.1f})", flush=True)
    if name != "baseline":
      ratios[f"latency_{name}_vs_baseline"] = r["median_ms"] / res["latency"]["baseline"]["median_ms"]
  report.write(FLAGS.out, "vam", dict(decoders={s: DECODERS[s] for s in FLAGS.sizes}, image_size=FLAGS.image_size,
                                      video_model="experiments/video_pretrain.py:quickstart"), res, ratios)


if __name__ == "__main__":
  try:
    app.run(main)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
