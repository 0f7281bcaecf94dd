"""Dataset build variants for `python -m vam.data.build --config experiments/datasets.py:<variant>`.

Variants:
  quickstart  what `make demo` builds: reach and push (the tasks a 2-core CPU can teach in minutes), easy
              mode, 160 demos per task and robot (arm6, gantry), 48 per task of the human hand; ~3 minutes
  tiny        a handful of episodes per dataset (tests)
  standard    all four tasks, a larger easy-mode mix (the longer experiment, experiments/long.py)
  hard        hard mode (randomised colours, lighting, distractors, camera jitter, table height)
  egodex      converts a folder of EgoDex-layout episodes (real human video + ARKit hand poses) into
              `human_hand` RLDS episodes: --config.datasets.egodex.source_dir=PATH (data/egodex, README
              "Real data")
  video_folder  converts a folder of plain videos (optional instructions) into image-only episodes for the
              video model: --config.datasets.video_folder.source_dir=PATH (data/video_folder)
  rlds_robot  standardises a robot dataset in RLDS (Open-X style) into an end-effector embodiment
              `rlds_<name>`: --config.datasets.rlds_robot.source_dir=PATH plus its spec (data/rlds_robot)
"""

import ml_collections

from vam.sim import tasks

VARIANTS = ("quickstart", "tiny", "standard", "hard", "egodex", "video_folder", "rlds_robot")


def _dataset(name, embodiments, train, val):
  return ml_collections.ConfigDict(dict(name=name, embodiments=list(embodiments), episodes_per_task=train,
                                        val_episodes_per_task=val))


def egodex_section():
  """Conversion settings of EgoDex-layout human video (vam/data/egodex.py documents each)."""
  return ml_collections.ConfigDict(dict(
      name="egodex", embodiments=["human_hand"],
      source_dir="",  # the folder holding <part>/<task>/<i>.mp4 + <i>.hdf5
      hands="right",  # right | left | both (both: one episode per hand, the same video)
      frame="first_camera",  # first_camera (the first frame's camera axes: x right, y up, -z forward) | world
      wrist_frame="keypoints",  # keypoints (from the knuckles: no ARKit axis convention) | transform
      wrist_rotation=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],  # wrist_frame=transform: our axes in ARKit's
      source_hz=30.0, control_hz=10.0,  # EgoDex's 30 Hz -> our 10 Hz control steps (nearest frame)
      min_confidence=0.5,  # steps whose least confident used joint is below this are masked out of training
      frame_tolerance=0,  # video frames may differ from pose rows by this many
      val_every=10))  # every 10th episode (sorted by path; fewer: the last) goes to the val split; 0: none


def video_folder_section():
  """Settings of a folder of plain videos (vam/data/video_folder.py documents each)."""
  return ml_collections.ConfigDict(dict(
      name="video_folder", embodiments=["human_hand"],
      source_dir="",  # videos at any depth; <stem>.txt beside one or instructions.json at the root: instructions
      embodiment="human_hand",  # what the videos show (the video model's embodiment token)
      source_hz=0.0,  # 0: each file's own frame rate
      control_hz=10.0,  # resampled to our control rate (nearest frame)
      clip_seconds=0.0,  # > 0: long videos become episodes of this length
      val_every=10))  # every 10th video (sorted by path; fewer: the last) goes to the val split; 0: none


def rlds_robot_section():
  """The standardisation spec of an RLDS robot dataset (vam/data/rlds_robot.py `Spec` documents each); the
  defaults read the common Open-X layout: 7-D delta end-effector actions (xyz, roll-pitch-yaw, gripper with +1
  open), a state of xyz + roll-pitch-yaw (+ gripper)."""
  return ml_collections.ConfigDict(dict(
      name="rlds_robot", embodiments=[],  # the robot is `embodiment`, not one of the simulated ones
      source_dir="",  # a TFDS dataset directory (features.json, array_record shards)
      embodiment="rlds_robot",  # rlds_<name>: its slot in the unified action space
      cameras={"front": "observation/image"},  # our camera -> source image key (add wrist: observation/wrist_image)
      state_key="observation/state", state_position=[0, 3], state_rotation=[3, 6], state_rotation_format="euler_xyz",
      state_gripper=-1, gripper_state_open=1.0, gripper_state_closed=0.0,  # -1: no measured opening
      action_key="action", action_convention="delta_eef", delta_frame="base",
      action_position=[0, 3], action_rotation=[3, 6], action_rotation_format="euler_xyz",
      action_gripper=6, gripper_open=1.0, gripper_closed=-1.0,
      instruction_key="language_instruction",  # or episode_metadata/<key>
      val_every=10))


def get_config(variant=None):
  variant = variant or "quickstart"
  if variant not in VARIANTS:
    raise ValueError(f"experiments/datasets.py: unknown variant {variant!r}; valid variants: {list(VARIANTS)}")
  if variant in ("egodex", "video_folder", "rlds_robot"):
    c = get_config("quickstart")
    c.variant = variant
    section = dict(egodex=egodex_section, video_folder=video_folder_section, rlds_robot=rlds_robot_section)[variant]()
    c.datasets = ml_collections.ConfigDict({variant: section})
    return c
  robot, human = dict(quickstart=((160, 16), (48, 8)), tiny=((2, 1), (2, 1)), standard=((250, 25), (100, 10)),
                      hard=((250, 25), (100, 10)))[variant]
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0
  c.mode = "hard" if variant == "hard" else "easy"
  c.split = "train"  # layout split of the world: train | unseen_positions | unseen_objects | unseen_scene
  c.push_layout = "adjacent"  # push's zone next to the block (a 9-17 cm push) | any (vam/sim/tasks.py)
  c.tasks = ["reach", "push"] if variant == "quickstart" else list(tasks.TASKS)
  c.image_size = (64, 64)
  c.cameras = ["front"]
  c.backend = "warp"
  c.physics = "auto"  # native MuJoCo substeps on a CPU (~4x faster builds), MJX on accelerators (vam/sim/native.py)
  c.batch_size = 128  # episodes simulated together (one warp batch; train and val share batches)
  c.only_successful = False  # keep failed expert episodes too (marked in episode_metadata.success)
  # DART-style demonstrations: noise of this std (rad / m) on the executed joint targets of `noisy_fraction` of
  # the robot episodes; the recorded actions stay the expert's, so they show how to recover from drift.
  c.action_noise = 0.0
  c.noisy_fraction = 0.5
  c.datasets = ml_collections.ConfigDict()
  c.datasets.sim_robot = _dataset("sim_robot", ("arm6", "gantry"), *robot)
  c.datasets.sim_human = _dataset("sim_human", ("human_hand",), *human)
  c.preview_episodes = 4
  return c
