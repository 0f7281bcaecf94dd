"""Config sections shared by the experiment files (import it from a sibling config: `import common`)."""

import ml_collections

from vam.sim import tasks


VIDEO_MIXTURE = {"sim_robot": 0.5, "sim_human": 0.5}  # stage 1 learns from every video alike


def data(context_frames: int = 2, future_frames: int = 0, mixture=None) -> ml_collections.ConfigDict:
  """`config.data`: which datasets (under `config.data_dir`), their weights and the window shapes."""
  d = ml_collections.ConfigDict()
  # dataset name -> sampling weight: the robots' own demos are what the closed loop is judged on
  d.mixture = mixture or {"sim_robot": 0.75, "sim_human": 0.25}
  d.version = "1.0.0"
  d.split = "train"
  d.camera = "front"
  d.embodiments = ["human_hand", "arm6", "gantry"]  # the unified action space's slots, in order
  d.context_frames = context_frames  # H_o (latent frames for video models)
  d.future_frames = future_frames  # H_f (the video model's targets; 0 for policies)
  # Latent frames are temporal_factor * frame_stride control steps apart (10 Hz): > 1 gives the video model a
  # longer horizon from as many frames (vam/input/windows.py); a VAM adopts its video model's.
  d.frame_stride = 1
  d.action_horizon = 16  # H_a (the closed loop executes eval.replan_every of them)
  d.proprio_dim = 17  # the widest proprio in the mixture (arm6: 17)
  d.norm_mode = "quantile"  # quantile | mean_std (vam/embodiment.py Normalizer)
  d.proprio_eef = False  # the proprio also carries the end-effector pose (vam/embodiment.py Normalizer)
  d.norm_per_step = False  # action statistics per chunk step (the next step's motion at full resolution)
  d.pad = "repeat"  # chunk steps past an episode's end: repeat its last action (hold) | mask
  # Demos whose scripted expert started over more often than this are left out (-1: keep all). A restart
  # (a pushed block slid off the pusher's line: lift, go round, push again) is a second mode from the same
  # states, which small policies blur into hovering.
  d.max_restarts = -1
  d.demos_per_task = 0  # > 0: only the first N episodes of each (embodiment, task) (experiments/demos.py)
  d.only_embodiments = []  # episodes of these embodiments only (empty: all; experiments/ablation.py, finetune.py)
  d.max_episodes = 0  # > 0: only the first N episodes kept by the filters above
  # An episode that cannot be read (corrupt record, undecodable step, NaN actions): False stops training with an
  # error naming it; True replaces its windows by the next readable episode's, warns once per episode, and
  # counts them (metric skipped_windows).
  d.skip_bad_episodes = False
  d.balance = "task"  # task: every (embodiment, task) of a dataset equally likely | window: by episode length
  # task -> relative share of its (embodiment, task) groups under balance='task'; e.g. task_weights.push=3.0
  d.task_weights = {t: 1.0 for t in tasks.TASKS}
  d.use_latents = False  # read latents precomputed by python -m vam.train.latents instead of encoding frames
  d.workers = 0  # grain worker processes (0: load in the training process)
  d.prefetch = 2
  d.cache_mb = 256  # decoded-episode cache per dataset (and per worker)
  return d


def mapping(directions=()) -> ml_collections.ConfigDict:
  """`config.data.mapping`: mutual imitation (vam/mapping.py `Mapping`); no directions = off."""
  m = ml_collections.ConfigDict()
  m.directions = list(directions)  # human_to_robot and/or robot_to_human
  m.frame_rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # R_h, row-major
  m.frame_offset = [0.0, 0.0, 0.0]
  m.origin = "absolute"  # the simulated hand shares the robots' world frame; `relative` for human video
  m.anchor = "grasp"  # grasp | wrist
  m.ik_iters = 20
  return m


