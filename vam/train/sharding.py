"""The one place that builds the device mesh and the shardings (DESIGN.md, "Sharding").

Mesh axes come from config as {name: size} in order, e.g. {'data': -1, 'fsdp': 1, 'tensor': 1, 'sequence': 1};
one size may be -1 (inferred from the device count). Batches are split over ('data', 'fsdp') on their
leading axis (replicated over `tensor` and `sequence`).

Parameters follow logical-axis rules (the maxtext recipe): `PARAM_AXES` names each dimension of a
parameter by its path (attention projections: embed x heads, MLP: embed x mlp, ...; a parameter stacked
by scan-over-layers gets a leading `layers`), and `partitioning.LOGICAL_RULES` maps logical names to mesh
axes (embed -> fsdp, heads/mlp -> tensor; the same table places activations, e.g. the video DiT's tokens
over `sequence`). A dimension that a mesh axis does not divide stays whole. Parameters no rule
names fall back to shape rules: FSDP splits the largest divisible dimension, tensor the last one of 2-D+
kernels. The same rules shard optimizer moments, whose paths end with their parameter's path.
"""

import math
import re

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from vam.models import partitioning

DATA_AXES = partitioning.DATA_AXES


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


PARAM_AXES = (  # (regex on the '/'-joined path, logical name of each dimension)
    (r"(^|/)(q|k|v)(/base)?/kernel$", ("embed", "heads")),
    (r"(^|/)out(/base)?/kernel$", ("heads", "embed")),
    (r"(^|/)fc1(/base)?/kernel$", ("embed", "mlp")),
    (r"(^|/)fc2(/base)?/kernel$", ("mlp", "embed")),
    (r"(^|/)(q|k|v|fc1)/lora_a$", ("embed", None)),
    (r"(^|/)(out|fc2)/lora_b$", (None, "embed")),
    (r"(^|/)(ada|final_ada)/kernel$", ("embed", "mlp")),
    (r"(^|/)(patch_in|patch_out)/kernel$", (None, None)),
    (r"(^|/)embedding$", ("vocab", "embed")),
)


def logical_axes(path: str, ndim: int):
  """Logical names of a parameter's dimensions, or None when no rule names it."""
  for pattern, axes in PARAM_AXES:
    if re.search(pattern, path):
      if ndim == len(axes) + 1:  # stacked by scan over layers
        return ("layers",) + axes
      return axes if ndim == len(axes) else None
  return None


def param_spec(shape, mesh: Mesh, path: str = "") -> P:
  """Partition spec of one parameter (see module docstring)."""
  axes = logical_axes(path, len(shape)) if path else None
  if axes is not None:
    return partitioning.spec(shape, axes, dict(mesh.shape))
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


def path_name(path) -> str:
  """A pytree key path as '/'-joined names (what the partitioning and freezing rules match)."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def param_shardings(abstract_state, mesh: Mesh):
  """Shardings for a pytree of (abstract) arrays (params, or optimizer state holding params' moments)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, param_spec(x.shape, mesh, path_name(path))), abstract_state)
