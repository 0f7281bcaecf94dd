"""Normalisation of unified action chunks and proprio with the datasets' stored statistics.

Mode `quantile` (default) maps each dimension's [q01, q99] onto [-1, 1]; `mean_std` standardises.
Both are affine per dimension, so normalise -> denormalise is exact. Dimensions with (near) zero
spread keep scale 1 (they are constant, e.g. an unused rotation component), so nothing divides by 0.
Statistics are per embodiment; the unified vector takes each slot's from the matching stored field:
hand slot <- `hand_relative`; `<robot>_eef` <- `eef_relative` (9) + the native gripper command;
`<robot>_joints` <- native `action`.
"""

import numpy as np

from vam import embodiment as embodiment_lib

MODES = ("quantile", "mean_std")


def _affine(stat: dict, mode: str, idx=slice(None)):
  if mode == "quantile":
    lo, hi = np.asarray(stat["q01"])[idx], np.asarray(stat["q99"])[idx]
    center, half = (hi + lo) / 2, (hi - lo) / 2
  else:
    center, half = np.asarray(stat["mean"])[idx], np.asarray(stat["std"])[idx]
  return center, np.where(half > 1e-6, half, 1.0)


class Normalizer:
  """Per-embodiment offset/scale over the unified action vector and over (padded) proprio."""

  def __init__(self, stats: dict, space: embodiment_lib.ActionSpace, proprio_dim: int, mode: str = "quantile"):
    if mode not in MODES:
      raise ValueError(f"unknown normalisation mode {mode!r}; valid: {list(MODES)}")
    self.space, self.mode, self.proprio_dim = space, mode, proprio_dim
    self.action_offset, self.action_scale, self.state_offset, self.state_scale = {}, {}, {}, {}
    for name in space.embodiments:
      if name not in stats:
        continue
      st = stats[name]
      off, scale = np.zeros(space.dim, np.float32), np.ones(space.dim, np.float32)
      for slot in space.own_slots(name):
        try:
          if slot.kind == "hand":
            c, h = _affine(st["hand_relative"], mode)
          elif slot.kind == "eef":
            c9, h9 = _affine(st["eef_relative"], mode)
            cg, hg = _affine(st["action"], mode, slice(-1, None))
            c, h = np.concatenate([c9, cg]), np.concatenate([h9, hg])
          else:
            c, h = _affine(st["action"], mode)
        except KeyError as e:
          raise ValueError(f"normalisation statistics for {name!r} lack field {e.args[0]!r} "
                           "(rebuild the dataset with this version of vam.data.build)") from None
        off[slot.slice], scale[slot.slice] = c, h
      self.action_offset[name], self.action_scale[name] = off, scale
      c, h = _affine(st["state"], mode)
      if len(c) > proprio_dim:
        raise ValueError(f"{name}: proprio has {len(c)} dims > config proprio_dim={proprio_dim}")
      pad = proprio_dim - len(c)
      self.state_offset[name] = np.pad(c, (0, pad)).astype(np.float32)
      self.state_scale[name] = np.pad(h, (0, pad), constant_values=1.0).astype(np.float32)

  def _check(self, name):
    if name not in self.action_offset:
      raise ValueError(f"no normalisation statistics for embodiment {name!r} (have {sorted(self.action_offset)})")

  def normalize_actions(self, name, actions):
    self._check(name)
    return ((actions - self.action_offset[name]) / self.action_scale[name]).astype(np.float32)

  def denormalize_actions(self, name, actions):
    self._check(name)
    return (actions * self.action_scale[name] + self.action_offset[name]).astype(np.float32)

  def normalize_state(self, name, state):
    self._check(name)
    padded = np.pad(state, [(0, 0)] * (state.ndim - 1) + [(0, self.proprio_dim - state.shape[-1])])
    return ((padded - self.state_offset[name]) / self.state_scale[name]).astype(np.float32)

  def to_dict(self) -> dict:
    """JSON-able arrays (stored in checkpoint assets)."""
    return dict(mode=self.mode, proprio_dim=self.proprio_dim,
                action_offset={k: v.tolist() for k, v in self.action_offset.items()},
                action_scale={k: v.tolist() for k, v in self.action_scale.items()},
                state_offset={k: v.tolist() for k, v in self.state_offset.items()},
                state_scale={k: v.tolist() for k, v in self.state_scale.items()})


def merge_stats(*stats: dict) -> dict:
  """Per-embodiment statistics of several datasets; an embodiment may come from one dataset only."""
  out = {}
  for s in stats:
    for name, v in s.items():
      if name in out:
        raise ValueError(f"embodiment {name!r} has statistics in two datasets of the mixture; keep it in one")
      out[name] = v
  return out