def image_encoder(tiny: bool = False, kind: str = "conv") -> dict:
  """`config.model.encoder` of the image policies (vam/models/encoders.py): `conv` (ResNet-style with GroupNorm,
  spatial-softmax keypoints, random-shift augmentation) or `vit`, and the instruction encoder's sizes."""
  return dict(kind=kind, width=32 if tiny else 128, depth=1 if tiny else 2, heads=2 if tiny else 4,
              patch=16 if tiny else 8, channels=[8, 16] if tiny else [16, 32, 64], groups=4 if tiny else 8,
              readout="keypoints", keypoints=8 if tiny else 32, shift=4, text_len=32 if tiny else 64, text_depth=1)


def decoder(tiny: bool = False, global_cond: bool = False, gate_init: float = 0.0,
            prediction: str = "velocity") -> dict:
  """`config.model.decoder`: the flow-matching action decoder's sizes (vam/models/action_decoder.py) and what it
  predicts: the velocity, or the clean chunk (`x0`, paired with `config.model.action_loss='x0'`: the state
  policy's push 0.19 / 0.38 -> 0.59 / 0.66 at 3000 steps, the image baseline's no better; README "What the
  decoder predicts")."""
  return dict(width=32 if tiny else 128, depth=1 if tiny else 3, heads=2 if tiny else 4, mlp_ratio=4,
              time_dim=32 if tiny else 128, bilinear_rank=4 if tiny else 16, global_cond=global_cond,
              gate_init=gate_init, prediction=prediction, stacked_memory_kv=True)


def vam_model(tiny: bool, video_workdir: str = "out/demo/video") -> ml_collections.ConfigDict:
  """`config.model` of the video-action model (vam/models/vam.py) on a frozen video model from `video_workdir`."""
  m = ml_collections.ConfigDict()
  m.name = "vam"
  m.video_workdir = video_workdir  # trained by experiments/video_pretrain.py; frozen
  m.video_step = 0  # 0: its newest checkpoint
  m.video = ml_collections.ConfigDict()  # adopted from the video run at start
  m.layer = 2 if tiny else 3  # k (METHOD.md: ~2/3 of the depth; the quickstart DiT has 4 blocks)
  m.decoder = decoder(tiny)
  m.tau_v_sampler = "uniform"  # training distribution of tau_v (independent of tau_a)
  m.tau_v_inference_fraction = 0.5  # ... except this fraction of samples, trained at the inference tau_v
  m.feature_mlp = True  # a trainable per-token MLP on the frozen video features (README "Recipe")
  # Spatial-softmax keypoints per frame over the feature grid, as more decoder tokens (0: off). 8 lifts the demo
  # VAM's reach 0.52 / 0.65 -> 0.79 / 0.79 and push 0.08 / 0.00 -> 0.12 / 0.19 (arm6 / gantry, 48 episodes each)
  # and halves its state-estimate error (3.7 -> 1.9 cm); results/vam_keypoints.json.
  m.keypoints = 2 if tiny else 8
  # Within-token placement: 1 = a learned offset; s > 1 = s x s scored sub-cells per token (a 16 x 16 score map
  # at 4). A fresh keypoint probe on block 3 put the target 2.5 cm off with offsets, 2.8 with 4 x 4 sub-cells
  # (results/push_budget.json `keypoint_probe_subcells`).
  m.keypoint_subcells = 1
  m.motion_tokens = False  # tokens of what moved between the newest context frame and each future frame
  m.context_dropout = 0.0  # training: hide the context from the decoder on this fraction of informative samples
  # Keypoints per frame on the latent grid (the tokens unpatchified to their 4 x 4 cells; 0: off). 8 took the demo
  # VAM's held-out action error from 0.138 to 0.114 (1500 steps, the future oracle's context-only row) and its
  # closed loop to reach 0.94 / 0.94, push 0.31 / 0.22 (arm6 / gantry, 32 episodes per cell; README).
  m.grid_keypoints = 2 if tiny else 8
  m.grid_channels = 32
  m.future_state_aux = 0.0  # the future-state probe: regress the proprio at each future frame (0: off) ...
  m.future_state_feed = False  # ... and give the decoder its estimate
  m.future_state_privileged = False  # diagnostic: feed the true future proprio instead (no inference path)
  m.future_state_path = "memory"  # memory (cross-attention tokens) | proprio (beside the proprio)
  privileged_probe(m, 0.0)
  m.proprio_dropout = 0.2
  m.action_time_sampler = "sqrt"
  m.action_loss = "velocity"  # vam.flow.LOSS_SPACES; "x0" pairs with decoder.prediction="x0" (README)
  m.sample_steps = 10  # action Euler steps at inference
  m.tau_v = 1.0  # inference: 1 = a single forward of the first k blocks on pure-noise future latents
  m.video_steps = 4  # video Euler steps from 1 down to tau_v when tau_v < 1
  m.mapped_weight = 1.0  # loss = own-action loss + mapped_weight * mapped-action loss
  return m


