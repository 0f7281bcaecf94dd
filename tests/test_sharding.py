import jax
import numpy as np
import pytest

from vam.train import sharding


def test_mesh_infers_and_validates():
  assert jax.device_count() == 8  # conftest forces 8 CPU devices
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 1})
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  with pytest.raises(ValueError, match="at most one"):
    sharding.make_mesh({"data": -1, "fsdp": -1})
  with pytest.raises(ValueError, match="needs 6 devices"):
    sharding.make_mesh({"data": 3, "fsdp": 2})


def test_param_and_batch_specs():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  assert sharding.param_spec((64, 128), mesh) == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert sharding.param_spec((3,), mesh) == jax.sharding.PartitionSpec(None)
  x = jax.device_put(np.zeros((8, 5)), sharding.batch_sharding(mesh))
  assert x.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
