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
