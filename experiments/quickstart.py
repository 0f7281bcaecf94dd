"""The image-conditioned baseline policy (METHOD.md) on the quickstart datasets; what `make demo` trains.

    python -m vam.train --config experiments/quickstart.py --workdir out/demo/baseline
    python -m vam.train --config experiments/quickstart.py:tiny --workdir /tmp/w   # a seconds-long smoke run

Variants: `default` (minutes on a 2-core CPU) and `tiny` (tests: a very small model and batch).
"""

import ml_collections

from vam.eval import defaults as eval_defaults

VARIANTS = ("default", "tiny")


def get_config(variant=None):
  variant = variant or "default"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/quickstart.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0
  c.data_dir = "out/demo/data"  # built by `python -m vam.data.build --config experiments/datasets.py:quickstart`
  c.total_steps = 40 if tiny else 600
  c.batch_size = 8 if tiny else 32  # global; split over the mesh's data axes and over hosts
  c.log_every = 5 if tiny else 25
  c.checkpoint_every = 20 if tiny else 200
  c.keep_checkpoints = 3  # the newest N ...
  c.keep_every = 0  # ... plus every M-th step (0: none)

  c.data = ml_collections.ConfigDict()
  c.data.mixture = {"sim_robot": 0.5, "sim_human": 0.5}  # dataset name -> sampling weight
  c.data.version = "1.0.0"
  c.data.split = "train"
  c.data.camera = "front"
  c.data.embodiments = ["human_hand", "arm6", "gantry"]  # the unified action space's slots, in order
  c.data.context_frames = 2  # H_o
  c.data.future_frames = 0  # H_f (video targets; the baseline needs none)
  c.data.action_horizon = 8  # H_a
  c.data.proprio_dim = 17  # the widest proprio in the mixture (arm6: 17)
  c.data.norm_mode = "quantile"  # quantile | mean_std (vam/input/normalize.py)
  c.data.workers = 0  # grain worker processes (0: load in the training process)
  c.data.prefetch = 2
  c.data.cache_mb = 256  # decoded-episode cache per dataset (and per worker)

  c.model = ml_collections.ConfigDict()
  c.model.name = "image_baseline"
  c.model.encoder = dict(width=32 if tiny else 128, depth=1 if tiny else 2, heads=2 if tiny else 4,
                         patch=16 if tiny else 8, text_len=32 if tiny else 64, text_depth=1)
  c.model.decoder = dict(width=32 if tiny else 128, depth=1 if tiny else 3, heads=2 if tiny else 4, mlp_ratio=4,
                         time_dim=32 if tiny else 128, bilinear_rank=4 if tiny else 16)
  c.model.proprio_dropout = 0.2
  c.model.action_time_sampler = "sqrt"
  c.model.sample_steps = 10

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"
  c.optimizer.lr = 1e-3 if tiny else 3e-4
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 5 if tiny else 100
  c.optimizer.final_lr_fraction = 0.1
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.95
  c.optimizer.weight_decay = 1e-4
  c.optimizer.grad_clip = 1.0
  c.optimizer.ema_decay = 0.999

  # Closed-loop evaluation (python -m vam.eval; vam/eval/defaults.py lists every key): both robots, all
  # tasks, easy and hard worlds of the seen layout, 8 episodes per cell.
  c.eval = eval_defaults.get(modes=["easy", "hard"], splits=["train"], episodes=8, num_envs=32)

  c.mesh = {"data": -1, "fsdp": 1, "tensor": 1}  # axis sizes; -1 = all remaining devices
  c.checkpoint_async = True
  return c
