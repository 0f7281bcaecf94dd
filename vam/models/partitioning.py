"""Logical axis names -> mesh axes: the rule table that parameters (vam/train/sharding.py) and activations
(`constrain`, called inside models) share.

Mesh axes: `data` and `fsdp` split the batch (fsdp also splits parameters' `embed` dimension), `tensor` splits
attention heads and MLP width, `sequence` splits long token sequences (the video DiT's activations; parameters
are replicated over it). A mesh without an axis simply ignores the rules that name it.
"""

import jax
from jax.sharding import PartitionSpec as P

DATA_AXES = ("data", "fsdp")  # the batch's leading dimension is split over both

LOGICAL_RULES = {
    # parameters
    "embed": "fsdp", "heads": "tensor", "mlp": "tensor", "vocab": None, "layers": None,
    # activations
    "batch": DATA_AXES, "sequence": "sequence", "act_embed": None,
}


def _mesh_axes(name, mesh_shape: dict) -> tuple[str, ...]:
  axes = LOGICAL_RULES.get(name) if name else None
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return tuple(a for a in axes if mesh_shape.get(a, 1) > 1)


def spec(shape, names, mesh_shape: dict) -> P:
  """PartitionSpec for an array whose dimensions have logical `names` on a mesh of `mesh_shape`
  ({axis: size}); a dimension that its mesh axes do not divide, or whose axes an earlier dimension
  already uses, stays whole."""
  used, out = set(), []
  for dim, name in zip(shape, names):
    axes = tuple(a for a in _mesh_axes(name, mesh_shape) if a not in used)
    size = 1
    for a in axes:
      size *= mesh_shape[a]
    if axes and dim % size == 0:
      used.update(axes)
      out.append(axes[0] if len(axes) == 1 else axes)
    else:
      out.append(None)
  return P(*out)


def constrain(x: jax.Array, names: tuple) -> jax.Array:
  """Pins activation `x`'s layout to its logical `names` on the mesh in context (`jax.set_mesh`, which
  the training step is compiled under); without a mesh (evaluation, tests of a bare model) it is a no-op."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, spec(x.shape, names, dict(mesh.shape)))
