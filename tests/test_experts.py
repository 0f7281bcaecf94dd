"""The scripted experts solve every task on a small batch (easy mode), for every embodiment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vam.sim import embodiments, env as env_lib, rollout, tasks

PER_TASK = 4


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(embodiments.EMBODIMENTS))
def test_expert_success_small_batch(name):
  n = PER_TASK * len(tasks.TASKS)
  env = env_lib.Env(env_lib.EnvConfig(embodiment=name, num_envs=n))
  task_ids = np.repeat(np.arange(len(tasks.TASKS)), PER_TASK)
  keys = jnp.stack([jax.random.PRNGKey(1000 + i) for i in range(n)])
  _, traj = rollout.rollout(env, keys, jnp.asarray(task_ids), max(tasks.HORIZON.values()), False)
  success = np.asarray(traj["success"]).any(axis=0)
  assert not np.asarray(traj["overflow"]).any()
  for t, task in enumerate(tasks.TASKS):
    rate = success[task_ids == t].mean()
    assert rate >= 0.75, f"{name}/{task}: expert success {rate:.2f} on {PER_TASK} episodes"


@pytest.mark.parametrize("name", ["arm6", "gantry"])
def test_push_expert_steers_instead_of_starting_over(name):
  """The pushing expert re-centres behind the block before it pushes on (experts.PUSH_STEER): its demos are one
  mode, not a mix of pushes and start-overs (before steering, 39% of arm6 pushes started over at least once)."""
  n = 12
  env = env_lib.Env(env_lib.EnvConfig(embodiment=name, num_envs=n))
  keys = jnp.stack([jax.random.PRNGKey(2000 + i) for i in range(n)])
  ids = jnp.full((n,), tasks.task_id("push"), jnp.int32)
  _, traj = rollout.rollout(env, keys, ids, tasks.HORIZON["push"], False)
  success = np.asarray(traj["success"])
  first = np.where(success.any(0), success.argmax(0), len(success))
  restarted = [bool(np.asarray(traj["restart"])[:first[b], b].any()) for b in range(n)]
  assert success.any(0).mean() >= 11 / 12, f"{name}: push success {success.any(0).mean():.2f}"
  assert sum(restarted) <= 1, f"{name}: {sum(restarted)} of {n} pushes started over before succeeding"
