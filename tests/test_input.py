"""Input pipeline: windows and masks at episode boundaries, normalisation round trip, determinism, mixture."""

import collections
import os

import numpy as np
import pytest

from vam import embodiment as embodiment_lib
from vam.input import pipeline, windows

SPEC = windows.WindowSpec(context_frames=3, future_frames=2, action_horizon=6, proprio_dim=17, pad="mask")


@pytest.fixture
def data_dir(tiny_data_dir):
  return tiny_data_dir


def _pipeline(data_dir, weights=(0.5, 0.5), spec=SPEC, balance="task", task_weights=None):
  entries = [pipeline.DatasetEntry("sim_robot", f"{data_dir}/sim_robot/1.0.0", weights[0]),
             pipeline.DatasetEntry("sim_human", f"{data_dir}/sim_human/1.0.0", weights[1])]
  return pipeline.InputPipeline(entries, spec, embodiment_lib.ActionSpace(), balance=balance,
                                task_weights=task_weights)


@pytest.mark.slow
def test_window_shapes_and_boundary_masks(data_dir):
  p = _pipeline(data_dir)
  src = p.sources[0]
  T = int(src.episodes.lengths[0])
  first, last = src[0], src[T - 2]  # t = 0 and t = T - 2 of episode 0
  assert first["images"].shape == (3, 64, 64, 3) and first["future_images"].shape == (2, 64, 64, 3)
  np.testing.assert_array_equal(first["image_mask"], [False, False, True])
  assert last["future_mask"].tolist() == [True, False]
  assert first["actions"].shape == (6, p.space.dim) and first["proprio"].shape == (17,)
  arm = p.space.embodiment_mask("arm6")
  assert (first["action_mask"] == arm[None]).all() if T > 7 else first["action_mask"][0].any()
  assert last["action_mask"][0].any() and not last["action_mask"][1:].any()  # one future pose left
  assert (last["actions"][~last["action_mask"]] == 0).all()
  assert windows.decode_instruction(first["instruction"])
  human = p.sources[1][0]
  assert (human["action_mask"][0] == p.space.embodiment_mask("human_hand")).all()
  # Padding by repetition (the default): steps past the end hold the last action and are trained on.
  rep = _pipeline(data_dir, spec=windows.WindowSpec(3, 2, 6, 17))
  tail = rep.sources[0][T - 1]  # the last step has a window of its own
  assert tail["action_mask"].any(axis=-1).all()
  joints = rep.space.slots["arm6_joints"].slice
  ep = rep.episodes[0].episode(0)
  held = rep.normalizer.normalize_actions("arm6", windows.unified_chunk(ep, T - 1, 6, rep.space)[0])
  np.testing.assert_allclose(tail["actions"][:, joints], np.repeat(held[:1, joints], 6, 0), atol=1e-6)


