"""The longer documented experiment (README "Longer experiment"): the image baseline with the small-scale recipe
on all four tasks (reach, push, pick-and-place, stack) of the `standard` datasets, checkpointed along the way so
that success can be plotted against training steps. About 2 hours on 2 CPU cores; minutes on a GPU.

    make long        # = the commands below
    python -m vam.data.build --config experiments/datasets.py:standard --data_dir out/long/data
    python -m vam.train --config experiments/long.py --workdir out/long/baseline
    python -m vam.eval --workdir out/long/baseline --watch     # every checkpoint: success per task and mode

Variants: `default`, `tiny` (tests).
"""

import quickstart

from vam.sim import tasks

VARIANTS = quickstart.VARIANTS


def get_config(variant=None):
  """The quickstart baseline's recipe (model, optimizer, probe), longer, on all four tasks."""
  variant = variant or "default"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/long.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  tiny = variant == "tiny"
  c = quickstart.get_config(variant)
  c.total_steps, c.log_every, c.checkpoint_every = (20, 5, 10) if tiny else (16_000, 100, 2000)
  c.data_dir = "out/long/data"
  c.keep_checkpoints = 10  # every checkpoint stays for the success-versus-step curve
  c.data.mixture = {"sim_robot": 1.0, "sim_human": 0.0}  # the human data: statistics only
  c.optimizer.warmup_steps = 5 if tiny else 200
  c.optimizer.ema_decay = 0.999  # matched to 16k steps
  c.eval.tasks, c.eval.modes = list(tasks.TASKS), ["easy"]
  c.eval.episodes, c.eval.videos_per_task, c.eval.offline_windows = (2 if tiny else 16), 1, 256
  return c
