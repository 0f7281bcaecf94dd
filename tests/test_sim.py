"""Every embodiment x task resets and steps under jit+vmap without NaN; shapes; backends; geometry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vam.sim import embodiments, env as env_lib, geometry, scene, tasks

EMBODIMENTS = sorted(embodiments.EMBODIMENTS)
STATE_DIM = {"arm6": 7, "gantry": 5, "human_hand": 17}


@functools.lru_cache(maxsize=None)
def make_env(name, backend="warp", num_envs=4, mode="easy", physics="auto"):
  return env_lib.Env(env_lib.EnvConfig(embodiment=name, backend=backend, num_envs=num_envs, mode=mode,
                                       physics=physics))


def _reset_and_step(env, n_steps=2):
  keys = jax.random.split(jax.random.PRNGKey(0), len(tasks.TASKS))
  task_ids = jnp.arange(len(tasks.TASKS))

  @jax.jit
  def run(keys, task_ids):
    state = jax.vmap(env.reset)(keys, task_ids)
    first = state
    action = jax.vmap(lambda s: env._home_action())(state)  # pylint: disable=protected-access
    for _ in range(n_steps):
      state = jax.vmap(env.step)(state, action)
    return first, state
  return run(keys, task_ids)


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_reset_step_all_tasks(name):
  env = make_env(name)
  first, state = _reset_and_step(env)
  for leaf in jax.tree.leaves((first.obs, state.obs, state.data.qpos)):
    assert np.isfinite(np.asarray(leaf)).all()
  n = len(tasks.TASKS)
  assert state.obs["state"].shape == (n, STATE_DIM[name])
  assert state.obs["eef"].shape == (n, 9)
  assert state.obs["gripper"].shape == (n, 1)
  assert env.action_dim == len(env.embodiment.action_names)
  if name == "human_hand":
    assert state.obs["hand_keypoints"].shape == (n, 24)  # wrist 3 + rot6d 6 + 5 fingertips x 3
  np.testing.assert_array_equal(np.asarray(state.step), 2)
  assert not bool(env.contact_overflow(state))
  # Objects a task uses rest on the table; parked ones are off it.
  obj_z = np.asarray(jax.vmap(lambda d, i: env.object_pose(d, i)[0])(state.data, state.episode.obj))[:, 2]
  assert np.all(np.abs(obj_z[1:] - scene.TABLE_TOP - scene.OBJECT_HALF_HEIGHT[0]) < 0.01)  # push/place/stack


def test_render_shapes_and_content():
  env = make_env("arm6")
  first, _ = _reset_and_step(env, n_steps=0)
  images = np.asarray(jax.jit(env.render)(first))
  assert images.shape == (4, 1, 64, 64, 3) and images.dtype == np.uint8
  assert images.std() > 10  # a real scene, not a blank frame
  assert not np.array_equal(images[1], images[2])  # different layouts render differently


def test_hard_mode_randomises_colours_and_table():
  env = make_env("gantry", mode="hard")
  first, _ = _reset_and_step(env, n_steps=0)
  assert len({tuple(c) for c in np.asarray(first.episode.colour)}) > 1
  assert np.ptp(np.asarray(first.episode.table_z)) > 0


def test_jax_backend_physics():
  env = make_env("gantry", backend="jax", physics="mjx")
  _, state = _reset_and_step(env)
  assert np.isfinite(np.asarray(state.data.qpos)).all()
  with pytest.raises(ValueError, match="no renderer"):
    env.render(state)


@pytest.mark.parametrize("name", ["arm6", "human_hand"])
def test_native_physics_matches_mjx(name):
  """Native MuJoCo substeps (the CPU default) and MJX Warp's step the same worlds alike: a short motion before
  contacts make the two engines' round-off diverge agrees to a millimetre; grasp points and object poses follow."""
  native, mjx_env = make_env(name, physics="native"), make_env(name, physics="mjx")
  assert native.physics == "native" and mjx_env.physics == "mjx"
  (_, a), (_, b) = _reset_and_step(native, 3), _reset_and_step(mjx_env, 3)
  np.testing.assert_allclose(np.asarray(a.data.qpos), np.asarray(b.data.qpos), atol=1e-3)
  np.testing.assert_allclose(np.asarray(a.data.site_xpos), np.asarray(b.data.site_xpos), atol=1e-3)
  np.testing.assert_allclose(np.asarray(a.obs["state"]), np.asarray(b.obs["state"]), atol=1e-3)
  assert np.abs(np.asarray(a.data.qpos) - np.asarray(_reset_and_step(native, 0)[1].data.qpos)).max() > 1e-3  # it moved
  # One env outside vmap takes the same path.
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  one = jax.jit(native.step)(jax.jit(native.reset)(keys[1], jnp.int32(1)), native._home_action())  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(one.data.qpos), np.asarray(_reset_and_step(native, 1)[1].data.qpos[1]),
                             atol=1e-5)


