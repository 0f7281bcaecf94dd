"""RLDS episodes in TFDS array_record files, and the builder base class the datasets in `data/` share.

Schema (see DESIGN.md, "Dataset contract"). Every feature is a plain `Tensor`/`Scalar`/`Text`, so
datasets build and read without TensorFlow. Embodiments in one dataset can have different native
action/proprio sizes: those vectors are zero-padded to the dataset's widest embodiment and the true
sizes are stored in `episode_metadata/action_dim` and `state_dim`.

`steps/eef_target` is the end-effector pose the step's action commands (forward kinematics of its joint
targets; a servoed arm reaches it only later): the target an end-effector controller must track.
`steps/observation/privileged` is the simulator's true task state (target, object positions, task one-hot):
for the privileged-state policy of the diagnostic ladder, never an input of the vision policies.

Cameras: `steps/observation/image_<camera>` uint8 HxWx3; `episode_metadata/camera_<camera>_intrinsics`
is the 3x3 pinhole matrix in pixels and `..._extrinsics` the 4x4 camera-to-world pose with MuJoCo's
camera axes (x right, y up, looking along -z).
"""

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from vam.data import stats as stats_lib
from vam.sim import embodiments, rollout as rollout_lib, tasks

VERSION = "1.0.0"
SPLITS = ("train", "val")
HAND_KEYPOINTS_DIM = 24


def _f32(shape):
  return tfds.features.Tensor(shape=shape, dtype=np.float32)


def features(embodiment_names, cameras, image_size, human: bool) -> tfds.features.FeaturesDict:
  embs = [embodiments.EMBODIMENTS[n] for n in embodiment_names]
  action_width = max(len(e.action_names) for e in embs)
  w, h = image_size
  observation = {f"image_{c}": tfds.features.Tensor(shape=(h, w, 3), dtype=np.uint8) for c in cameras}
  observation.update(state=_f32((action_width,)), eef=_f32((9,)), gripper=_f32((1,)),
                     privileged=_f32((tasks.PRIVILEGED_DIM,)))
  if human:
    observation.update(hand_keypoints=_f32((HAND_KEYPOINTS_DIM,)), thumb_knuckle=_f32((3,)))
  metadata = dict(
      embodiment=tfds.features.Text(), task=tfds.features.Text(), mode=tfds.features.Text(),
      world_split=tfds.features.Text(), seed=tfds.features.Scalar(dtype=np.int64),
      success=tfds.features.Scalar(dtype=np.bool_), restarts=tfds.features.Scalar(dtype=np.int32),
      action_dim=tfds.features.Scalar(dtype=np.int32),
      state_dim=tfds.features.Scalar(dtype=np.int32))
  for c in cameras:
    metadata[f"camera_{c}_intrinsics"] = _f32((3, 3))
    metadata[f"camera_{c}_extrinsics"] = _f32((4, 4))
  return tfds.features.FeaturesDict({
      "steps": tfds.features.Dataset({
          "observation": observation,
          "action": _f32((action_width,)),
          "eef_target": _f32((9,)),
          "language_instruction": tfds.features.Text(),
          "is_first": tfds.features.Scalar(dtype=np.bool_),
          "is_last": tfds.features.Scalar(dtype=np.bool_),
          "is_terminal": tfds.features.Scalar(dtype=np.bool_),
          "reward": tfds.features.Scalar(dtype=np.float32),
          "discount": tfds.features.Scalar(dtype=np.float32),
      }),
      "episode_metadata": metadata,
  })


def _pad(x, width):
  x = np.asarray(x, np.float32)
  return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])


def to_example(ep: rollout_lib.Episode, action_width: int, cameras, human: bool) -> dict:
  """A recorded episode -> one RLDS example (a dict TFDS can encode)."""
  s, T = ep.steps, ep.length
  action, state = _pad(s["action"], action_width), _pad(s["state"], action_width)
  steps = []
  for t in range(T):
    obs = {f"image_{c}": s["images"][t, i] for i, c in enumerate(cameras)}
    obs.update(state=state[t], eef=s["eef"][t].astype(np.float32), gripper=s["gripper"][t].astype(np.float32),
               privileged=s["privileged"][t].astype(np.float32))
    if human:
      obs.update(hand_keypoints=s["hand_keypoints"][t].astype(np.float32),
                 thumb_knuckle=s["thumb_knuckle"][t].astype(np.float32))
    last = t == T - 1
    steps.append(dict(observation=obs, action=action[t], eef_target=s["eef_target"][t].astype(np.float32),
                      language_instruction=ep.instruction, is_first=t == 0,
                      is_last=last, is_terminal=bool(last and ep.success), reward=float(s["reward"][t]),
                      discount=1.0))
  meta = dict(embodiment=ep.embodiment, task=ep.task, mode=ep.mode, world_split=ep.split, seed=ep.seed,
              success=ep.success, restarts=ep.restarts, action_dim=s["action"].shape[-1],
              state_dim=s["state"].shape[-1])
  for c in cameras:
    cam = ep.metadata["cameras"][c]
    meta[f"camera_{c}_intrinsics"] = np.array([[cam["fx"], 0, cam["cx"]], [0, cam["fy"], cam["cy"]], [0, 0, 1]],
                                              np.float32)
    pose = np.eye(4, dtype=np.float32)
    pose[:3, :3], pose[:3, 3] = cam["rotation"], cam["position"]
    meta[f"camera_{c}_extrinsics"] = pose
  return dict(steps=steps, episode_metadata=meta)


class SimBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the simulated datasets: rolls the scripted experts out in MJX and records RLDS episodes.

  Subclasses set `EMBODIMENTS` (the default set) and `HUMAN`. The generation settings (a section of
  `experiments/datasets.py`) come in through the constructor; reading needs none of this code.
  """

  RELEASE_NOTES = {VERSION: "Initial release: scripted-expert episodes from the vam MJX worlds."}
  VERSION = tfds.core.Version(VERSION)
  EMBODIMENTS: tuple = ()
  HUMAN = False

  def __init__(self, *, generation=None, **kwargs):
    self.generation = generation
    self._stats, self._pending, self._simulated = {}, {}, set()
    super().__init__(**kwargs)

  @property
  def _embodiments(self):
    return list(self.generation.dataset.embodiments) if self.generation else list(self.EMBODIMENTS)

  def _cfg(self, key, default):
    return self.generation[key] if self.generation else default

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features(self._embodiments, self._cfg("cameras", ["front"]), tuple(self._cfg("image_size", (64, 64))),
                          self.HUMAN),
        description=self.__doc__,
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in SPLITS}

  def _items(self, name):
    """(split, task, seed) of every episode of an embodiment; seeds are disjoint across splits."""
    g, d = self.generation, self.generation.dataset
    e_i = self._embodiments.index(name)
    items = []
    for split, per_task in zip(SPLITS, (d.episodes_per_task, d.val_episodes_per_task)):
      base = g.seed * 10_000_000 + SPLITS.index(split) * 5_000_000 + e_i * 100_000
      items += [(split, t, base + t_i * 10_000 + k) for t_i, t in enumerate(g.tasks) for k in range(per_task)]
    # Task by task (both splits together): a batch holds one task as far as sizes allow, so a batch of short
    # episodes stops early (vam.sim.rollout) instead of waiting for the longest task's horizon.
    return sorted(items, key=lambda item: g.tasks.index(item[1]))

  def _generate_examples(self, split: str):
    """Yields `split`'s episodes. Both splits are simulated together in full batches (val is small, so
    its episodes fill the train batches' tail instead of costing a padded batch of their own); the
    episodes of the split not being written are kept until its generator runs."""
    g = self.generation
    cameras = list(g.cameras)
    action_width = max(len(embodiments.EMBODIMENTS[n].action_names) for n in self._embodiments)
    num_steps = max(tasks.HORIZON[t] for t in g.tasks)
    for name in self._embodiments:
      if name in self._simulated:
        episodes = self._pending.pop((name, split), [])
      else:
        episodes = self._simulate(name, split, num_steps)
      for ep in episodes:
        if g.only_successful and not ep.success:
          continue
        if split == "train":
          stats_lib.accumulate(self._stats, ep)
        yield f"{ep.embodiment}_{ep.task}_{ep.seed}", to_example(ep, action_width, cameras, self.HUMAN)

  def _simulate(self, name, split, num_steps):
    """Rolls out every episode of embodiment `name`; yields `split`'s, keeps the others pending."""
    items = self._items(name)
    self._simulated.add(name)
    if not items:
      return
    env = self._env(name, len(items))
    batch = env.config.num_envs
    bar = tqdm(total=len(items), desc=f"{self.name}/{name}", unit="ep", dynamic_ncols=True)
    for start in range(0, len(items), batch):
      chunk = items[start:start + batch]
      padded = chunk + [chunk[-1]] * (batch - len(chunk))  # fixed batch: one compiled program
      seeds = [s for _, _, s in padded]
      episodes = rollout_lib.collect(env, [t for _, t, _ in padded], seeds, num_steps=num_steps,
                                     action_noise=self._noise(name, seeds))
      for (ep_split, _, _), ep in zip(chunk, episodes):
        if ep_split == split:
          yield ep
        else:
          self._pending.setdefault((name, ep_split), []).append(ep)
      bar.update(len(chunk))
    bar.close()

  def _noise(self, name, seeds) -> np.ndarray:
    """Per-episode std of the noise on the executed joint targets (robots only; `action_noise` on a seeded
    `noisy_fraction` of the episodes, the others clean): the recorded actions are the expert's corrections."""
    g = self.generation
    level, fraction = float(g.get("action_noise", 0.0)), float(g.get("noisy_fraction", 0.5))
    if level <= 0 or embodiments.EMBODIMENTS[name].kind != "robot":
      return np.zeros(len(seeds), np.float32)
    return np.array([level if np.random.default_rng(s).random() < fraction else 0.0 for s in seeds], np.float32)

  def _env(self, name, num_items):
    """The env of `name`, its batch the smallest that splits `num_items` into as few batches as `batch_size`
    allows (144 episodes at batch_size 128: two batches of 72, not 128 + a padded 128)."""
    from vam.sim import env as env_lib  # pylint: disable=g-import-not-at-top  (heavy: only when building)
    g = self.generation
    return env_lib.Env(env_lib.EnvConfig(
        embodiment=name, mode=g.mode, split=g.split, backend=g.backend, physics=g.get("physics", "auto"),
        push_layout=g.get("push_layout", "any"),
        image_size=tuple(g.image_size),
        cameras=tuple(g.cameras), num_envs=max(1, -(-num_items // -(-num_items // g.batch_size)))))

  def normalization_stats(self) -> dict:
    """Per-embodiment statistics of the train split gathered while generating (see vam.data.stats)."""
    return stats_lib.finalize(self._stats)