def test_frame_stride_spaces_latent_frames_and_their_masks():
  """Latent frames tf * frame_stride steps apart: groups of tf consecutive frames ending at t - j*d and t + j*d
  (clamped at the episode's ends), stored latents of the groups' last steps, masks of groups in the episode."""
  T = 20
  ep = dict(images=np.arange(T, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8),
            latents=np.arange(T, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32),
            action=np.zeros((T, 7), np.float32), state=np.zeros((T, 17), np.float32), embodiment="arm6",
            eef=np.tile(np.array([0, 0, 0, 1, 0, 0, 0, 1, 0], np.float32), (T, 1)), instruction="reach")
  ep["eef_target"] = ep["eef"]
  space = embodiment_lib.ActionSpace(("arm6",))
  ones, zeros = lambda *s: {"arm6": np.ones(s, np.float32)}, lambda *s: {"arm6": np.zeros(s, np.float32)}
  norm = embodiment_lib.Normalizer(space, 17, "mean_std", zeros(4, space.dim), ones(4, space.dim), zeros(17), ones(17))
  frame = lambda w, k: w[k][:, 0, 0, 0].tolist()
  w = windows.make_window(ep, 10, windows.WindowSpec(2, 3, 4, 17, frame_stride=4), space, norm)
  assert frame(w, "images") == [6, 10] and frame(w, "future_images") == [14, 18, 19]
  assert w["context_latents"][:, 0, 0, 0].tolist() == [6, 10] and w["future_latents"][:, 0, 0, 0].tolist() == [14, 18, 19]
  assert w["future_mask"].tolist() == [True, True, False] and w["image_mask"].tolist() == [True, True]
  # tf = 2, stride 2: groups of 2 frames, 4 steps apart.
  w = windows.make_window(ep, 5, windows.WindowSpec(2, 2, 4, 17, temporal_factor=2, frame_stride=2), space, norm)
  assert frame(w, "images") == [0, 1, 4, 5] and frame(w, "future_images") == [8, 9, 12, 13]
  assert w["image_mask"].tolist() == [True, True]
  w = windows.make_window(ep, 2, windows.WindowSpec(2, 1, 4, 17, temporal_factor=2, frame_stride=2), space, norm)
  assert frame(w, "images") == [0, 0, 1, 2] and w["image_mask"].tolist() == [False, True]
  # Stride 1 is the back-to-back layout.
  w = windows.make_window(ep, 5, windows.WindowSpec(3, 2, 4, 17), space, norm)
  assert frame(w, "images") == [3, 4, 5] and frame(w, "future_images") == [6, 7]
  # Where the robot is at each future frame (the future-state probe's target), clamped like the frames; a
  # policy's windows (no future frames) have none.
  ep["state"] = np.arange(T, dtype=np.float32)[:, None] * np.ones((1, 17), np.float32)
  w = windows.make_window(ep, 10, windows.WindowSpec(2, 3, 4, 17, frame_stride=4), space, norm)
  assert w["future_proprio"][:, 0].tolist() == [14, 18, 19] and w["future_proprio"].shape == (3, 17)
  assert "future_proprio" not in windows.make_window(ep, 10, windows.WindowSpec(2, 0, 4, 17), space, norm)


@pytest.mark.slow
def test_normalisation_round_trip_exact(data_dir):
  p = _pipeline(data_dir)
  ep = p.episodes[0].episode(0)
  chunk, mask, mapped = windows.unified_chunk(ep, 1, 6, p.space)
  assert not mapped.any()
  for mode in embodiment_lib.NORM_MODES:
    n = embodiment_lib.Normalizer.from_stats(p.stats, p.space, 17, mode)
    back = n.denormalize_actions("arm6", n.normalize_actions("arm6", chunk))
    np.testing.assert_allclose(back[mask], chunk[mask], rtol=1e-5, atol=1e-6)
  normed = p.normalizer.normalize_actions("arm6", chunk)[mask]
  assert np.abs(normed).max() < 5  # quantile scaling keeps the data near [-1, 1]


@pytest.mark.slow
def test_demos_per_task_keeps_the_first_n_of_each_embodiment_and_task(data_dir):
  src = _pipeline(data_dir).sources[0]
  groups = lambda ws: collections.Counter((ws.episodes.embodiment[e], ws.episodes.task[e])
                                          for e in np.unique(ws.index[:, 0]))
  full = groups(src)
  assert len(full) >= 2 and min(full.values()) >= 2  # tiny: each robot x task has 2 demos
  one = pipeline.WindowSource(src.episodes, SPEC, src.space, src.normalizer, 0, demos_per_task=1)
  assert groups(one) == {g: 1 for g in full}
  firsts = {}
  for e in range(len(src.episodes.lengths)):
    firsts.setdefault((src.episodes.embodiment[e], src.episodes.task[e]), e)
  assert set(np.unique(one.index[:, 0])) == set(firsts.values())


@pytest.mark.slow
def test_joint_slot_holds_deltas_and_references(data_dir):
  p = _pipeline(data_dir)
  ep = p.episodes[0].episode(0)
  chunk, _, _ = windows.unified_chunk(ep, 2, 6, p.space)
  joints = p.space.slots["arm6_joints"].slice
  np.testing.assert_allclose(chunk[:, joints][:, :6], ep["action"][2:8, :6] - ep["state"][2, :6], atol=1e-6)
  refs = windows.reference_chunks(ep, 2, 6, p.space)
  np.testing.assert_allclose(refs["hold"][:, joints][:, :6], 0.0)  # hold: zero deltas
  last = np.repeat(ep["action"][1:2, :6] - ep["state"][2, :6], 6, 0)  # the previous targets, from t's joints
  np.testing.assert_allclose(refs["last"][:, joints][:, :6], last, atol=1e-6)
  eef = p.space.slots["arm6_eef"].slice
  np.testing.assert_allclose(refs["hold"][:, eef][:, :9], [[0, 0, 0, 1, 0, 0, 0, 1, 0]] * 6, atol=1e-6)