def test_unknown_names_list_valid():
  with pytest.raises(ValueError, match=r"embodiment=.arm7.*arm6"):
    env_lib.EnvConfig(embodiment="arm7").validate()
  with pytest.raises(ValueError, match="mode"):
    env_lib.EnvConfig(mode="medium").validate()
  with pytest.raises(ValueError, match=r"physics=.gpu.*native"):
    env_lib.EnvConfig(physics="gpu").validate()
  with pytest.raises(ValueError, match="valid tasks"):
    tasks.task_id("juggle")


def test_rot6d_roundtrip():
  q = geometry.quat_from_euler_zyx(jnp.array(0.3), jnp.array(-0.7), jnp.array(1.1))
  w, x, y, z = q
  mat = jnp.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                   [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                   [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
  np.testing.assert_allclose(geometry.mat_from_rot6d(geometry.rot6d_from_mat(mat)), mat, atol=1e-6)
  np.testing.assert_allclose(geometry.quat_from_mat(mat), q * jnp.sign(q[0]), atol=1e-6)


@pytest.mark.parametrize("split", ["train", "unseen_positions", "unseen_objects"])
def test_world_splits_hold_out_positions_and_objects(split):
  env = env_lib.Env(env_lib.EnvConfig(embodiment="gantry", split=split, num_envs=16))
  keys = jax.random.split(jax.random.PRNGKey(3), 16)
  state = jax.jit(jax.vmap(env.reset))(keys, jnp.full((16,), tasks.task_id("push")))
  obj = np.asarray(state.episode.obj)
  pos = np.asarray(jax.vmap(lambda d, i: env.object_pose(d, i)[0])(state.data, state.episode.obj))[:, :2]
  cell = np.argmin(np.linalg.norm(pos[:, None] - tasks.CELLS[None], axis=-1), axis=1)
  in_held_cell = np.isin(cell, tasks.HELD_OUT_CELLS)
  held_object = np.isin(obj, scene.HELD_OUT_OBJECTS)
  assert in_held_cell.all() if split == "unseen_positions" else not in_held_cell.any()
  assert held_object.all() if split == "unseen_objects" else not held_object.any()


def test_push_layouts():
  """`adjacent` puts push's zone in a grid cell next to the block's (a 9-17 cm push); `any` in any other cell;
  the other tasks' layouts do not depend on it."""
  keys = jax.random.split(jax.random.PRNGKey(5), 16)
  out = {}
  for layout in tasks.PUSH_LAYOUTS:
    env = env_lib.Env(env_lib.EnvConfig(embodiment="gantry", num_envs=16, push_layout=layout, mode="hard"))
    reset = jax.jit(jax.vmap(env.reset))
    push, reach = (np.asarray(reset(keys, jnp.full((16,), tasks.task_id(t))).obs["privileged"])
                   for t in ("push", "reach"))
    out[layout] = np.linalg.norm(push[:, 0:2] - push[:, 3:5], axis=1), reach
  assert out["adjacent"][0].max() < 0.17 and out["adjacent"][0].min() > 0.08
  assert out["any"][0].max() > 0.2
  np.testing.assert_array_equal(out["adjacent"][1], out["any"][1])
  with pytest.raises(ValueError, match="push_layout"):
    env_lib.EnvConfig(push_layout="far").validate()
