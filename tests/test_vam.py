"""Stage 2 and mutual imitation on the tiny datasets: the human <-> robot mappings against the simulator,
mapped slots and masks in windows, the video-action model trained on a frozen video model, its inference,
fine-tuning, and `vam.eval` in a separate process."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, experiment_config
from vam import checkpoints, embodiment, mapping
from vam.input import pipeline, sources, windows
from vam.sim.embodiments import human_hand
from vam.train import metrics as metrics_lib
from vam.train import train as train_lib

MAPPING = mapping.Mapping()  # absolute origin: the simulated hand shares the robots' world frame
SPACE_NAMES = ["human_hand", "arm6"]  # the tiny robot dataset has arm6 only


def _episodes(data_dir: str, dataset: str) -> dict:
  """{(task, seed): episode} of a dataset's train split (the same (task, seed) is the same scene)."""
  src = sources.EpisodeSource(os.path.join(data_dir, dataset, "1.0.0"), "train")
  out = {}
  for i in range(len(src)):
    meta = src.source[i]["episode_metadata"]
    out[(meta["task"].decode(), int(meta["seed"]))] = src.episode(i)
  return out


def _hand_grasp_point(keypoints):
  rot = embodiment.rot6d_to_mat(keypoints[:, 3:9])
  return keypoints[:, :3] + rot @ human_hand.HumanHand.grasp_offset


def test_mappings_agree_with_the_simulator(tiny_data_dir):
  """The hand and arm6 reaching for the same ball (same scene seed): each one's trajectory, mapped onto the
  other, ends where the other's did; the mapped joint targets put the arm where the mapping says."""
  from vam.sim.embodiments import base  # pylint: disable=g-import-not-at-top
  robot, hand = _episodes(tiny_data_dir, "sim_robot"), _episodes(tiny_data_dir, "sim_human")
  pairs = [k for k in robot if k in hand and k[0] == "reach"]
  assert pairs, "the tiny datasets should share reach scenes between arm6 and the hand"
  kin = mapping._kinematics("arm6")  # pylint: disable=protected-access
  arm = kin.emb.chain(6)
  for key in pairs:
    er, eh = robot[key], hand[key]
    to_robot = mapping.human_to_robot(eh["hand_keypoints"], "arm6", MAPPING)
    assert np.linalg.norm(to_robot["eef"][-1, :3] - er["eef"][-1, :3]) < 0.03, key
    to_hand = mapping.robot_to_human(er["eef"], er["action"], "arm6", MAPPING)
    assert np.linalg.norm(_hand_grasp_point(to_hand["hand_keypoints"])[-1]
                          - _hand_grasp_point(eh["hand_keypoints"])[-1]) < 0.03, key
    # IK: forward kinematics of the mapped joint targets (action t -> pose t + 1) reproduce the mapped poses.
    nxt = np.minimum(np.arange(len(to_robot["eef"])) + 1, len(to_robot["eef"]) - 1)
    fk = np.array([base.site_position(kin.model, arm, q) for q in to_robot["action"][:, :6]])
    assert np.abs(fk - to_robot["eef"][nxt, :3]).max() < 0.01, key
    fk_now = np.array([base.site_position(kin.model, arm, q) for q in to_robot["state"][:, :6]])
    assert np.abs(fk_now - to_robot["eef"][:, :3]).max() < 0.01, key  # where joint deltas start
    # robot -> hand -> robot is the identity on poses; the gripper command survives the trip.
    back = mapping.human_to_robot(to_hand["hand_keypoints"], "arm6", MAPPING)
    np.testing.assert_allclose(back["eef"], er["eef"], atol=1e-4)
    assert np.abs(back["action"][:-1, -1] - er["action"][:-1, -1]).max() < 0.15
  # Relative origin (METHOD.md) with a rotated frame: the robot's displacements are the hand's, rotated.
  r_z = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  rel = mapping.Mapping(origin="relative", frame_rotation=tuple(r_z.ravel()))
  kp = hand[pairs[0]]["hand_keypoints"]
  mapped = mapping.human_to_robot(kp, "gantry", rel)["eef"][:, :3]
  anchor = _hand_grasp_point(kp)
  np.testing.assert_allclose(mapped - mapped[0], (anchor - anchor[0]) @ r_z.T, atol=1e-5)
  with pytest.raises(ValueError, match="frame_rotation"):
    mapping.Mapping(frame_rotation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))


