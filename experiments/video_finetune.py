"""Adapting a pretrained video model to robot-only video (METHOD.md: LoRA, the base frozen; full
fine-tuning as an option).

    python -m vam.train --config experiments/video_finetune.py --workdir out/demo/video_ft \
        --config.init_from=out/demo/video
    python -m vam.train --config experiments/video_finetune.py:full ...    # every parameter trains

The model's architecture is adopted from the `init_from` run (except the LoRA rank/alpha and remat set
here); LoRA adapters start at zero, so step 0 reproduces the pretrained model exactly.

Variants: `lora` (default), `full`, `tiny` (tests: LoRA on the tiny pretrained model).
"""

import ml_collections

import common

from vam.eval import defaults as eval_defaults

VARIANTS = ("lora", "full", "tiny")


def get_config(variant=None):
  variant = variant or "lora"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/video_finetune.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.variant = variant
  common.run(c, total_steps=10 if tiny else 500, batch_size=8 if tiny else 16, log_every=5 if tiny else 25,
             checkpoint_every=10 if tiny else 250)
  c.init_from = "out/demo/video"  # the pretrained video model (experiments/video_pretrain.py)
  c.data = common.data(context_frames=2, future_frames=2, mixture={"sim_robot": 1.0})  # robot video only
  c.data.use_latents = False

  c.model = ml_collections.ConfigDict()  # replaced by the init_from run's model, except:
  c.model.name = "video_dit"
  c.model.dit = dict(lora_rank=0 if variant == "full" else (4 if tiny else 32), lora_alpha=0.0, remat="none")
  c.model.sample_steps = 20

  lora = variant != "full"
  c.optimizer = common.optimizer(lr=(1e-3 if lora else 1e-4), warmup_steps=5 if tiny else 50,
                                 trainable="lora_" if lora else "")
  c.eval = eval_defaults.get(video_clips=16 if tiny else 64, video_batch=8 if tiny else 16,
                             video_sample_steps=4 if tiny else 20, tau_buckets=4 if tiny else 8,
                             video_samples=2 if tiny else 4)
  return c
