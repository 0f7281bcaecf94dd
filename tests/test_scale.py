"""Scale-out: multi-process training and resharded resume, partitioning rules, mesh-shape invariance of the
video DiT's step (data / fsdp / tensor / sequence axes), gradient accumulation, bf16 compute, remat policies,
and the launcher environment."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from conftest import ROOT, experiment_config
from vam import checkpoints, distributed, embodiment
from vam.input import pipeline, windows
from vam.models import layers, partitioning
from vam.train import metrics as metrics_lib
from vam.train import sharding
from vam.train import train as train_lib


# ---------------------------------------------------------------------------------------------------------
# Two processes train and checkpoint; one process on another mesh resumes
# ---------------------------------------------------------------------------------------------------------
def _run(cmd, env_extra=None, timeout=600):
  env = dict(os.environ, **(env_extra or {}))
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_processes_train_then_one_process_on_eight_devices_resumes(tiny_data_dir, tmp_path):
  w = str(tmp_path / "w")
  args = ["--config", "experiments/quickstart.py:tiny", "--workdir", w, f"--config.data_dir={tiny_data_dir}",
          "--config.log_every=1", "--config.checkpoint_every=2"]
  out = _run([sys.executable, "launch/local.py", "--processes", "2", "--devices_per_process", "4", "--",
              *args, "--config.total_steps=4", "--config.mesh.fsdp=2"])
  for i in (0, 1):
    assert f"[p{i}] " in out and re.search(rf"\[p{i}\] .*process {i} of 2 \(explicit", out), out[-3000:]
  # Both processes run the same global step: they log the same (global) losses.
  losses = {i: re.findall(rf"\[p{i}\] .*step \d/4 loss ([\d.]+)", out) for i in (0, 1)}
  assert len(losses[0]) == 4 and losses[0] == losses[1]
  for step in (2, 4):
    files = sorted(os.listdir(os.path.join(w, "checkpoints", str(step), "data")))
    assert "process_0-of-2.json" in files and "process_1-of-2.json" in files  # one iterator state per host

  # One process, 8 devices, a different mesh (data x fsdp x tensor): restores the 2-process checkpoint.
  out = _run([sys.executable, "-m", "vam.train", *args, "--config.total_steps=6", "--config.mesh.data=2",
              "--config.mesh.fsdp=2", "--config.mesh.tensor=2"],
             dict(XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"))
  assert "resumed from" in out and "different number of processes" in out
  rows = metrics_lib.read(os.path.join(w, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(r["loss"]) for r in rows)
  params, _, step = checkpoints.restore_params(w)
  assert step == 6 and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def test_launcher_rejects_other_entry_points_and_reports_failures(tmp_path):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("launch_local", os.path.join(ROOT, "launch", "local.py"))
  local = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(local)
  with pytest.raises(ValueError, match="only start"):
    local.launch("os", [], 2, 1)
  env = local.process_env({"XLA_FLAGS": "--foo --xla_force_host_platform_device_count=8"}, 1, 3, 1234, 2, "cpu")
  assert env["VAM_PROCESS_ID"] == "1" and env["VAM_NUM_PROCESSES"] == "3"
  assert env["XLA_FLAGS"] == "--foo --xla_force_host_platform_device_count=2"
  # A bad config fails in every process; the launcher returns a failure status and names the process.
  proc = subprocess.run([sys.executable, "launch/local.py", "--processes", "2", "--devices_per_process", "1", "--",
                         "--config", "experiments/quickstart.py:tiny", "--workdir", str(tmp_path / "w"),
                         "--config.no_such_key=1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "no_such_key" in proc.stdout and "exited with status" in proc.stderr


def test_topology_from_launcher_environments():
  assert distributed.topology({}) is None
  explicit = distributed.topology(dict(VAM_COORDINATOR_ADDRESS="h0:1234", VAM_NUM_PROCESSES="4", VAM_PROCESS_ID="2"))
  assert (explicit.coordinator_address, explicit.num_processes, explicit.process_id) == ("h0:1234", 4, 2)
  k8s = distributed.topology(dict(VAM_COORDINATOR_ADDRESS="w-0.svc:1234", VAM_NUM_PROCESSES="2",
                                  JOB_COMPLETION_INDEX="1"))
  assert k8s.process_id == 1
  assert distributed.topology(dict(SLURM_JOB_ID="7", SLURM_NTASKS="16")).source == "slurm"
  assert distributed.topology(dict(SLURM_JOB_ID="7", SLURM_NTASKS="1")) is None
  assert distributed.topology(dict(TPU_WORKER_HOSTNAMES="a,b,c,d")).source == "tpu"
  assert distributed.topology(dict(VAM_DISTRIBUTED="off", SLURM_JOB_ID="7", SLURM_NTASKS="16")) is None
  assert distributed.topology({}, "h:1", 2, 0).source == "explicit"  # flags alone
  with pytest.raises(ValueError, match="VAM_PROCESS_ID"):
    distributed.topology(dict(VAM_COORDINATOR_ADDRESS="h0:1234", VAM_NUM_PROCESSES="4"))
  with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
    distributed.topology(dict(VAM_COORDINATOR_ADDRESS="h0:1", VAM_NUM_PROCESSES="2", VAM_PROCESS_ID="2"))
  with pytest.raises(ValueError, match="host:port"):
    distributed.topology(dict(VAM_COORDINATOR_ADDRESS="h0", VAM_NUM_PROCESSES="2", VAM_PROCESS_ID="0"))


# ---------------------------------------------------------------------------------------------------------
# Partitioning rules
# ---------------------------------------------------------------------------------------------------------
def _video_config(**overrides):
  base = {"data.use_latents": True, "batch_size": 8, "model.dit.scan_layers": False}
  base.update(overrides)
  return experiment_config("video_pretrain.py:tiny", **base)


def _video_example(config, image_size=32):
  ae, d = config.model.autoencoder, config.data
  size = image_size // ae.patch
  rng = np.random.default_rng(0)
  latents = lambda n: rng.normal(size=(n, size, size, ae.latent_channels)).astype(np.float32)
  return dict(context_latents=latents(d.context_frames), future_latents=latents(d.future_frames),
              future_mask=np.ones((d.future_frames,), bool), embodiment_id=np.int32(1),
              instruction=windows.encode_instruction("push the red cube to the green pad"))


def test_partition_specs_of_the_video_dit():
  config = _video_config(**{"model.dit.scan_layers": True})
  space = embodiment.ActionSpace(tuple(config.data.embodiments))
  from vam.models import registry  # pylint: disable=g-import-not-at-top
  binder = registry.Binder(registry.factory(config, space.dim, len(space.embodiments), 32))
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2, "sequence": 1})
  specs = {sharding.path_name(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(
      sharding.param_shardings(nnx.to_pure_dict(binder.abstract_params), mesh))[0]}
  depth = config.model.dit.depth
  # Scanned blocks: a leading (replicated) layers axis, then embed -> fsdp, heads / mlp -> tensor.
  assert specs["dit/blocks/self_attn/q/base/kernel"] == P(None, "fsdp", "tensor")
  assert specs["dit/blocks/self_attn/out/base/kernel"] == P(None, "tensor", "fsdp")
  assert specs["dit/blocks/mlp/fc1/base/kernel"] == P(None, "fsdp", "tensor")
  assert specs["dit/blocks/mlp/fc2/base/kernel"] == P(None, "tensor", "fsdp")
  assert specs["dit/patch_in/kernel"] == P(None, None)
  shapes = {sharding.path_name(p): x.shape for p, x in
            jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(binder.abstract_params))[0]}
  assert shapes["dit/blocks/self_attn/q/base/kernel"][0] == depth
  # Activations: batch over (data, fsdp), video tokens over sequence; an axis that does not divide stays whole.
  mesh_shape = {"data": 2, "fsdp": 2, "sequence": 2, "tensor": 1}
  assert partitioning.spec((8, 4, 16, 64), ("batch", None, "sequence", "act_embed"), mesh_shape) == \
      P(("data", "fsdp"), None, "sequence", None)
  assert partitioning.spec((6, 4, 15, 64), ("batch", None, "sequence", "act_embed"), mesh_shape) == \
      P(None, None, None, None)
  assert partitioning.constrain(jnp.ones((2, 3)), ("batch", None)).shape == (2, 3)  # no mesh: a no-op


# ---------------------------------------------------------------------------------------------------------
# The same steps on every mesh shape; bf16; remat; gradient accumulation
# ---------------------------------------------------------------------------------------------------------
def _video_losses(mesh_axes, steps=2, **overrides):
  config = _video_config(**overrides)
  space = embodiment.ActionSpace(tuple(config.data.embodiments))
  example = _video_example(config)
  mesh = sharding.make_mesh(mesh_axes)
  prog = train_lib.build_program(config, space, 32, example, mesh)
  rng = np.random.default_rng(1)
  host = {k: np.stack([v] * config.batch_size) for k, v in example.items()}
  host["future_latents"] = host["future_latents"] + rng.normal(size=host["future_latents"].shape).astype(np.float32)
  batch = pipeline.to_global(host, prog.data_sharding)
  state, ema = prog.init(jax.random.PRNGKey(0))
  losses = []
  for _ in range(steps):
    state, ema, m = prog.step(state, ema, batch)
    losses.append(float(m["loss"]))
  return np.array(losses), state, prog


@pytest.mark.slow
def test_video_dit_steps_match_across_mesh_shapes_remat_and_accumulation():
  reference, state, prog = _video_losses({"data": 8, "fsdp": 1, "tensor": 1, "sequence": 1})
  assert np.all(np.isfinite(reference)) and reference[1] != reference[0]
  for axes in ({"data": 2, "fsdp": 2, "tensor": 2, "sequence": 1}, {"data": 2, "fsdp": 1, "tensor": 1, "sequence": 4}):
    losses, other, other_prog = _video_losses(axes)
    np.testing.assert_allclose(losses, reference, rtol=2e-4, err_msg=str(axes))
    # FLOPs count all devices together (XLA's cost analysis is per device): about equal for a data x fsdp x
    # tensor split; over `sequence`, work that is not per token (conditioning, text) repeats on every device.
    ratio = other_prog.flops_per_step / prog.flops_per_step
    assert (0.8 < ratio < 1.25) if axes["sequence"] == 1 else ratio >= 0.99, (axes, ratio)
    for x, y in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(other["params"])):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-3, atol=2e-5)
  remat, _, _ = _video_losses({"data": 8, "fsdp": 1, "tensor": 1, "sequence": 1}, **{"model.dit.remat": "dots"})
  np.testing.assert_allclose(remat, reference, rtol=2e-4)
  bf16, bf16_state, _ = _video_losses({"data": 8, "fsdp": 1, "tensor": 1, "sequence": 1}, compute_dtype="bfloat16")
  np.testing.assert_allclose(bf16, reference, rtol=5e-2)  # bf16 matmuls: close, not equal
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16_state["params"]))  # fp32 master weights


@pytest.mark.parametrize("masked", [False, True])
def test_gradient_accumulation_equals_one_big_batch(masked):
  """A deterministic least-squares 'model' whose loss is a masked mean like the policies' (vam.flow.loss):
  k micro-batches give the update of the whole batch, also when their valid-entry counts differ."""

  class Regression:
    def __init__(self, params):
      self.w = params["w"]

    def loss(self, batch, rng):
      del rng
      err = jnp.square(batch["x"] @ self.w - batch["y"])
      if not masked:
        return jnp.mean(err), dict(mse=jnp.mean(err))
      m = batch["mask"].astype(jnp.float32)
      mse = jnp.sum(err * m) / jnp.maximum(jnp.sum(m), 1.0)
      return mse, dict(mse=mse, valid_entries=jnp.sum(m))

  rng = np.random.default_rng(0)
  batch = dict(x=jnp.asarray(rng.normal(size=(16, 5)), jnp.float32), y=jnp.asarray(rng.normal(size=(16, 3)), jnp.float32))
  # Micro-batch j holds rows j, j + 4, ...: rows 0 mod 4 keep everything, the others keep one entry in three.
  batch["mask"] = jnp.asarray((np.arange(16)[:, None] % 4 == 0) | (rng.uniform(size=(16, 3)) < 0.33))
  params = dict(w=jnp.asarray(rng.normal(size=(5, 3)), jnp.float32))
  tx = optax.sgd(0.1)
  state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(0))
  results = []
  for k in (1, 4):
    step = jax.jit(train_lib.make_train_step(Regression, tx, lambda s: 0.1, 0.9, accum_steps=k))
    results.append(step(jax.tree.map(jnp.copy, state), jax.tree.map(jnp.copy, params), batch))
  (s1, _, m1), (s4, _, m4) = results
  np.testing.assert_allclose(s1["params"]["w"], s4["params"]["w"], rtol=1e-5)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-5)


def test_compute_dtype_and_remat_knobs_are_validated():
  with pytest.raises(ValueError, match="remat policy 'sometimes'"):
    layers.remat(lambda x: x, "sometimes")
  from vam.models import registry  # pylint: disable=g-import-not-at-top
  config = _video_config(compute_dtype="float16")
  with pytest.raises(ValueError, match="config.compute_dtype='float16'"):
    registry.factory(config, 8, 2, 32)
  mesh = sharding.make_mesh({"data": 8})
  config = _video_config(grad_accum_steps=3)
  with pytest.raises(ValueError, match="grad_accum_steps"):
    train_lib.check_batch_size(config, mesh)


def test_cluster_launchers_only_start_vam_entry_points():
  for script in ("local.sh", "slurm.sbatch", "tpu_pod.sh"):
    subprocess.run(["bash", "-n", os.path.join(ROOT, "launch", script)], check=True)
    assert "-m vam.train" in open(os.path.join(ROOT, "launch", script)).read()
  yaml = pytest.importorskip("yaml")
  doc = yaml.safe_load(open(os.path.join(ROOT, "launch", "k8s", "jobset.yaml")))
  job = doc["spec"]["replicatedJobs"][0]["template"]["spec"]
  container = job["template"]["spec"]["containers"][0]
  assert container["command"][-2:] == ["-m", "vam.train"]
  env = {e["name"]: e.get("value") for e in container["env"]}
  assert int(env["VAM_NUM_PROCESSES"]) == job["parallelism"] == job["completions"]
  assert job["completionMode"] == "Indexed"  # JOB_COMPLETION_INDEX -> the process id
  topo = distributed.topology(dict(VAM_COORDINATOR_ADDRESS=env["VAM_COORDINATOR_ADDRESS"],
                                   VAM_NUM_PROCESSES=env["VAM_NUM_PROCESSES"], JOB_COMPLETION_INDEX="1"))
  assert topo.process_id == 1 and topo.num_processes == job["parallelism"]


def test_memory_knobs_may_change_on_resume_shapes_may_not():
  saved = dict(config=dict(model=dict(name="video_dit", dit=dict(width=32, remat="none")), compute_dtype="float32",
                           grad_accum_steps=1, mesh=dict(data=8)))
  current = dict(config=dict(model=dict(name="video_dit", dit=dict(width=32, remat="dots")),
                             compute_dtype="bfloat16", grad_accum_steps=4, mesh=dict(data=2, fsdp=4)))
  checkpoints.check_compatible(saved, current, "W/checkpoints/4")
  current["config"]["model"]["dit"]["width"] = 64
  with pytest.raises(checkpoints.CheckpointError, match=r"config\.model\.dit\.width: checkpoint has 32"):
    checkpoints.check_compatible(saved, current, "W/checkpoints/4")
