"""Dataset build variants for `python -m vam.data.build --config experiments/datasets.py:<variant>`.

Variants:
  quickstart  both datasets, easy mode, 336 episodes; ~3-4 minutes on 2 CPU cores (what `make demo` builds)
  tiny        a handful of episodes per dataset (tests)
  standard    larger easy-mode mix for real runs
  hard        hard mode (randomised colours, lighting, distractors, camera jitter, table height)
"""

import ml_collections

from vam.sim import tasks

VARIANTS = ("quickstart", "tiny", "standard", "hard")


def _dataset(name, embodiments, train, val):
  return ml_collections.ConfigDict(dict(name=name, embodiments=list(embodiments), episodes_per_task=train,
                                        val_episodes_per_task=val))


def get_config(variant=None):
  variant = variant or "quickstart"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/datasets.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  per_task, val = dict(quickstart=(24, 4), tiny=(2, 1), standard=(250, 25), hard=(250, 25))[variant]
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0
  c.mode = "hard" if variant == "hard" else "easy"
  c.split = "train"  # layout split of the world: train | unseen_positions | unseen_objects | unseen_scene
  c.tasks = list(tasks.TASKS)
  c.image_size = (64, 64)
  c.cameras = ["front"]
  c.backend = "warp"
  c.batch_size = 128  # episodes simulated together (one warp batch; train and val share batches)
  c.only_successful = False  # keep failed expert episodes too (marked in episode_metadata.success)
  c.datasets = ml_collections.ConfigDict()
  c.datasets.sim_robot = _dataset("sim_robot", ("arm6", "gantry"), per_task, val)
  c.datasets.sim_human = _dataset("sim_human", ("human_hand",), per_task, val)
  c.preview_episodes = 4
  return c
