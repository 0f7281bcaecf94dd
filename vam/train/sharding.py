"""The one place that builds the device mesh and the shardings (DESIGN.md, "Sharding").

Mesh axes come from config as {name: size} in order, e.g. {'data': -1, 'fsdp': 1, 'tensor': 1}; one size
may be -1 (inferred from the device count). Parameters are sharded by rules over their shapes:
FSDP splits the largest dimension divisible by the fsdp axis, tensor parallelism splits the last
dimension of 2-D+ kernels when divisible. Batches are split over ('data', 'fsdp') on their leading axis.
"""

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXES = ("data", "fsdp")


def make_mesh(axes: dict, devices=None) -> Mesh:
  """Mesh with named axes; `-1` infers one size. Axis types are Auto (jax 0.10 defaults to Explicit)."""
  devices = list(devices if devices is not None else jax.devices())
  names, sizes = list(axes.keys()), list(axes.values())
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {dict(axes)}: at most one axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh {dict(axes)}: {len(devices)} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {dict(zip(names, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}")
  return jax.make_mesh(tuple(sizes), tuple(names), axis_types=(AxisType.Auto,) * len(names), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  axes = tuple(a for a in DATA_AXES if a in mesh.axis_names)
  return NamedSharding(mesh, P(axes))


def param_spec(shape, mesh: Mesh) -> P:
  """Partition spec of one parameter from its shape (see module docstring)."""
  spec = [None] * len(shape)
  tensor = mesh.shape.get("tensor", 1)
  if tensor > 1 and len(shape) >= 2 and shape[-1] % tensor == 0:
    spec[-1] = "tensor"
  fsdp = mesh.shape.get("fsdp", 1)
  if fsdp > 1:
    free = [i for i in np.argsort(shape)[::-1] if spec[i] is None and shape[i] % fsdp == 0]
    if free and shape[free[0]] >= fsdp:
      spec[free[0]] = "fsdp"
  return P(*spec)


def param_shardings(abstract_state, mesh: Mesh):
  """Shardings for a pytree of (abstract) arrays."""
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(x.shape, mesh)), abstract_state)
