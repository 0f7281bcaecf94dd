"""Input pipeline vs train step, side by side in one run, and the step's MFU against a measured matmul peak.

    python -m benchmarks.train --config experiments/quickstart.py --out benchmarks/results/train.json \
        [--steps 20] [--workers 0] [--config.key=value ...]

Measures, for one config on this machine's devices:
  peak_matmul      FLOP/s of a square matmul (f32 on CPU, bf16 on accelerators), the MFU denominator
  loader           per-host batches/s of the grain pipeline (warm episode cache), optionally with workers
  train_step       steps/s of the compiled train step on a resident batch (no input), and its MFU
  train_loop       steps/s of loader + step together, as the training loop runs them
and the ratio loader batches/s / train steps/s (> 1: the loader keeps up).
"""

import sys
import time

from absl import app, flags, logging

from benchmarks import report
from vam import config as config_lib

flags.DEFINE_string("config", "experiments/quickstart.py", "training config, `path.py[:args]`")
flags.DEFINE_string("out", "benchmarks/results/train.json", "where the JSON report goes")
flags.DEFINE_integer("steps", 20, "timed steps (and batches) per measurement")
flags.DEFINE_integer("warmup", 40, "batches drawn before timing the loader (fills the episode cache)")
flags.DEFINE_integer("workers", 0, "grain worker processes for the loader measurement")
FLAGS = flags.FLAGS
_OVERRIDES = []  # --config.key=value, filled by the flags parser


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  from vam.input import pipeline  # pylint: disable=g-import-not-at-top
  from vam.train import metrics, sharding, train  # pylint: disable=g-import-not-at-top

  config = config_lib.load(FLAGS.config, _OVERRIDES)
  space, _, loader = train.make_inputs(config)
  mesh = sharding.make_mesh(dict(config.mesh))
  host_batch = train.check_batch_size(config, mesh)
  example = loader.sources[0][0]
  prog = train.build_program(config, space, int(example["images"].shape[1]), example, mesh)
  peak = metrics.measure_peak_flops()
  n = FLAGS.steps
  res = dict(peak_matmul=dict(flops_per_s=peak))

  # Loader alone (steady state: the decoded-episode cache is warm after `warmup` batches).
  it = iter(loader.dataset(host_batch, seed=0, workers=FLAGS.workers))
  for _ in range(FLAGS.warmup):
    next(it)
  t = time.perf_counter()
  for _ in range(n):
    batch = next(it)
  dt = time.perf_counter() - t
  res["loader"] = dict(batches_per_s=n / dt, examples_per_s=n * host_batch / dt, workers=FLAGS.workers)

  # Train step alone, on one resident batch.
  device_batch = pipeline.to_global({k: batch[k] for k in prog.input_keys}, prog.data_sharding)
  state, ema = prog.init(jax.random.PRNGKey(0))
  for _ in range(3):
    state, ema, m = prog.step(state, ema, device_batch)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(n):
    state, ema, m = prog.step(state, ema, device_batch)
  jax.block_until_ready(m)
  step_time = (time.perf_counter() - t) / n
  res["train_step"] = dict(steps_per_s=1 / step_time, examples_per_s=config.batch_size / step_time,
                           flops_per_step=prog.flops_per_step, mfu=prog.flops_per_step / step_time / peak,
                           params=prog.num_params, memory=prog.memory)

  # Both, as the loop runs them (the host loads the next batch while the device computes this one).
  t = time.perf_counter()
  for _ in range(n):
    host = next(it)
    state, ema, m = prog.step(state, ema, pipeline.to_global({k: host[k] for k in prog.input_keys},
                                                             prog.data_sharding))
  jax.block_until_ready(m)
  loop_time = (time.perf_counter() - t) / n
  res["train_loop"] = dict(steps_per_s=1 / loop_time, mfu=prog.flops_per_step / loop_time / peak)

  ratios = dict(loader_batches_vs_train_steps=res["loader"]["batches_per_s"] / res["train_step"]["steps_per_s"],
                loop_vs_step=res["train_loop"]["steps_per_s"] / res["train_step"]["steps_per_s"])
  report.write(FLAGS.out, "train", dict(file=FLAGS.config, overrides=dict(_OVERRIDES), batch_size=config.batch_size,
                                       mesh=dict(mesh.shape), model=config.model.to_dict()), res, ratios)

if __name__ == "__main__":
  try:
    app.run(main, flags_parser=config_lib.absl_flags_parser(FLAGS, _OVERRIDES))
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