@pytest.mark.slow
def test_tasks_are_sampled_by_weight_not_by_length(data_dir):
  """Reach episodes are short, push ones long: balanced by task, both are drawn about equally often."""
  p = _pipeline(data_dir, weights=(1.0, 0.0))
  task = lambda prov: p.episodes[0].task[prov[1]]
  it = iter(p.dataset(batch_size=64, seed=0))
  drawn = [task(x) for _ in range(4) for x in next(it)["provenance"]]
  assert abs(drawn.count("reach") / len(drawn) - 0.5) < 0.1
  windows_reach = sum(task(tuple(x)) == "reach" for x in [(0, e, 0) for e, _ in p.sources[0].index])
  assert windows_reach / len(p.sources[0]) < 0.4  # by length, reach would be rare
  by_window = iter(_pipeline(data_dir, weights=(1.0, 0.0), balance="window").dataset(batch_size=64, seed=0))
  drawn = [task(x) for _ in range(4) for x in next(by_window)["provenance"]]
  assert drawn.count("reach") / len(drawn) < 0.4
  # task_weights: push 3x as likely as reach -> a 0.75 share
  weighted = iter(_pipeline(data_dir, weights=(1.0, 0.0), task_weights={"push": 3.0, "reach": 1.0}).dataset(
      batch_size=64, seed=0))
  drawn = [task(x) for _ in range(4) for x in next(weighted)["provenance"]]
  assert abs(drawn.count("push") / len(drawn) - 0.75) < 0.1
  with pytest.raises(ValueError, match="task_weights: unknown task 'pushh'"):
    _pipeline(data_dir, task_weights={"pushh": 2.0})
  with pytest.raises(ValueError, match="needs config.data.balance='task'"):
    _pipeline(data_dir, balance="window", task_weights={"push": 2.0})


@pytest.mark.slow
def test_deterministic_order_and_resumable_iterator(data_dir):
  p = _pipeline(data_dir)
  a = iter(p.dataset(batch_size=4, seed=3))
  b = iter(p.dataset(batch_size=4, seed=3))
  first = [next(a)["provenance"] for _ in range(3)]
  np.testing.assert_array_equal(first, [next(b)["provenance"] for _ in range(3)])
  state = a.get_state()
  expected = [next(a)["provenance"] for _ in range(2)]
  c = iter(p.dataset(batch_size=4, seed=3))
  c.set_state(state)
  np.testing.assert_array_equal(expected, [next(c)["provenance"] for _ in range(2)])
  other = iter(p.dataset(batch_size=4, seed=4))
  assert not np.array_equal(first, [next(other)["provenance"] for _ in range(3)])


@pytest.mark.slow
def test_mixture_proportions_and_shards(data_dir):
  p = _pipeline(data_dir, weights=(0.8, 0.2))
  it = iter(p.dataset(batch_size=50, seed=0))
  ids = np.concatenate([next(it)["provenance"][:, 0] for _ in range(8)])
  assert abs((ids == 0).mean() - 0.8) < 0.06
  s0 = next(iter(p.dataset(batch_size=8, seed=0, shard_index=0, shard_count=2)))["provenance"]
  s1 = next(iter(p.dataset(batch_size=8, seed=0, shard_index=1, shard_count=2)))["provenance"]
  assert not {tuple(x) for x in s0} & {tuple(x) for x in s1}


def test_bad_inputs(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    pipeline.InputPipeline([pipeline.DatasetEntry("x", str(tmp_path / "nope"), 1.0)], SPEC,
                           embodiment_lib.ActionSpace())


@pytest.mark.slow
def test_dataset_lacking_a_field_is_named(data_dir, tmp_path):
  import json
  import shutil
  broken = str(tmp_path / "sim_robot")
  shutil.copytree(f"{data_dir}/sim_robot/1.0.0", broken)
  path = os.path.join(broken, "features.json")
  features = json.load(open(path))
  obs = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]["observation"]
  del obs["featuresDict"]["features"]["eef"]
  json.dump(features, open(path, "w"))
  with pytest.raises(ValueError, match=r"steps/observation/eef is missing.*features.json"):
    pipeline.InputPipeline([pipeline.DatasetEntry("sim_robot", broken, 1.0)], SPEC, embodiment_lib.ActionSpace())
