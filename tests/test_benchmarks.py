"""The benchmarks: the profiler's attribution of FLOPs and time to model parts, and a smoke run of every benchmark
`make bench` runs (tiny sizes, a few steps), so that none can break unseen."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from benchmarks import profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _two_part_step(state, ema, batch):
  """A toy train step: a 'observation_encoder' matmul (B, 8) @ (8, 16) and an 'action_decoder' matmul (16, 4),
  trained by one SGD step under an 'optimizer' scope."""

  def loss(params):
    with jax.named_scope("observation_encoder"):
      h = jnp.tanh(batch @ params["enc"])
    with jax.named_scope("action_decoder"):
      y = h @ params["dec"]
    return jnp.mean(y ** 2)

  value, grads = jax.value_and_grad(loss)(state)
  with jax.named_scope("optimizer"):
    state = jax.tree.map(lambda p, g: p - 0.1 * g, state, grads)
  return state, ema, {"loss": value}


def _toy_args(b=32):
  state = {"enc": jnp.ones((8, 16)) * 0.1, "dec": jnp.ones((16, 4)) * 0.1}
  return state, {"n": jnp.zeros(())}, jnp.ones((b, 8))


def test_scope_of_picks_the_innermost_part():
  assert profile.scope_of("jit(f)/transpose(jvp(action_decoder))/dot_general") == "action_decoder"
  assert profile.scope_of("jit(f)/jvp(video_model)/instruction_encoder/dot") == "instruction_encoder"
  assert profile.scope_of("jit(f)/jvp()/reduce_sum") == profile.OTHER


def test_flops_by_part_counts_forward_and_backward_matmuls():
  b = 32
  flops = profile.flops_by_part(_two_part_step, *jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                                                _toy_args(b)))
  # encoder: forward b x 8 x 16, backward only the weight gradient (the input needs none): 2 matmuls
  assert flops["observation_encoder"] == pytest.approx(2 * (2 * b * 8 * 16))
  # decoder: forward, the weight gradient and the gradient into h: 3 matmuls of b x 16 x 4
  assert flops["action_decoder"] == pytest.approx(3 * (2 * b * 16 * 4))
  assert "optimizer" not in flops  # elementwise only


def test_profile_step_attributes_time_to_parts(tmp_path):
  step = jax.jit(_two_part_step).lower(*_toy_args()).compile()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _toy_args())
  prof = profile.profile_step(step, list(_toy_args()), str(tmp_path / "trace"), 3, _two_part_step, abstract,
                              peak_flops=1e11)
  assert {"observation_encoder", "action_decoder"} <= set(prof["parts"])
  assert prof["parts"]["action_decoder"]["gflop"] > 0
  assert prof["op_ms_per_step"] > 0 and prof["top_ops"]
  assert all(op["part"] in profile.SCOPES + (profile.OTHER,) for op in prof["top_ops"])
  assert any(op["source"].startswith("test_benchmarks.py:") for op in prof["top_ops"])  # the line that made it
  text = profile.format_report(prof)
  assert "action_decoder" in text and "trace:" in text


def _one_device_env(**extra):
  """The test process's environment without conftest's 8 forced CPU devices: a benchmark runs as `make bench`
  runs it, on one device (its batch need not divide 8, and one device compiles faster)."""
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if not f.startswith("--xla_force_host_platform_device_count"))
  return dict(os.environ, XLA_FLAGS=flags, **extra)


def _run(args, timeout=900):
  proc = subprocess.run([sys.executable, "-m"] + args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                        env=_one_device_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _results(path):
  return json.loads(open(path).read())["results"]


# ---- a smoke run of every benchmark of `make bench` (tiny sizes, a few steps): each must run and report ----
def test_step_benchmark_recipes_restore_the_old_config_keys():
  """benchmarks.step's `old` recipe is the old config, key by key, for both models (no compile)."""
  from benchmarks import step  # pylint: disable=g-import-not-at-top
  for model in ("baseline", "vam"):
    current = step.with_recipe(step.model_config(model, smoke=True), model, "current", 0, "float32")
    old = step.with_recipe(step.model_config(model, smoke=True), model, "old", 0, "float32")
    assert current.compiler_options.to_dict() and not old.compiler_options.to_dict()
    assert current.model.decoder.stacked_memory_kv and not old.model.decoder.stacked_memory_kv
    assert step.with_recipe(step.model_config(model, smoke=True), model, "bf16", 0, "float32").compute_dtype == "bfloat16"
  with pytest.raises(ValueError, match="unknown recipe"):
    step.with_recipe(step.model_config("baseline", smoke=True), "baseline", "fast", 0, "float32")


