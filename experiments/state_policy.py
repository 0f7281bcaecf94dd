"""The diagnostic ladder's privileged-state rung (README "Diagnostic ladder"): the policies' flow-matching
action decoder conditioned on the simulator's true task state (target and object positions, task one-hot)
instead of images. If it does not reach its tasks in closed loop, the action representation, the data or the
closed loop is wrong -- not vision.

    python -m vam.train --config experiments/state_policy.py --workdir out/ladder/state
    python -m vam.eval --workdir out/ladder/state

Variants: `default` (reach and push, robots only) and `tiny` (tests).
"""

import ml_collections

import common

from vam.sim import tasks

VARIANTS = ("default", "tiny")


def get_config(variant=None):
  variant = variant or "default"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/state_policy.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.variant = variant
  # 10k steps, not 3k: push 0.06 / 0.50 -> 0.38 / 0.88 (arm6 / gantry; README "Privileged state").
  common.run(c, total_steps=40 if tiny else 10_000, batch_size=8 if tiny else 64, log_every=5 if tiny else 100,
             checkpoint_every=20 if tiny else 2500)
  c.data = common.data(context_frames=1, mixture={"sim_robot": 1.0})
  c.data.proprio_eef = True  # gantry push 0.25 -> 0.50 (README "Privileged state")
  c.model = ml_collections.ConfigDict()
  c.model.name = "state_policy"
  c.model.privileged_dim = tasks.PRIVILEGED_DIM
  c.model.use_text = False  # the task is in the privileged state's one-hot
  c.model.encoder = dict(width=32 if tiny else 128, heads=2 if tiny else 4, text_len=32, text_depth=1)
  # The clean chunk, its loss in x0 space: push 0.19 / 0.38 -> 0.59 / 0.66 at 3000 steps (README "What the decoder
  # predicts").
  c.model.decoder = common.decoder(tiny, prediction="x0")
  c.model.proprio_dropout = 0.0
  c.model.action_time_sampler = "sqrt"
  c.model.action_loss = "x0"  # vam.flow.LOSS_SPACES
  c.model.sample_steps = 10
  c.optimizer = common.optimizer(lr=3e-3, warmup_steps=5 if tiny else 100, ema_decay=0.995)
  # Replanning every 4 steps, not 8: push 0.38 / 0.88 -> 0.69 / 0.94 at 10k steps (README "Privileged state").
  c.eval = common.policy_eval(replan_every=4)
  return c
