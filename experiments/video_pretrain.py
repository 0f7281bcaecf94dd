"""Stage 1 of METHOD.md: the latent video flow-matching transformer, pretrained on every video we have
(robot and human, weighted mixture), conditioned on the instruction and the embodiment.

    python -m vam.train --config experiments/autoencoder.py --workdir out/demo/autoencoder
    python -m vam.train.latents --autoencoder out/demo/autoencoder --data_dir out/demo/data   # optional
    python -m vam.train --config experiments/video_pretrain.py --workdir out/demo/video
    python -m vam.eval --workdir out/demo/video     # PSNR/SSIM vs copy-last-frame, loss by tau_v, videos

H_o clean context latent frames + H_f noisy future latent frames at tau_v ~ logit-normal; the loss is on the
future latents only. The autoencoder comes frozen from `model.autoencoder_workdir` (its sizes are adopted
from that run). `data.use_latents=True` reads latents stored by `vam.train.latents` (they must come from
the same autoencoder); False encodes frames on the fly.

Variants: `quickstart` (minutes on a 2-core CPU; latent frames 4 control steps apart), `stride4` (the same, 4000
steps: the video model of experiments/demos.py), `tiny` (tests), and model sizes for real runs and `make bench`:
`small` (~30M DiT params), `base` (~130M).
"""

import ml_collections

import common

from vam.eval import defaults as eval_defaults
from vam.sim import tasks

VARIANTS = ("quickstart", "stride4", "tiny", "small", "base")
DIT = dict(  # width, depth, heads
    tiny=dict(width=32, depth=2, heads=2),
    quickstart=dict(width=128, depth=4, heads=4),
    small=dict(width=384, depth=12, heads=6),
    base=dict(width=768, depth=12, heads=12),
)


def get_config(variant=None):
  variant = variant or "quickstart"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/video_pretrain.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  requested, variant = variant, "quickstart" if variant == "stride4" else variant
  tiny = variant == "tiny"
  small_run = variant in ("tiny", "quickstart")
  c = ml_collections.ConfigDict()
  c.variant = requested
  common.run(c, total_steps=dict(quickstart=600, tiny=20).get(variant, 100_000),
             batch_size=8 if tiny else (16 if small_run else 256), log_every=5 if tiny else 25,
             checkpoint_every=10 if tiny else (200 if small_run else 2000))
  # H_o = 2 context and H_f = 2 future latent frames at quickstart scale (METHOD.md: H_o = 5).
  c.data = common.data(context_frames=2 if small_run else 5, future_frames=2 if small_run else 4,
                       mixture=common.VIDEO_MIXTURE)
  c.data.use_latents = variant == "quickstart"

  c.model = ml_collections.ConfigDict()
  c.model.name = "video_dit"
  c.model.autoencoder_workdir = "out/demo/autoencoder"  # trained by experiments/autoencoder.py; frozen here
  c.model.autoencoder_step = 0  # 0: its newest checkpoint
  # Adopted from the autoencoder's run at start (listed so that configs are complete without it).
  c.model.autoencoder = dict(patch=4, width=16 if tiny else 64, blocks=1 if tiny else 2,
                             latent_channels=4 if tiny else 8, temporal_factor=1, latent_l2=1e-3)
  c.model.text = dict(width=32 if tiny else 64, depth=1, heads=2, text_len=32 if tiny else 64)
  # Quickstart: 4x4 latent patches (16 tokens per 16x16 latent frame), 4x cheaper than 2x2 patches and as
  # good at predicting the future on the quickstart data (README); real runs use 2x2.
  c.model.dit = dict(DIT[variant], mlp_ratio=4, patch=4 if variant == "quickstart" else 2,
                     time_dim=32 if tiny else 128, lora_rank=0, lora_alpha=0.0,
                     scan_layers=not small_run, remat="none" if small_run else "full")
  c.model.time_sampler = "logit_normal"  # tau_v ~ sigmoid(N(time_mean, time_std))
  # Shifted towards high noise: the mean future (tau ~ 1) is what PSNR and the VAM (tau_v = 1) read.
  c.model.time_mean = 1.0
  c.model.time_std = 1.0
  c.model.time_uniform = 0.1  # this fraction of taus is uniform on [0, 1] (the logit-normal misses tau ~ 1)
  c.model.sample_steps = 20  # Euler steps when sampling future frames
  c.model.predict_residual = True  # the flow models (future - last context latent) / its calibrated RMS
  c.model.velocity_skip = True  # velocity = best context-free velocity of standardised data + the DiT's output
  # Privileged-state supervision of the hidden states the VAM reads (simulated data only; off by default):
  # vam/models/video_model.py, README "What the features know about the task".
  c.model.privileged_dim = tasks.PRIVILEGED_DIM
  c.model.privileged_aux = 0.0
  c.model.privileged_layer = 2 if tiny else 3  # = the VAM's config.model.layer (experiments/common.py vam_model)

  c.optimizer = common.optimizer(lr=1e-3 if tiny else 5e-4, warmup_steps=5 if tiny else 100)
  c.eval = eval_defaults.get(video_clips=16 if tiny else 64, video_batch=8 if tiny else 16,
                             video_sample_steps=4 if tiny else 20, tau_buckets=4 if tiny else 8,
                             video_samples=2 if tiny else 4)
  if variant == "quickstart":
    # Motion worth predicting: latent frames 4 steps (0.4 s) apart, so the future spans +4 and +8 steps -- the 8
    # steps of each chunk the closed loop executes -- where copy-last-frame is a weak baseline (README "Does the
    # video model predict?"). At stride 1 the future (+1, +2 steps) told the VAM's decoder nothing its context
    # did not: a linear fit of the executed actions from the true joint positions at +1 and +2 erred as much as
    # from the current state, at +4 and +8 a third as much (README "Does the decoder read the future?").
    c.data.frame_stride = 4
  if requested == "stride4":
    # 4000 steps: the gain over copy-last still grew at 3000-4000 (README). The stage 1 of `make demos`.
    c.total_steps, c.checkpoint_every, c.keep_checkpoints = 4000, 1000, 10
  return c
