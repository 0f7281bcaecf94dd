"""The longer documented experiment (README "Longer experiment"): the image baseline with the small-scale recipe
on all four tasks (reach, push, pick-and-place, stack) of the `standard` datasets, checkpointed along the way so
that success can be plotted against training steps. About 2 hours on 2 CPU cores; minutes on a GPU.

    make long        # = the commands below
    python -m vam.data.build --config experiments/datasets.py:standard --data_dir out/long/data
    python -m vam.train --config experiments/long.py --workdir out/long/baseline
    python -m vam.eval --workdir out/long/baseline --watch     # every checkpoint: success per task and mode

Variants: `default`, `tiny` (tests).
"""

import ml_collections

import common

from vam.sim import tasks

VARIANTS = ("default", "tiny")


def get_config(variant=None):
  variant = variant or "default"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/long.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.variant = variant
  common.run(c, total_steps=20 if tiny else 16_000, batch_size=8 if tiny else 32, log_every=5 if tiny else 100,
             checkpoint_every=10 if tiny else 2000, data_dir="out/long/data")
  c.keep_checkpoints = 10  # every checkpoint stays for the success-versus-step curve
  c.data = common.data(mixture={"sim_robot": 1.0, "sim_human": 0.0})  # the human data: statistics only
  c.model = ml_collections.ConfigDict()
  c.model.name = "image_baseline"
  c.model.encoder = common.image_encoder(tiny)
  c.model.decoder = common.decoder(tiny)
  c.model.proprio_dropout = 0.2
  c.model.action_time_sampler = "sqrt"
  c.model.sample_steps = 10
  c.optimizer = common.optimizer(lr=3e-3, warmup_steps=5 if tiny else 200, ema_decay=0.999)
  c.eval = common.policy_eval(tasks=list(tasks.TASKS), modes=["easy"], episodes=2 if tiny else 16,
                              videos_per_task=1, offline_windows=256)
  return c