def test_windows_carry_mapped_slots_and_masks(tiny_data_dir):
  config = experiment_config("mutual_pretrain.py:tiny", data_dir=tiny_data_dir, **{"data.embodiments": SPACE_NAMES})
  space = embodiment.ActionSpace(tuple(SPACE_NAMES))
  spec = windows.WindowSpec(context_frames=2, future_frames=2, action_horizon=config.data.action_horizon,
                            proprio_dim=config.data.proprio_dim)
  entries = pipeline.entries_from_config(tiny_data_dir, config.data)
  loader = pipeline.InputPipeline(entries, spec, space, mapping=MAPPING)
  own_only = pipeline.InputPipeline(entries, spec, space, mapping=mapping.Mapping(directions=("human_to_robot",)))
  for src, src_h2r in zip(loader.sources, own_only.sources):
    w, ep = src[3], src._episode(int(src.index[3][0]))  # pylint: disable=protected-access
    name = ep["embodiment"]
    other = "arm6" if name == "human_hand" else "human_hand"
    mapped_dims = w["mapped_mask"].any(axis=0)
    np.testing.assert_array_equal(mapped_dims, space.embodiment_mask(other))
    assert (w["action_mask"] >= w["mapped_mask"]).all()  # mapped entries are valid entries
    assert w["action_mask"][:, space.embodiment_mask(name)].any()
    # Mapped slots are normalised with their own embodiment's statistics.
    raw, _, _ = windows.unified_chunk(ep, int(src.index[3][1]), spec.action_horizon, space, ep["mapped"])
    expect = loader.normalizer.normalize_actions(other, raw)
    np.testing.assert_allclose(w["actions"][w["mapped_mask"]], expect[w["mapped_mask"]], rtol=1e-5, atol=1e-5)
    # Ablation human -> robot only: robot windows carry no mapped slots.
    assert src_h2r[3]["mapped_mask"].any() == (name == "human_hand")
  # N demos of one robot: episode selection.
  arm = pipeline.InputPipeline(entries[:1] if entries[0].name == "sim_robot" else entries[1:], spec, space,
                               only_embodiments=("arm6",), max_episodes=1)
  assert len(set(arm.sources[0].index[:, 0].tolist())) == 1
  with pytest.raises(ValueError, match="statistics"):  # a mapping into a robot no dataset describes
    pipeline.InputPipeline(entries, spec, embodiment.ActionSpace(("human_hand", "arm6", "gantry")), mapping=MAPPING)


