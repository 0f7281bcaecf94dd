"""Input pipeline: windows and masks at episode boundaries, normalisation round trip, determinism, mixture."""

import os

import numpy as np
import pytest

from vam import embodiment as embodiment_lib
from vam.input import normalize, pipeline, windows

SPEC = windows.WindowSpec(context_frames=3, future_frames=2, action_horizon=6, proprio_dim=17)


@pytest.fixture
def data_dir(tiny_data_dir):
  return tiny_data_dir


def _pipeline(data_dir, weights=(0.5, 0.5)):
  entries = [pipeline.DatasetEntry("sim_robot", f"{data_dir}/sim_robot/1.0.0", weights[0]),
             pipeline.DatasetEntry("sim_human", f"{data_dir}/sim_human/1.0.0", weights[1])]
  return pipeline.InputPipeline(entries, SPEC, embodiment_lib.ActionSpace())


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


@pytest.mark.slow
def test_normalisation_round_trip_exact(data_dir):
  p = _pipeline(data_dir)
  ep = p.episodes[0].episode(0)
  chunk, mask, mapped = windows.unified_chunk(ep, 1, 6, p.space)
  assert not mapped.any()
  for mode in normalize.MODES:
    n = normalize.Normalizer(p.stats, p.space, 17, mode)
    back = n.denormalize_actions("arm6", n.normalize_actions("arm6", chunk))
    np.testing.assert_allclose(back[mask], chunk[mask], rtol=1e-5, atol=1e-6)
  normed = p.normalizer.normalize_actions("arm6", chunk)[mask]
  assert np.abs(normed).max() < 5  # quantile scaling keeps the data near [-1, 1]


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