def privileged_probe(model: ml_collections.ConfigDict, weight: float, feed: bool = False) -> None:
  """Sets the auxiliary privileged-state probe of `config.model` (vam/models/layers.py `PrivilegedProbe`):
  training regresses the simulator's task state from the observation features with this loss weight; with
  `feed` the decoder also reads the probe's estimate (one token; the true state is never read at inference)."""
  model.privileged_dim = tasks.PRIVILEGED_DIM
  model.privileged_aux = weight
  model.privileged_feed = feed


def policy_eval(**overrides) -> ml_collections.ConfigDict:
  """`config.eval` of the policies (python -m vam.eval; vam/eval/defaults.py lists every key): both robots on
  the demo's tasks (reach, push), easy worlds of the seen layout, 16 episodes per cell (one batch of 32 per
  robot), joint-delta control executing 8 of each 16-step chunk."""
  from vam.eval import defaults  # pylint: disable=g-import-not-at-top
  return defaults.get(**dict(dict(tasks=["reach", "push"], modes=["easy"], splits=["train"], episodes=16,
                                  num_envs=32, videos_per_task=1), **overrides))


def optimizer(lr: float, warmup_steps: int, ema_decay: float = 0.999, weight_decay: float = 1e-4,
              trainable: str = "") -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.name = "adamw"
  o.lr = lr
  o.schedule = "cosine"
  o.warmup_steps = warmup_steps
  o.final_lr_fraction = 0.1
  o.b1 = 0.9
  o.b2 = 0.95
  o.weight_decay = weight_decay
  o.grad_clip = 1.0
  o.ema_decay = ema_decay
  o.trainable = trainable  # regex over parameter paths; only matches train ('' = all but the model's frozen ones)
  return o


def run(c: ml_collections.ConfigDict, *, total_steps: int, batch_size: int, log_every: int, checkpoint_every: int,
        data_dir: str = "out/demo/data") -> None:
  """The run-level keys every training config has."""
  c.seed = 0
  c.data_dir = data_dir  # built by `python -m vam.data.build --config experiments/datasets.py:quickstart`
  c.total_steps = total_steps
  c.batch_size = batch_size  # global; split over the mesh's data axes and over hosts
  c.log_every = log_every
  c.checkpoint_every = checkpoint_every
  c.keep_checkpoints = 3  # the newest N ...
  c.keep_every = 0  # ... plus every M-th step (0: none)
  c.init_from = ""  # workdir of a trained model to start from (fine-tuning); "" = from scratch
  c.init_from_step = 0  # its step (0: the newest)
  # Parallelism and memory (README "Scaling out"): mesh axis sizes (-1 = all remaining devices; `sequence`
  # splits the video DiT's tokens), the matmul dtype (parameters stay float32), and micro-batches per step.
  c.mesh = {"data": -1, "fsdp": 1, "tensor": 1, "sequence": 1}
  c.compute_dtype = "float32"  # float32 | bfloat16
  # XLA options of the compiled train step on CPU (ignored elsewhere; vam/train/train.py `compiler_options`).
  # XLA's default hands convolutions and elementwise fusions to YNNPACK, which runs this repo's small convs and
  # norms slowly: matmuls only is 1.5x faster per step for the baseline on this 2-core AVX-512 CPU
  # (benchmarks.step: current vs old recipe). {} = XLA's default.
  c.compiler_options = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
  c.grad_accum_steps = 1  # the global batch is split into this many sequential micro-batches
  c.checkpoint_async = True