@pytest.mark.slow
def test_step_benchmark_smoke(tmp_path):
  """benchmarks.step: both models side by side, and the profile."""
  out = tmp_path / "step.json"
  _run(["benchmarks.step", "--smoke", "--recipes", "current", "--out", str(out), "--profile", str(tmp_path / "prof")])
  res = _results(out)
  for key in ("baseline/current", "vam/current"):
    assert res[key]["examples_per_s"] > 0 and res[key]["gflop_per_step"] > 0
  assert set(res["profile"]) == {"baseline", "vam"}
  vam = res["profile"]["vam"]["parts"]
  assert vam["video_model"]["gflop"] > 0 and vam["action_decoder"]["gflop"] > 0
  assert res["profile"]["baseline"]["parts"]["observation_encoder"]["gflop"] > 0
  assert "video_model" not in res["profile"]["baseline"]["parts"]


@pytest.mark.slow
def test_train_benchmark_smoke(tiny_data_dir, tmp_path):
  out = tmp_path / "train.json"
  _run(["benchmarks.train", "--config", "experiments/quickstart.py:tiny", f"--config.data_dir={tiny_data_dir}",
        "--steps", "2", "--warmup", "2", "--out", str(out)])
  res = _results(out)
  assert res["loader"]["batches_per_s"] > 0 and res["train_step"]["mfu"] > 0


@pytest.mark.slow
def test_gpu_script_runs_on_cpu_and_says_what_it_skipped(tmp_path):
  """benchmarks/gpu.sh without a GPU: the GPU parts skipped with a reason, the video DiT and VAM benchmarks
  (benchmarks.video_dit, benchmarks.vam) run at tiny sizes in bf16."""
  env = _one_device_env(OUT=str(tmp_path), PYTHON=sys.executable)
  proc = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "SKIPPED the GPU benchmarks" in proc.stdout and "CPU check passed" in proc.stdout
  assert _results(tmp_path / "video_dit_cpu.json")["tiny"]["mfu"] > 0
  vam = _results(tmp_path / "vam_cpu.json")
  assert vam["train"]["tiny"]["examples_per_s"] > 0 and vam["peak_matmul"]["dtype"] == "bfloat16"


@pytest.mark.slow
def test_scaling_benchmark_smoke(tmp_path):
  out = tmp_path / "scaling.json"
  _run(["benchmarks.scaling", "--devices", "2", "--size", "tiny", "--steps", "1", "--batch_size", "4",
        "--out", str(out)])
  assert json.loads(out.read_text())["results"]


@pytest.mark.slow
def test_datagen_and_egodex_benchmarks_smoke(tmp_path):
  _run(["benchmarks.datagen", "--batch", "2", "--steps", "3", "--repeats", "1", "--horizon", "8",
        "--out", str(tmp_path / "d.json")])
  assert _results(tmp_path / "d.json")
  _run(["benchmarks.egodex_convert", "--seconds", "0.5", "--sizes", "64", "--repeats", "1",
        "--out", str(tmp_path / "e.json")])
  assert _results(tmp_path / "e.json")


@pytest.mark.slow
def test_eval_and_serve_benchmarks_smoke(tiny_baseline, stage2, tmp_path):
  _run(["benchmarks.eval", "--workdir", tiny_baseline, "--num_envs", "2", "--steps", "3", "--out",
        str(tmp_path / "eval.json")])
  assert _results(tmp_path / "eval.json")
  _run(["benchmarks.serve", "--baseline", tiny_baseline, "--vam", stage2["vam"], "--requests", "3", "--seconds", "0.5",
        "--clients", "1", "--out", str(tmp_path / "serve.json")])
  res = _results(tmp_path / "serve.json")
  assert set(res) == {"baseline", "vam_tau_v_1", "vam_tau_v_0.5"}
