"""The image-conditioned baseline policy (METHOD.md) on the quickstart datasets; what `make demo` trains.

    python -m vam.train --config experiments/quickstart.py --workdir out/demo/baseline
    python -m vam.train --config experiments/quickstart.py:tiny --workdir /tmp/w   # a seconds-long smoke run

Variants: `default` (minutes on a 2-core CPU) and `tiny` (tests: a very small model and batch).
"""

import ml_collections

import common

VARIANTS = ("default", "tiny")


def get_config(variant=None):
  variant = variant or "default"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/quickstart.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.variant = variant
  # 3000 steps: at 1800 of them arm6 reach is 0.56, at 3000 0.88 (README "The recipe").
  common.run(c, total_steps=40 if tiny else 3000, batch_size=8 if tiny else 32, log_every=5 if tiny else 100,
             checkpoint_every=20 if tiny else 1000)
  c.data = common.data(mixture={"sim_robot": 1.0, "sim_human": 0.0})  # its own robot demos (human: statistics)

  c.model = ml_collections.ConfigDict()
  c.model.name = "image_baseline"
  c.model.encoder = common.image_encoder(tiny)
  c.model.decoder = common.decoder(tiny)
  c.model.proprio_dropout = 0.2
  c.model.action_time_sampler = "sqrt"
  # The velocity form: the clean-chunk form (decoder.prediction="x0", action_loss="x0") fits better offline but
  # pushed worse in closed loop at 3000 steps (48 episodes: 0.42 / 0.31 -> 0.29 / 0.19; README "What the decoder
  # predicts").
  c.model.action_loss = "velocity"
  c.model.sample_steps = 10
  # Privileged-state supervision of the image features (training only): reach 0.44 -> 0.88 (arm6), README "Recipe".
  common.privileged_probe(c.model, 1.0)

  # Small flow policies want a high learning rate (README "Recipe": 3e-4 fits one batch 3x slower).
  c.optimizer = common.optimizer(lr=3e-3, warmup_steps=5 if tiny else 100, ema_decay=0.995)
  # Sampling at half the noise std (as the VAM): 48 episodes per cell, reach 0.88 / 0.92 -> 0.90 / 0.94, push
  # 0.29 / 0.31 -> 0.42 / 0.31 (arm6 / gantry; README "Sampling at inference").
  c.eval = common.policy_eval(noise_scale=0.5)
  return c
