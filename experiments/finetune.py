"""Fine-tuning a pretrained video-action model on one robot with N demos (METHOD.md's headline experiment:
success versus the number of action-labelled demos), or the `scratch` ablation (no action pretraining).

    python -m vam.train --config experiments/finetune.py --workdir out/ft_arm6_16 \
        --config.init_from=out/demo/vam --config.data.max_episodes=16
    python -m vam.train --config experiments/finetune.py:scratch --workdir out/scratch_arm6_16 \
        --config.model.video_workdir=out/demo/video --config.data.max_episodes=16

`init_from` adopts the pretrained VAM's model (its frozen video model included); `scratch` starts the action
decoder from random weights on the same frozen video model. Only robot data of `data.only_embodiments` is used.

Variants: `pretrained` (default), `scratch`, `tiny` (tests).
"""

import ml_collections

import common

VARIANTS = ("pretrained", "scratch", "tiny")


def get_config(variant=None):
  variant = variant or "pretrained"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/finetune.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.variant = variant
  common.run(c, total_steps=10 if tiny else 300, batch_size=8 if tiny else 32, log_every=5 if tiny else 25,
             checkpoint_every=10 if tiny else 150)
  c.init_from = "" if variant == "scratch" else "out/demo/vam"  # a VAM from experiments/mutual_pretrain.py
  c.data = common.data(context_frames=2, future_frames=2, mixture={"sim_robot": 1.0})
  c.data.use_latents = not tiny
  c.data.only_embodiments = ["arm6"]  # the robot being adapted to
  c.data.max_episodes = 16  # N demos (0: all)
  c.data.mapping = common.mapping([])  # one robot's own data: nothing to map

  # With init_from, the model section is replaced by the pretrained VAM's; for `scratch` it is this one.
  c.model = common.vam_model(tiny)
  common.privileged_probe(c.model, 1.0)  # as experiments/mutual_pretrain.py: scratch differs only in its init

  c.optimizer = common.optimizer(lr=1e-3 if tiny else 1e-4 if variant == "pretrained" else 3e-4,
                                 warmup_steps=5 if tiny else 50)
  c.eval = common.policy_eval(embodiments=["arm6"], tau_v_values=[0.0, 0.5, 1.0], noise_scale=0.5)
  return c
