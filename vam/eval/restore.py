"""Checkpoint -> a model ready to run (a policy, the autoencoder or the video model): EMA params (no optimizer state) and the assets saved beside them.

Only *finished* checkpoints are listed: orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it
when every item is committed, and the manager lists renamed steps only.
"""

import dataclasses
import os

import jax
import ml_collections
from flax import nnx

from vam import checkpoints
from vam import config as config_lib
from vam import embodiment as embodiment_lib
from vam.eval import defaults
from vam.input import pipeline, windows
from vam.models import registry


@dataclasses.dataclass
class Restored:
  workdir: str
  step: int
  config: ml_collections.ConfigDict  # the training config saved with the checkpoint (+ eval overrides)
  assets: dict
  space: embodiment_lib.ActionSpace
  normalizer: embodiment_lib.Normalizer  # the statistics saved with the checkpoint (never the dataset's on disk)
  model: nnx.Module  # the model with the EMA params bound
  params: dict  # the EMA params (pure dict of arrays) on the first device
  binder: registry.Binder

  @property
  def image_size(self) -> int:
    return int(self.assets["image_size"])


finished_steps = checkpoints.finished_steps


def load(workdir: str, step: int | None = None, overrides=()) -> Restored:
  """Restores `step` (default: the newest finished one) of `workdir` onto the first present device.

  `overrides` ([(dotted key, text)]) apply to the saved config, whose `eval` section is completed with
  `vam.eval.defaults` first (a training config need not define one)."""
  step, assets = checkpoints.step_and_assets(workdir, step)
  where = f"{checkpoints.directory(workdir)}/{step}"
  for key in ("config", "normalization", "action_space", "image_size"):
    if key not in assets:
      raise checkpoints.CheckpointError(f"checkpoint {where}: assets lack {key!r}")
  config = ml_collections.ConfigDict(assets["config"])
  merged = defaults.get()
  merged.update(config.get("eval", {}))
  config.eval = merged
  for key, text in overrides:
    config_lib.override(config, key, text)
  space = embodiment_lib.ActionSpace(tuple(assets["action_space"]["embodiments"]))
  if space.layout() != assets["action_space"]:
    raise checkpoints.CheckpointError(f"checkpoint {where}: its action-space layout differs from this version of "
                                      "vam's")
  make_model = registry.factory(config, space.dim, len(space.embodiments), int(assets["image_size"]))
  binder = registry.Binder(make_model)
  # Onto the first present device, whatever mesh training used: the simulator's batch runs on one device.
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          nnx.to_pure_dict(binder.abstract_params))
  params, _, _ = checkpoints.restore_params(workdir, step, abstract)
  return Restored(workdir=os.path.abspath(workdir), step=step, config=config, assets=assets, space=space,
                  normalizer=embodiment_lib.Normalizer.from_dict(assets["normalization"], space),
                  model=binder(params), params=params, binder=binder)


def heldout_windows(restored: Restored, data_dir: str, batch_size: int, seed: int, future_frames: int | None = None,
                    split: str = "val"):
  """Iterator of fixed, deterministic batches of `split` windows (default: the held-out val split) shaped as the
  checkpoint's config says (`future_frames` overrides H_f, e.g. 0 for policies' action error)."""
  cfg = restored.config
  d = cfg.data
  spec = windows.WindowSpec(context_frames=d.context_frames,
                            future_frames=d.future_frames if future_frames is None else future_frames,
                            action_horizon=d.action_horizon, proprio_dim=d.proprio_dim,
                            temporal_factor=registry.temporal_factor(cfg), references=True,
                            pad=d.get("pad", "repeat"), frame_stride=windows.frame_stride(d))
  entries = pipeline.entries_from_config(data_dir, d)
  loader = pipeline.InputPipeline(entries, spec, restored.space, split=split, camera=d.camera, norm_mode=d.norm_mode,
                                  normalizer=restored.normalizer)
  return iter(loader.dataset(batch_size, seed=seed, shard_index=0, shard_count=1, prefetch_buffer=0))
