"""The action contract (vam/embodiment.py): slot layout, relative poses and joints, the numpy/jnp normaliser,
and the one way from a unified chunk to what a robot executes."""

import jax
import jax.numpy as jnp
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
  assert space.slot("gantry", "joints").size == 5
  with pytest.raises(ValueError, match="no 'eef' slot"):
    space.slot("human_hand", "eef")


def test_table_mirrors_the_simulated_embodiments():
  from vam.sim import embodiments as sim  # the contract itself imports no MuJoCo; the simulator must agree
  for name, spec in embodiment.EMBODIMENTS.items():
    cls = sim.EMBODIMENTS[name]
    assert spec.kind == cls.kind
    if spec.kind == "robot":
      assert spec.action_names == cls.action_names


def test_contract_imports_no_mujoco():
  import subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  code = "import sys, vam.embodiment; bad = [m for m in sys.modules if m.startswith('mujoco')]; assert not bad, bad"
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]


def _stats(rng):
  """Fake per-embodiment statistics for arm6 with the fields the normaliser reads."""
  def field(n, spread):
    lo = rng.normal(size=n) - spread
    return dict(q01=lo.tolist(), q99=(lo + 2 * spread).tolist(), mean=(lo + spread).tolist(), std=[spread] * n)
  by_step = lambda n, spread: {k: [v] * 16 for k, v in field(n, spread).items()}
  return {"arm6": dict(action=field(7, 1.0), state=field(7, 0.5), eef=field(9, 0.2), eef_relative=field(9, 0.1),
                       joints_relative=field(6, 0.3), privileged=field(13, 0.2), relative_horizon=16,
                       eef_relative_by_step=by_step(9, 0.1), joints_relative_by_step=by_step(6, 0.3))}


@pytest.mark.parametrize("mode,per_step", [("quantile", False), ("mean_std", False), ("quantile", True)])
def test_normaliser_numpy_and_jnp_agree_and_round_trip(mode, per_step):
  rng = np.random.default_rng(0)
  space = embodiment.ActionSpace()
  norm = embodiment.Normalizer.from_stats(_stats(rng), space, 17, mode, horizon=16, per_step=per_step)
  chunk = rng.normal(size=(4, 16, space.dim)).astype(np.float32)
  normed = norm.normalize_actions("arm6", chunk)
  assert isinstance(normed, np.ndarray)
  jnormed = jax.jit(lambda x: norm.normalize_actions("arm6", x))(jnp.asarray(chunk))
  assert isinstance(jnormed, jax.Array)
  np.testing.assert_allclose(np.asarray(jnormed), normed, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(norm.denormalize_actions("arm6", normed), chunk, rtol=1e-5, atol=1e-5)
  state = rng.normal(size=(3, 7)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(norm.normalize_state("arm6", jnp.asarray(state))),
                             norm.normalize_state("arm6", state), rtol=1e-5, atol=1e-6)
  assert norm.normalize_state("arm6", state).shape == (3, 17)
  again = embodiment.Normalizer.from_dict(norm.to_dict(), space)  # what a checkpoint restores
  np.testing.assert_array_equal(again.normalize_actions("arm6", chunk), normed)
  with pytest.raises(ValueError, match="no normalisation statistics for embodiment 'gantry'"):
    norm.normalize_actions("gantry", chunk)
  with pytest.raises(ValueError, match="action_horizon=32 is longer than the 16"):
    embodiment.Normalizer.from_stats(_stats(rng), space, 17, mode, horizon=32)


def test_proprio_with_the_end_effector_pose():
  """`proprio_eef`: the padded state, then the standardised pose; saved and restored with the checkpoint."""
  rng = np.random.default_rng(1)
  stats = _stats(rng)
  norm = embodiment.Normalizer.from_stats(stats, embodiment.ActionSpace(), 17, proprio_eef=True)
  state, eef = rng.normal(size=(3, 7)).astype(np.float32), rng.normal(size=(3, 9)).astype(np.float32)
  out = norm.normalize_state("arm6", state, eef)
  assert out.shape == (3, norm.proprio_width) == (3, embodiment.proprio_width(17, True)) == (3, 26)
  plain = embodiment.Normalizer.from_stats(stats, embodiment.ActionSpace(), 17)
  np.testing.assert_allclose(out[:, :17], plain.normalize_state("arm6", state), rtol=1e-6)
  st = stats["arm6"]["eef"]
  np.testing.assert_allclose(out[:, 17:], (eef - np.asarray(st["mean"])) / np.asarray(st["std"]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(jax.jit(lambda s, e: norm.normalize_state("arm6", s, e))(state, eef)), out,
                             rtol=1e-5, atol=1e-5)
  again = embodiment.Normalizer.from_dict(norm.to_dict(), embodiment.ActionSpace())
  np.testing.assert_array_equal(again.normalize_state("arm6", state, eef), out)
  with pytest.raises(ValueError, match="pass eef"):
    norm.normalize_state("arm6", state)


def test_old_statistics_are_refused_by_name():
  stats = _stats(np.random.default_rng(0))
  del stats["arm6"]["joints_relative"]
  with pytest.raises(ValueError, match="lack field 'joints_relative'.*rebuild"):
    embodiment.Normalizer.from_stats(stats, embodiment.ActionSpace(), 17)


def test_relative_joints_and_native_commands():
  rng = np.random.default_rng(2)
  space = embodiment.ActionSpace()
  norm = embodiment.Normalizer.from_stats(_stats(rng), space, 17)
  joints = rng.normal(size=6)
  targets = np.concatenate([rng.normal(size=(5, 6)), rng.uniform(size=(5, 1))], axis=-1)
  rel = embodiment.relative_joints(joints, targets)
  np.testing.assert_allclose(rel[:, 6], targets[:, 6])  # the gripper command stays absolute
  np.testing.assert_allclose(embodiment.absolute_joints(joints, rel), targets, atol=1e-12)
  # The hold chunk executes as "stay where you are", whichever slot the robot executes.
  state = np.concatenate([joints, [0.25]]).astype(np.float32)
  eef = _random_pose(rng, 1)[0].astype(np.float32)
  hold = embodiment.hold_chunk(norm, "arm6", 16, gripper_opening=0.25)
  cmd = embodiment.native_commands(norm, "arm6", "joints", hold, state, eef)
  np.testing.assert_allclose(cmd[:, :6], np.repeat(joints[None], 16, 0), atol=1e-5)
  np.testing.assert_allclose(cmd[:, 6], 0.75, atol=1e-5)  # opening 0.25 = command 0.75 (1 = closed)
  cmd = embodiment.native_commands(norm, "arm6", "eef", hold, state, eef)
  np.testing.assert_allclose(cmd[:, :9], np.repeat(eef[None], 16, 0), atol=1e-5)
  # Batched and jitted, the same commands.
  jcmd = jax.jit(lambda c, s, e: embodiment.native_commands(norm, "arm6", "eef", c, s, e))(
      jnp.asarray(hold[None]), jnp.asarray(state[None]), jnp.asarray(eef[None]))
  np.testing.assert_allclose(np.asarray(jcmd[0]), cmd, atol=1e-5)
  with pytest.raises(ValueError, match="not a robot"):
    embodiment.native_commands(norm, "human_hand", "joints", hold, state)
  with pytest.raises(ValueError, match="valid"):
    embodiment.native_commands(norm, "arm6", "torque", hold, state)


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
