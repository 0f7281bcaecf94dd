"""Stage 1 end to end on the tiny datasets: autoencoder -> stored latents -> video model (stored latents and
on the fly) -> LoRA fine-tune -> `vam.eval` on the video workdirs; the 8-device sharded video step."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from vam import checkpoints, config as config_lib, embodiment
from vam.input import latents as latents_lib
from vam.input import pipeline
from vam.train import latents as latents_tool
from vam.train import metrics as metrics_lib
from vam.train import sharding
from vam.train import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP = os.path.join(ROOT, "experiments")


def _config(name, **overrides):
  return config_lib.load(os.path.join(EXP, name), [(k, str(v)) for k, v in overrides.items()])


@pytest.mark.slow
def test_stored_latents_match_the_autoencoder(stage1):
  params, _, _ = checkpoints.restore_params(stage1["ae"])
  fp = checkpoints.fingerprint(params)
  path = latents_lib.directory(os.path.join(stage1["data"], "sim_robot", "1.0.0"), "front", fp)
  meta = json.load(open(os.path.join(path, "meta.json")))
  assert meta["fingerprint"] == fp and meta["latent_shape"] == [16, 16, 4]
  # A window's stored context latents equal encoding its frames now (float16 storage).
  config = _config("video_pretrain.py:tiny", data_dir=stage1["data"])
  space = embodiment.ActionSpace(tuple(config.data.embodiments))
  with_latents = train_lib.make_inputs(config, fp)[2].sources[0][5]
  encode, _, _, _ = latents_tool.load_autoencoder(stage1["ae"])
  z = np.asarray(encode(with_latents["images"][:, None]))[:, 0]
  np.testing.assert_allclose(with_latents["context_latents"], z, atol=2e-2, rtol=1e-2)
  del space
  # Rebuilding is refused without --overwrite (nothing rewritten), bad inputs are named.
  mtime = os.path.getmtime(os.path.join(path, "train.npy"))
  latents_tool.main(["--autoencoder", stage1["ae"], "--data_dir", stage1["data"], "--datasets", "sim_robot"])
  assert os.path.getmtime(os.path.join(path, "train.npy")) == mtime
  with pytest.raises(FileNotFoundError, match="nope"):
    latents_tool.main(["--autoencoder", stage1["ae"], "--data_dir", stage1["data"], "--datasets", "nope"])


@pytest.mark.slow
def test_video_model_trains_on_stored_latents_and_on_the_fly(stage1, tmp_path):
  rows = metrics_lib.read(os.path.join(stage1["video"], "metrics.jsonl"))
  assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)
  assets = checkpoints.read_assets(checkpoints.manager(stage1["video"], read_only=True), 10)
  assert assets["autoencoder_fingerprint"] and assets["pretrained"]["autoencoder"].startswith(stage1["ae"])
  # The frozen autoencoder is bit-identical to the one it was loaded from.
  ae_params, _, _ = checkpoints.restore_params(stage1["ae"])
  video_params, _, _ = checkpoints.restore_params(stage1["video"])
  assert checkpoints.fingerprint(video_params["autoencoder"]) == checkpoints.fingerprint(ae_params)
  assert np.all(np.asarray(video_params["latent_std"]) > 0)
  # On the fly (pixels encoded in the step) trains the same model.
  result = train_lib.train(_config("video_pretrain.py:tiny", data_dir=stage1["data"], total_steps=2, log_every=1, **{
      "model.autoencoder_workdir": stage1["ae"]}), str(tmp_path / "fly"))
  assert np.isfinite(result["loss"]) and result["step"] == 2
  # Without an autoencoder the error names the key; nothing is written.
  with pytest.raises(ValueError, match="config.model.autoencoder_workdir"):
    train_lib.train(_config("video_pretrain.py:tiny", data_dir=stage1["data"], **{"model.autoencoder_workdir": ""}),
                    str(tmp_path / "none"))
  assert not os.path.exists(tmp_path / "none")


@pytest.mark.slow
def test_lora_finetune_trains_adapters_only(stage1, tmp_path):
  ft = str(tmp_path / "ft")
  train_lib.train(_config("video_finetune.py:tiny", data_dir=stage1["data"], init_from=stage1["video"],
                          total_steps=4, log_every=2), ft)
  base, _, _ = checkpoints.restore_params(stage1["video"])
  tuned, _, _ = checkpoints.restore_params(ft)
  flat = lambda t: {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(t)[0]}
  base, tuned = flat(base), flat(tuned)
  lora = {k for k in tuned if "lora_" in k}
  assert lora and set(tuned) - lora == set(base)
  for k, v in base.items():
    np.testing.assert_array_equal(tuned[k], v, err_msg=k)
  assert any(np.abs(tuned[k]).max() > 0 for k in lora if k.endswith("['lora_b']"))


@pytest.mark.slow
def test_eval_on_video_and_autoencoder_workdirs(stage1, tmp_path):
  for name in ("video", "ae"):
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "vam.eval", "--workdir", stage1[name], "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PSNR" in proc.stdout and "report:" in proc.stdout
    rep = json.load(open(out / "report.json"))
    v = rep["evaluations"][-1]["video"]
    assert 0 < v["reconstruction_psnr"] < 100 and -1 <= v["reconstruction_ssim"] <= 1
    if name == "video":
      assert {"predicted_psnr", "copy_last_psnr", "predicted_ssim", "copy_last_ssim", "copy_last_latent_psnr"} <= set(v)
      h = v["by_horizon"]  # tiny: H_f = 2 latent frames of 1 frame, 1 and 2 steps ahead
      assert h["steps_ahead"] == [1, 2] and len(h["predicted_mean_psnr"]) == 2 == len(h["mean_latent_mse"])
      # The overall means pool the horizons' frames; copy-last drifts further from the future with the horizon.
      assert min(h["copy_last_psnr"]) <= v["copy_last_psnr"] <= max(h["copy_last_psnr"])
      assert h["copy_last_latent_mse"][1] >= h["copy_last_latent_mse"][0] > 0
      assert v["mean_psnr_gain_at_longest"] == pytest.approx(h["predicted_mean_psnr"][-1] - h["copy_last_psnr"][-1])
      assert len(v["loss_by_tau"]) == 4 and all(np.isfinite(x) for x in v["loss_by_tau"].values())
      videos = rep["evaluations"][-1]["videos"]
      assert len(videos) == 2 and all(os.path.getsize(x["path"]) > 0 for x in videos)
    assert "PSNR" in open(out / "report.html").read()
    assert ("By horizon" in open(out / "report.html").read()) == (name == "video")


@pytest.mark.slow
def test_sharded_video_step_on_8_devices(stage1):
  """data x fsdp x tensor = 2 x 2 x 2: parameters follow the logical rules; the step runs and matches 1 device."""
  config = _config("video_pretrain.py:tiny", data_dir=stage1["data"], **{
      "model.autoencoder_workdir": stage1["ae"], "data.use_latents": True, "model.dit.scan_layers": True})
  pre = train_lib.resolve_pretrained(config)
  space, _, loader = train_lib.make_inputs(config, pre.autoencoder_fingerprint)
  example = loader.sources[0][0]
  host = next(iter(loader.dataset(config.batch_size, seed=0, prefetch_buffer=0)))
  losses = []
  for axes in ({"data": 2, "fsdp": 2, "tensor": 2}, {"data": 1, "fsdp": 1, "tensor": 1}):
    mesh = sharding.make_mesh(axes, jax.devices()[:int(np.prod(list(axes.values())))])
    prog = train_lib.build_program(config, space, 64, example, mesh)
    state, ema = prog.init(jax.random.PRNGKey(0))
    if axes["tensor"] == 2:
      q = state["params"]["dit"]["blocks"]["self_attn"]["q"]["base"]["kernel"]  # (layers, embed, heads)
      assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
      fc2 = state["params"]["dit"]["blocks"]["mlp"]["fc2"]["base"]["kernel"]
      assert fc2.sharding.spec == jax.sharding.PartitionSpec(None, "tensor", "fsdp")
    batch = pipeline.to_global({k: host[k] for k in prog.input_keys}, prog.data_sharding)
    state, ema, m = prog.step(state, ema, batch)
    losses.append(float(m["loss"]))
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
