"""Strong scaling of the video DiT's train step over 1, 2, 4, 8 forced host-platform CPU devices (one fresh
process per device count: XLA_FLAGS must be set before JAX starts), and over mesh layouts at 8 devices.

    python -m benchmarks.scaling --out benchmarks/results/scaling.json [--devices 1,2,4,8] [--size quickstart]

The global batch is fixed, so ideal scaling on a machine with as many cores as devices is examples/s growing
with the device count. Forced CPU devices share this machine's cores: here the ratio to 1 device measures
what partitioning costs (collectives, smaller per-device matmuls), ideal 1.0 at any count on a 2-core machine.
Layouts at the largest count: data-parallel, FSDP, tensor and sequence splits of the same step.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

from benchmarks import report

flags.DEFINE_string("out", "benchmarks/results/scaling.json", "where the JSON report goes")
flags.DEFINE_list("devices", ["1", "2", "4", "8"], "device counts to measure")
flags.DEFINE_string("size", "quickstart", "experiments/video_pretrain.py variant")
flags.DEFINE_integer("batch_size", 16, "global batch (fixed across device counts)")
flags.DEFINE_integer("steps", 5, "timed steps per measurement")
flags.DEFINE_string("child", None, "internal: measure this mesh (JSON) in this process and print the result")
FLAGS = flags.FLAGS


def layouts(n: int) -> dict:
  """Mesh layouts to compare at n devices."""
  out = {"data": {"data": n, "fsdp": 1, "tensor": 1, "sequence": 1}}
  if n >= 4:
    out["data+fsdp"] = {"data": n // 2, "fsdp": 2, "tensor": 1, "sequence": 1}
    out["data+tensor"] = {"data": n // 2, "fsdp": 1, "tensor": 2, "sequence": 1}
    out["data+sequence"] = {"data": n // 2, "fsdp": 1, "tensor": 1, "sequence": 2}
  return out


def measure(mesh_axes: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import synthetic  # pylint: disable=g-import-not-at-top
  from vam import config as config_lib, embodiment  # pylint: disable=g-import-not-at-top
  from vam.train import metrics, sharding, train  # pylint: disable=g-import-not-at-top

  config = config_lib.load(f"experiments/video_pretrain.py:{FLAGS.size}")
  with config.unlocked():
    config.data.use_latents = True
    config.batch_size = FLAGS.batch_size
    config.model.dit.scan_layers = False
    config.model.dit.remat = "none"
    config.mesh = mesh_axes
  space = embodiment.ActionSpace(tuple(config.data.embodiments))
  example = synthetic.window(config, space, 64)
  mesh = sharding.make_mesh(mesh_axes)
  prog = train.build_program(config, space, 64, example, mesh)
  step_time = synthetic.median_step_time(prog, example, config.batch_size, FLAGS.steps)
  peak = metrics.measure_peak_flops()
  return dict(devices=jax.device_count(), mesh=mesh_axes, step_time_s=step_time,
              examples_per_s=config.batch_size / step_time, flops_per_step=prog.flops_per_step,
              mfu=prog.flops_per_step / step_time / peak, memory=prog.memory)


def run_child(devices: int, mesh_axes: dict) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}")
  with tempfile.NamedTemporaryFile("r", suffix=".json") as f:
    cmd = [sys.executable, "-m", "benchmarks.scaling", f"--child={json.dumps(mesh_axes)}", f"--out={f.name}",
           f"--size={FLAGS.size}", f"--batch_size={FLAGS.batch_size}", f"--steps={FLAGS.steps}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
      raise RuntimeError(f"{devices} devices, mesh {mesh_axes}: {proc.stderr[-2000:]}")
    return json.load(open(f.name))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.child:
    with open(FLAGS.out, "w") as f:
      json.dump(measure(json.loads(FLAGS.child)), f)
    return
  counts = [int(n) for n in FLAGS.devices]
  res = dict(by_devices={}, layouts={})
  for n in counts:
    res["by_devices"][str(n)] = run_child(n, layouts(n)["data"])
    print(f"{n} device(s): {res['by_devices'][str(n)]['examples_per_s']:.1f} examples/s", flush=True)
  for name, axes in layouts(max(counts)).items():
    res["layouts"][name] = res["by_devices"][str(max(counts))] if name == "data" else run_child(max(counts), axes)
    print(f"{max(counts)} devices, {name}: {res['layouts'][name]['examples_per_s']:.1f} examples/s", flush=True)
  base = res["by_devices"][str(counts[0])]["examples_per_s"]
  ratios = {f"examples_per_s_{n}_vs_{counts[0]}": res["by_devices"][str(n)]["examples_per_s"] / base for n in counts}
  top = res["layouts"]["data"]["examples_per_s"]
  ratios.update({f"layout_{k}_vs_data": v["examples_per_s"] / top for k, v in res["layouts"].items() if k != "data"})
  report.write(FLAGS.out, "scaling", dict(size=FLAGS.size, batch_size=FLAGS.batch_size, cpus=os.cpu_count()),
               res, ratios)


if __name__ == "__main__":
  try:
    app.run(main)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    sys.exit(f"error: {e}")