def _tree_equal(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_vam_trains_on_a_frozen_video_model(stage2):
  video, _, _ = checkpoints.restore_params(stage2["video"])
  vam, assets, step = checkpoints.restore_params(stage2["vam"])
  assert step == 10 and _tree_equal(vam["video"], video)  # stage 2 leaves every video parameter untouched
  assert assets["pretrained"]["video"].startswith(stage2["video"])
  assert assets["config"]["model"]["video"]["name"] == "video_dit"  # the video run's model config, adopted
  rows = metrics_lib.read(os.path.join(stage2["vam"], "metrics.jsonl"))
  assert all(np.isfinite(r["own_action_loss"]) and r["mapped_action_loss"] > 0 for r in rows)


@pytest.mark.slow
def test_vam_inference_by_tau_v_and_finetuning(stage2, tmp_path):
  from vam.eval import offline, restore  # pylint: disable=g-import-not-at-top
  restored = restore.load(stage2["vam"])
  errors = offline.action_error_by_tau_v(restored, stage2["data"], [0.5, 1.0], 8, 8, 0, 2)
  assert set(errors) == {"0.5", "1"} and all(np.isfinite(e["arm6_joints"]["rmse_native"]) for e in errors.values())
  # The probe on the decoder's feature layers locates the task from the imagined hidden states alone.
  estimate = offline.state_estimate_error(restored, stage2["data"], 8, 8, 0)
  assert set(estimate) == {"target", "object"} and all(np.isfinite(v["error_m"]) for v in estimate.values())
  # Fine-tuning the pretrained VAM on one demo of arm6 (reading the stored latents, keyed by the fingerprint of
  # the autoencoder inside the VAM's video model), and the scratch ablation on the same frozen video model.
  ft = str(tmp_path / "ft")
  train_lib.train(experiment_config("finetune.py:tiny", data_dir=stage2["data"], init_from=stage2["vam"],
                                    total_steps=4, **{"data.embodiments": SPACE_NAMES, "data.max_episodes": 1,
                                                      "data.use_latents": True}), ft)
  tuned, _, _ = checkpoints.restore_params(ft)
  pretrained, _, _ = checkpoints.restore_params(stage2["vam"])
  assert _tree_equal(tuned["video"], pretrained["video"])
  assert not _tree_equal(tuned["decoder"], pretrained["decoder"])
  scratch = str(tmp_path / "scratch")
  train_lib.train(experiment_config("finetune.py:scratch", data_dir=stage2["data"], total_steps=2, log_every=1, **{
      "model.video_workdir": stage2["video"], "data.use_latents": False, "data.embodiments": SPACE_NAMES,
      "model.layer": 1, "model.keypoints": 2, "model.decoder": "{'width': 32, 'depth': 1, 'heads': 2, 'mlp_ratio': 4, 'time_dim': 32, "
                                          "'bilinear_rank': 4}"}), scratch)
  scratch_params, _, scratch_step = checkpoints.restore_params(scratch)
  assert scratch_step == 2 and "keypoints" in scratch_params  # the keypoint readout (model.keypoints) trains


@pytest.mark.slow
def test_feature_probe_of_the_frozen_video_model(stage2):
  """`vam.eval.feature_probe`: a probe trained on a frozen video model's hidden states (of the video run, and of
  the VAM's copy) fits the privileged state and reports held-out distances beside the training mean's."""
  from vam.eval import feature_probe, restore  # pylint: disable=g-import-not-at-top
  for workdir in (stage2["video"], stage2["vam"]):
    restored = restore.load(workdir)
    restored.config.data.mixture = {"sim_robot": 1.0}
    readouts = [("attention", 1), ("keypoints", 1), ("keypoints", 2)] if workdir == stage2["video"] else [
        ("attention", 1)]
    for readout, subcells in readouts:
      r = feature_probe.probe_layer(restored, stage2["data"], 1, readout, steps=40, batch_size=8, lr=3e-3,
                                    windows_count=8, subcells=subcells)
      assert r["train_mse"] < 0.7 * r["first_train_mse"], (readout, subcells, r)
      assert all(r[p]["windows"] == 8 and 0 < r[p]["error_m"] and 0 < r[p]["mean_error_m"]
                 for p in ("target", "object"))
  with pytest.raises(ValueError, match="readout"):
    feature_probe.FeatureProbe(4, 8, 3, "max", rngs=feature_probe.nnx.Rngs(0))
  with pytest.raises(ValueError, match="grid"):  # keypoints need the token grid, and one that fits
    feature_probe.FeatureProbe(16, 8, 3, "keypoints", (2, 2, 2), rngs=feature_probe.nnx.Rngs(0))


@pytest.mark.slow
def test_vam_closed_loop_evaluation_in_a_separate_process(stage2):
  args = ["--workdir", stage2["vam"], "--config.eval.embodiments=['arm6']", "--config.eval.tasks=['reach']",
          "--config.eval.modes=['easy']", "--config.eval.splits=['train']", "--config.eval.episodes=2",
          "--config.eval.num_envs=2", "--config.eval.offline_windows=8", "--config.eval.offline_batch=8",
          "--config.eval.videos_per_task=0", "--config.eval.tau_v_values=[0.5, 1.0]"]
  proc = subprocess.run([sys.executable, "-m", "vam.eval", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  import json  # pylint: disable=g-import-not-at-top
  rep = json.load(open(os.path.join(stage2["vam"], "eval", "report.json")))
  ev = rep["evaluations"][-1]
  assert ev["cells"][0]["episodes"] == 2 and set(ev["offline_by_tau_v"]) == {"0.5", "1"}
  assert ev["model"] == {"layer": 2, "tau_v": 1.0}
  # The future oracle: the true future at three tau_v, another window's, the context alone, the inference path.
  oracle = ev["future_oracle"]
  assert set(oracle["rows"]) == {"true_future@0", "true_future@0.25", "true_future@0.5", "other_future@0",
                                 "context_only", "imagined", "hold"}
  assert oracle["future_steps"] == 2 and all(np.isfinite(r["executed"]) for r in oracle["rows"].values())
  # Foresight rollouts: the decoder reads the scripted expert's rendered future (out: W/eval_foresight).
  from vam.eval import evaluate  # pylint: disable=g-import-not-at-top
  overrides = [tuple(a[len("--config."):].split("=", 1)) for a in args[2:] if a.startswith("--config.")]
  fs = evaluate.evaluate(stage2["vam"], agent="foresight", overrides=overrides)["evaluations"][-1]
  assert fs["agent"] == "foresight" and fs["cells"][0]["episodes"] == 2 and "future_oracle" not in fs
  assert os.path.exists(os.path.join(stage2["vam"], "eval_foresight", "report.json"))
  with pytest.raises(ValueError, match="foresight"):  # a policy without a video model has no future to read
    evaluate.evaluate(stage2["video"], agent="foresight")
  with pytest.raises(ValueError, match="temporal_ensemble"):  # it would execute chunks unlike the policy row
    evaluate.evaluate(stage2["vam"], agent="foresight", overrides=overrides + [("eval.temporal_ensemble", "True")])
