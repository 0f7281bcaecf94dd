import numpy as np
import pytest

from vam import embodiment


def _random_pose(rng, n):
  q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
  q *= np.sign(np.linalg.det(q))[:, None, None]
  return np.concatenate([rng.normal(size=(n, 3)), embodiment.mat_to_rot6d(q)], axis=-1)


def test_layout_and_masks():
  space = embodiment.ActionSpace()
  assert space.dim == 24 + (10 + 7) + (10 + 5)
  m = space.embodiment_mask("arm6")
  assert m.sum() == 17 and m[space.slots["arm6_eef"].slice].all() and not m[space.slots["human_hand"].slice].any()
  assert space.embodiment_mask("human_hand").sum() == 24
  assert [s["name"] for s in space.layout()["slots"]] == ["human_hand", "arm6_eef", "arm6_joints", "gantry_eef",
                                                          "gantry_joints"]
  with pytest.raises(ValueError, match="valid embodiments"):
    embodiment.ActionSpace(("arm6", "arm9"))


def test_relative_pose_roundtrip_and_identity():
  rng = np.random.default_rng(0)
  current, future = _random_pose(rng, 1)[0], _random_pose(rng, 8)
  rel = embodiment.relative_pose(current, future)
  np.testing.assert_allclose(embodiment.absolute_pose(current, rel), future, atol=1e-9)
  ident = embodiment.relative_pose(current, current[None])
  np.testing.assert_allclose(ident[0], [0, 0, 0, 1, 0, 0, 0, 1, 0], atol=1e-9)


def test_relative_hand_roundtrip_is_frame_invariant():
  rng = np.random.default_rng(1)
  current = np.concatenate([_random_pose(rng, 1)[0], rng.normal(size=15)])
  future = np.concatenate([_random_pose(rng, 5), rng.normal(size=(5, 15))], axis=-1)
  rel = embodiment.relative_hand(current, future)
  np.testing.assert_allclose(embodiment.absolute_hand(current, rel), future, atol=1e-9)
  # Moving the whole scene rigidly leaves the relative action unchanged.
  shift = np.array([0.3, -1.0, 2.0])
  moved = lambda k: np.concatenate([k[..., :3] + shift, k[..., 3:9], (k[..., 9:].reshape(*k.shape[:-1], 5, 3) + shift).reshape(*k.shape[:-1], 15)], -1)
  np.testing.assert_allclose(embodiment.relative_hand(moved(current), moved(future)), rel, atol=1e-9)
