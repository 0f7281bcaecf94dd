"""The train step of the image baseline and of the VAM, under the current recipe and the old one, side by side.

    python -m benchmarks.step --out benchmarks/results/step.json [--models baseline,vam] [--recipes current,old]
        [--profile out/profile] [--steps 6] [--rounds 4] [--smoke]

Each (model, recipe) program is compiled once, then timed in interleaved rounds (every program once per round,
the best round kept), so a busy moment of a shared machine hits them all alike; the ratios current / old are
measured in the same run. The windows are synthetic (benchmarks/synthetic.py: the compute does not depend on
the values), so no dataset or trained video model is needed: the VAM runs on an untrained quickstart video
model (`benchmarks.vam`). `--profile DIR` also traces each model's current-recipe step into DIR/<model> and
prints its top ops and its time and FLOPs by part (benchmarks/profile.py). `--smoke`: tiny configs, one round
(what the tests run).

Recipes (`RECIPES`): `current` is the configs as they are; `bf16` the same with bf16 matmuls and convolutions;
`old` restores, by config keys, the recipe before the train-step work of issue 41 (what each key changed is in
`RECIPES`' comments).
"""

import sys
import time

from absl import app, flags, logging

from benchmarks import profile as profile_lib
from benchmarks import report, synthetic
from vam import config as config_lib

FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags (defined only when run as a program, so that importing `table` defines none)."""
  flags.DEFINE_string("out", "benchmarks/results/step.json", "where the JSON report goes")
  flags.DEFINE_list("models", ["baseline", "vam"], "which train steps: baseline | vam")
  flags.DEFINE_list("recipes", ["current", "old"], "recipes to time side by side (RECIPES)")
  flags.DEFINE_integer("steps", 6, "timed steps per program and round")
  flags.DEFINE_integer("rounds", 4, "interleaved timing rounds (the best is kept)")
  flags.DEFINE_integer("batch_size", 0, "global batch (0: the config's)")
  flags.DEFINE_string("profile", None, "trace each model's current step into this folder and report its ops/parts")
  flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "config.compute_dtype of every recipe")
  flags.DEFINE_bool("smoke", False, "tiny configs and one short round (a check that the benchmark runs)")


IMAGE_SIZE = 64
# Per model, the config overrides (dotted key -> its command-line text) of each recipe on top of its config.
_OLD_COMMON = {
    "compiler_options": "{}",  # XLA's default: YNNPACK also runs the convolutions and elementwise fusions
    "model.decoder.stacked_memory_kv": "False",  # every decoder block projects the memory itself, every call
}
RECIPES = {
    "current": {"baseline": {}, "vam": {}},
    # the current recipe with bf16 matmuls and convolutions (f32 master weights): measured, not adopted on CPU
    "bf16": {"baseline": {"compute_dtype": "bfloat16"}, "vam": {"compute_dtype": "bfloat16"}},
    "old": {
        "baseline": dict(_OLD_COMMON),
        "vam": dict(_OLD_COMMON),
    },
}


def model_config(model: str, smoke: bool):
  """The training config of `model` (baseline: experiments/quickstart.py; vam: experiments/mutual_pretrain.py on the
  quickstart video model's config, as `benchmarks.vam`), tiny under `smoke`."""
  if model == "baseline":
    return config_lib.load("experiments/quickstart.py" + (":tiny" if smoke else ""))
  if model == "vam":
    return synthetic.vam_config(smoke)
  raise ValueError(f"--models: unknown model {model!r}; valid: baseline, vam")


def with_recipe(config, model: str, recipe: str, batch_size: int, compute_dtype: str):
  """`config` of `model` under `recipe` (RECIPES; its compute dtype wins over `compute_dtype`)."""
  if recipe not in RECIPES:
    raise ValueError(f"--recipes: unknown recipe {recipe!r}; valid: {list(RECIPES)}")
  overrides = dict({"compute_dtype": compute_dtype}, **RECIPES[recipe][model])
  if batch_size:
    overrides["batch_size"] = str(batch_size)
  for key, text in overrides.items():
    config_lib.override(config, key, text)
  return config


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  from vam import embodiment  # pylint: disable=g-import-not-at-top
  from vam.input import pipeline  # pylint: disable=g-import-not-at-top
  from vam.train import metrics, sharding, train  # pylint: disable=g-import-not-at-top

  steps, rounds = (2, 1) if FLAGS.smoke else (FLAGS.steps, FLAGS.rounds)
  peak = metrics.measure_peak_flops(dtype=jax.numpy.dtype(FLAGS.compute_dtype),
                                    min_seconds=0.2 if FLAGS.smoke else 1.0)
  runs = {}
  for model in FLAGS.models:
    for recipe in FLAGS.recipes:
      config = with_recipe(model_config(model, FLAGS.smoke), model, recipe, FLAGS.batch_size, FLAGS.compute_dtype)
      space = embodiment.ActionSpace(tuple(config.data.embodiments))
      example = synthetic.window(config, space, IMAGE_SIZE)
      mesh = sharding.make_mesh(dict(config.mesh))
      t = time.perf_counter()
      prog = train.build_program(config, space, IMAGE_SIZE, example, mesh)
      compile_s = time.perf_counter() - t
      batch = pipeline.to_global(synthetic.batch(example, prog.input_keys, config.batch_size), prog.data_sharding)
      state, ema = prog.init(jax.random.PRNGKey(0))
      state, ema, m = prog.step(state, ema, batch)
      jax.block_until_ready(m)
      runs[(model, recipe)] = dict(prog=prog, mesh=mesh, args=[state, ema, batch], times=[], compile_s=compile_s,
                                   batch_size=config.batch_size)

  for _ in range(rounds):  # interleaved: every program once per round
    for run in runs.values():
      state, ema, batch = run["args"]
      t = time.perf_counter()
      for _ in range(steps):
        state, ema, m = run["prog"].step(state, ema, batch)
      jax.block_until_ready(m)
      run["times"].append((time.perf_counter() - t) / steps)
      run["args"] = [state, ema, batch]

  res, ratios = dict(peak_matmul=dict(flops_per_s=peak)), {}
  for (model, recipe), run in runs.items():
    prog, step_time = run["prog"], min(run["times"])
    res[f"{model}/{recipe}"] = dict(
        step_ms=1e3 * step_time, examples_per_s=run["batch_size"] / step_time, batch_size=run["batch_size"],
        gflop_per_step=prog.flops_per_step / 1e9, mfu=prog.flops_per_step / step_time / peak,
        compile_s=run["compile_s"], params=prog.num_params, trainable=prog.num_trainable,
        rounds_ms=[1e3 * t for t in run["times"]])
    print(f"{model:9s} {recipe:8s} {1e3 * step_time:8.1f} ms/step  {run['batch_size'] / step_time:7.1f} examples/s  "
          f"MFU {prog.flops_per_step / step_time / peak:6.1%}  compile {run['compile_s']:.1f} s", flush=True)
  for model in FLAGS.models:
    for recipe in FLAGS.recipes:
      if recipe != "old" and "old" in FLAGS.recipes:
        ratios[f"{model}_{recipe}_vs_old_examples_per_s"] = (res[f"{model}/{recipe}"]["examples_per_s"]
                                                              / res[f"{model}/old"]["examples_per_s"])

  if FLAGS.profile:
    res["profile"] = {}
    for model in FLAGS.models:
      run = runs[(model, FLAGS.recipes[0])]
      prog = run["prog"]
      with jax.set_mesh(run["mesh"]):
        prof = profile_lib.profile_step(prog.step, run["args"], f"{FLAGS.profile}/{model}", steps, prog.step_fn,
                                        (prog.abstract_state, prog.abstract_ema, prog.abstract_batch), peak)
      prof.pop("state")
      res["profile"][model] = prof
      print(f"\n== {model} ({FLAGS.recipes[0]} recipe)\n" + profile_lib.format_report(prof), flush=True)

  report.write(FLAGS.out, "step", dict(models=FLAGS.models, recipes={r: RECIPES[r] for r in FLAGS.recipes},
                                       compute_dtype=FLAGS.compute_dtype,
                                       smoke=FLAGS.smoke, image_size=IMAGE_SIZE), res, ratios)


def table(report: dict) -> str:
  """The report as markdown: examples/s per model and recipe with the ratio to the old recipe, then each
  profiled step's time and FLOPs by part."""
  res = report["results"]
  lines = ["| model | recipe | ms / step | examples / s | MFU (of the measured f32 matmul peak) | vs old |",
           "|---|---|---|---|---|---|"]
  for key, r in res.items():
    if "/" not in key:
      continue
    model, recipe = key.split("/")
    old = res.get(f"{model}/old")
    ratio = f"**{r['examples_per_s'] / old['examples_per_s']:.2f}x**" if old and recipe != "old" else ""
    lines.append(f"| {model} | {recipe} | {r['step_ms']:.0f} | {r['examples_per_s']:.1f} | {r['mfu']:.1%} | {ratio} |")
  for model, prof in res.get("profile", {}).items():
    lines += ["", f"| {model}: part | ms / step | share of op time | GFLOP / step | share of FLOPs | MFU of the part |",
              "|---|---|---|---|---|---|"]
    for part, p in prof["parts"].items():
      mfu = f"{p['mfu']:.0%}" if p["gflop"] > 0 else ""
      lines.append(f"| {part} | {p['ms']:.1f} | {p['time_fraction']:.1%} | {p['gflop']:.2f} | "
                   f"{p['flop_fraction']:.1%} | {mfu} |")
  return "\n".join(lines)


if __name__ == "__main__":
  define_flags()
  try:
    app.run(main)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
