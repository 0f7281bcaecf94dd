"""The video autoencoder (METHOD.md, stage 1): frames -> a small-channel latent, trained on the video mixture
(robot and human), reporting reconstruction PSNR. The video model (experiments/video_pretrain.py) freezes it.

    python -m vam.train --config experiments/autoencoder.py --workdir out/demo/autoencoder
    python -m vam.eval --workdir out/demo/autoencoder         # reconstruction PSNR/SSIM on held-out clips

Variants: `quickstart` (minutes on a 2-core CPU: 64x64 frames -> 16x16x8 latents), `tiny` (tests),
`standard` (8x spatial, 16 channels, 2x temporal: METHOD.md's shape at small scale).
"""

import ml_collections

import common

from vam.eval import defaults as eval_defaults

VARIANTS = ("quickstart", "tiny", "standard")


def get_config(variant=None):
  variant = variant or "quickstart"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/autoencoder.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.variant = variant
  common.run(c, total_steps=dict(quickstart=250, tiny=20, standard=20_000)[variant],
             batch_size=8 if tiny else 16, log_every=5 if tiny else 25, checkpoint_every=10 if tiny else 250)
  tf = 2 if variant == "standard" else 1
  # Each window gives 2 latent frames' worth of frames.
  c.data = common.data(context_frames=2 * tf, mixture=common.VIDEO_MIXTURE)

  c.model = ml_collections.ConfigDict()
  c.model.name = "autoencoder"
  c.model.autoencoder = dict(patch=8 if variant == "standard" else 4, width=dict(tiny=16).get(variant, 64),
                             blocks=1 if tiny else 2, latent_channels=16 if variant == "standard" else (4 if tiny else 8),
                             temporal_factor=tf, latent_l2=1e-3)

  c.optimizer = common.optimizer(lr=1e-3, warmup_steps=5 if tiny else 50, ema_decay=0.99, weight_decay=0.0)
  c.eval = eval_defaults.get(video_clips=16 if tiny else 64, video_batch=8 if tiny else 16)
  return c
