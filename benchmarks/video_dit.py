"""The video DiT's train step: FLOPs, step time and MFU per size variant, against the matmul peak measured
in the same run (no datasets needed: a resident batch of random latents).

    python -m benchmarks.video_dit --out benchmarks/results/video_dit.json [--sizes tiny,quickstart,small]
        [--steps 5] [--image_size 64]

Each size is `experiments/video_pretrain.py:<size>` with stored latents (the frozen autoencoder is not in the
step) and the batch size below; MFU = XLA's FLOPs of the compiled step / step time / peak. Layers are not
scanned here (`--scan`: as the config says): XLA's cost analysis counts a scanned layer loop's body once, so
a scanned model's FLOPs (and MFU) would read depth times too low.
"""

import sys
import time

from absl import app, flags, logging

from benchmarks import report, synthetic
from vam import config as config_lib

flags.DEFINE_string("out", "benchmarks/results/video_dit.json", "where the JSON report goes")
flags.DEFINE_list("sizes", ["tiny", "quickstart", "small"], "video_pretrain.py variants to measure")
flags.DEFINE_integer("steps", 5, "timed steps per size")
flags.DEFINE_integer("image_size", 64, "frame size (latent size = image_size / autoencoder patch)")
flags.DEFINE_integer("batch_size", 0, "global batch (0: per-size default: 16 tiny/quickstart, 4 small, 2 base)")
flags.DEFINE_bool("scan", False, "keep the config's scan_layers/remat (FLOPs then undercount, see above)")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "config.compute_dtype of the train steps "
                  "(bfloat16: bf16 matmuls/convs, f32 master weights; the peak is then measured in bf16)")
FLAGS = flags.FLAGS
BATCH = dict(tiny=16, quickstart=16, small=4, base=2)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vam import embodiment  # pylint: disable=g-import-not-at-top
  from vam.train import metrics, sharding, train  # pylint: disable=g-import-not-at-top

  peak = metrics.measure_peak_flops(dtype=jnp.dtype(FLAGS.compute_dtype))
  spec = metrics.spec_peak_flops(FLAGS.compute_dtype)
  res, configs = dict(peak_matmul=dict(flops_per_s=peak, spec_flops_per_s=spec, dtype=FLAGS.compute_dtype)), {}
  for size in FLAGS.sizes:
    config = config_lib.load(f"experiments/video_pretrain.py:{size}")
    with config.unlocked():
      config.data.use_latents = True
      config.batch_size = FLAGS.batch_size or BATCH.get(size, 2)
      config.compute_dtype = FLAGS.compute_dtype
      if not FLAGS.scan:
        config.model.dit.scan_layers = False
        config.model.dit.remat = "none"
    space = embodiment.ActionSpace(tuple(config.data.embodiments))
    mesh = sharding.make_mesh(dict(config.mesh))
    example = synthetic.window(config, space, FLAGS.image_size)
    t = time.perf_counter()
    prog = train.build_program(config, space, FLAGS.image_size, example, mesh)
    compile_s = time.perf_counter() - t
    step_time = synthetic.median_step_time(prog, example, config.batch_size, FLAGS.steps)
    tokens = (config.data.context_frames + config.data.future_frames) * (FLAGS.image_size // config.model.autoencoder.patch // config.model.dit.patch) ** 2
    res[size] = dict(params=prog.num_params, trainable=prog.num_trainable, batch_size=config.batch_size, tokens=tokens,
                     flops_per_step=prog.flops_per_step, step_time_s=step_time, examples_per_s=config.batch_size / step_time,
                     mfu=prog.flops_per_step / step_time / peak, compile_s=compile_s, memory=prog.memory,
                     mfu_vs_spec=prog.flops_per_step / step_time / spec if spec else None,
                     scan_layers=config.model.dit.scan_layers, remat=config.model.dit.remat)
    configs[size] = config.model.dit.to_dict()
    print(f"{size}: {prog.num_params / 1e6:.1f}M params, {tokens} tokens, batch {config.batch_size}: "
          f"{step_time:.3f} s/step, MFU {100 * res[size]['mfu']:.1f}%", flush=True)
  ratios = {f"mfu_{s}": res[s]["mfu"] for s in FLAGS.sizes}
  report.write(FLAGS.out, "video_dit", dict(image_size=FLAGS.image_size, sizes=configs,
                                            compute_dtype=FLAGS.compute_dtype), res, ratios)


if __name__ == "__main__":
  try:
    app.run(main)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
