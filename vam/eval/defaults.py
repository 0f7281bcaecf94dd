"""Default evaluation settings (`config.eval` of an experiment; `--config.eval.key=value` at eval time)."""

import ml_collections

from vam.sim import tasks


def get(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.embodiments = ["arm6", "gantry"]  # robots to roll out (they execute their joint-target slot)
  c.tasks = list(tasks.TASKS)
  c.modes = list(tasks.MODES)  # easy | hard
  c.splits = list(tasks.SPLITS)  # train (seen) | unseen_positions | unseen_objects | unseen_scene
  c.episodes = 8  # per cell (embodiment x task x mode x split)
  c.num_envs = 64  # episodes simulated together (one compiled rollout)
  c.control = "joints"  # the slot robots execute: joints (joint-target deltas) | eef (pose through differential IK)
  c.replan_every = 8  # K: actions of each chunk executed before replanning
  c.sample_steps = 10  # Euler steps of the action flow
  c.temporal_ensemble = False  # ACT's temporal ensembling of overlapping chunks (needs replan_every = 1)
  c.ensemble_decay = 0.01  # its weights exp(decay * age of the plan)
  c.noise_scale = 1.0  # the action flow's starting noise std (a sampling temperature; vam.flow.initial_noise)
  c.seed = 0  # world seeds of the cells (fixed, disjoint from the datasets')
  c.push_layout = "adjacent"  # where push's zone is (vam/sim/tasks.py PUSH_LAYOUTS): the training data's layout
  c.backend = "warp"
  c.physics = "auto"  # who steps the physics (vam/sim/env.py EnvConfig.physics): native on a CPU, MJX elsewhere
  c.videos_per_task = 2  # rollout videos per embodiment and task (a success and a failure when there are both)
  c.offline_windows = 256  # held-out windows for the offline action error (0: skip)
  c.offline_batch = 64
  c.tau_v_values = [1.0]  # video-action models: offline action error at each of these inference tau_v
  # Video-action models: the decoder read with the held-out windows' true future noised to each of these tau_v
  # beside the context alone and the inference path (vam/eval/offline.py `future_oracle`; 0 is always measured)
  c.oracle_tau_v = [0.0, 0.25, 0.5]
  c.foresight_tau_v = 0.0  # `--agent=foresight`: the tau_v the expert-rendered future is read at
  # Video models (autoencoder, video DiT): held-out (val split) clips.
  c.video_clips = 64  # clips for PSNR/SSIM of predicted (or reconstructed) future frames
  c.video_batch = 16
  c.video_sample_steps = 20  # Euler steps of the video flow
  c.tau_buckets = 8  # validation flow loss at this many fixed tau_v (bucket centres), fixed noise
  c.video_samples = 4  # side-by-side predicted-vs-real videos in the report
  c.update(overrides)
  return c
