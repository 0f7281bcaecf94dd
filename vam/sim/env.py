"""A pure functional tabletop env over MJX data (the mujoco_playground pattern).

    env = Env(EnvConfig(embodiment='arm6', mode='easy'))
    state = jax.vmap(env.reset)(keys, task_ids)        # (B,) episodes
    state = jax.vmap(env.step)(state, actions)           # one 10 Hz control step
    images = env.render(state)                           # (B, n_cam, H, W, 3) uint8, batched

`reset` and `step` are pure and jit/vmap-able. The backend is a config choice: MJX `impl='warp'`
(CPU and NVIDIA GPUs; physics and the batch renderer) or `impl='jax'` (physics only, e.g. TPUs).
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from mujoco import mjx

from vam.sim import embodiments, native, palette, scene, tasks
from vam.sim.geometry import quat_from_euler_zyx

# XLA's concurrency-optimised CPU scheduler can stall on large vmapped MJX programs.
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

try:  # Warp logs one line per kernel module it loads: keep its warnings only.
  import warp as _wp  # pylint: disable=g-import-not-at-top
  _wp.config.log_level = _wp.LOG_WARNING
except (ImportError, AttributeError):
  pass

BACKENDS = ("warp", "jax")
PHYSICS = ("auto", "mjx", "native")


def privileged_state(task, target, obj_pos, obj2_pos, table_z):
  """What a policy without vision needs (the ladder's privileged-state rung): the task's target (reach ball,
  zone or bowl centre, or the second block), the manipulated and the second object's positions, relative to
  the table centre (m; an object the task does not use reads as the target, not as its parked position), and
  the task one-hot. (tasks.PRIVILEGED_DIM,)"""
  origin = jnp.stack([0.0, 0.0, table_z])
  obj_pos = jnp.where(task == 0, target, obj_pos)
  obj2_pos = jnp.where(task == 3, obj2_pos, target)
  return jnp.concatenate([target - origin, obj_pos - origin, obj2_pos - origin,
                          jax.nn.one_hot(task, len(tasks.TASKS))]).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class EnvConfig:
  embodiment: str = "arm6"
  mode: str = "easy"  # easy | hard
  split: str = "train"  # train | unseen_positions | unseen_objects | unseen_scene
  push_layout: str = "adjacent"  # push's zone: adjacent | any (vam/sim/tasks.py PUSH_LAYOUTS)
  backend: str = "warp"  # MJX impl: warp | jax
  # Who steps the physics: `mjx` (the backend's own kernels: accelerators), `native` (MuJoCo's C engine on a
  # thread pool through a host callback, vam/sim/native.py: ~30x faster on a CPU), `auto` (native on a CPU).
  physics: str = "auto"
  image_size: tuple[int, int] = (64, 64)  # (width, height)
  cameras: tuple[str, ...] = ("front",)
  timestep: float = 0.01  # physics step (s)
  substeps: int = 10  # physics steps per control step: 10 Hz control
  num_envs: int = 1  # batch size the warp contact buffers and renderer are sized for
  contacts_per_env: int = 96
  constraints_per_env: int = 640

  def validate(self):
    def check(field, value, valid):
      if value not in valid:
        raise ValueError(f"EnvConfig.{field}={value!r} is not valid; choose one of {list(valid)}")
    check("embodiment", self.embodiment, embodiments.EMBODIMENTS)
    check("mode", self.mode, tasks.MODES)
    check("split", self.split, tasks.SPLITS)
    check("push_layout", self.push_layout, tasks.PUSH_LAYOUTS)
    check("backend", self.backend, BACKENDS)
    check("physics", self.physics, PHYSICS)
    for c in self.cameras:
      check("cameras", c, scene.CAMERAS)
    if self.num_envs < 1 or self.substeps < 1:
      raise ValueError("EnvConfig.num_envs and EnvConfig.substeps must be >= 1")


@struct.dataclass
class Episode:
  """What reset drew for an episode; constant while it runs."""
  task: jax.Array  # () int32
  obj: jax.Array  # () int32, manipulated object
  obj2: jax.Array  # () int32, second object (stack)
  target_pos: jax.Array  # (3,) reach ball / zone centre / bowl centre / top of obj2, per task
  table_z: jax.Array  # ()
  colour: jax.Array  # (N_OBJECTS + 3,) int32 palette ids of objects, bowl, zone, target
  geom_rgba: jax.Array  # (ngeom, 4) per-episode colours (renderer only)
  light_diffuse: jax.Array  # (nlight, 3)


@struct.dataclass
class State:
  data: mjx.Data
  episode: Episode
  obs: dict
  reward: jax.Array
  success: jax.Array  # bool: task predicate holds now
  step: jax.Array  # int32 control steps taken


class Env:
  """The tabletop world for one embodiment, mode and split; all tasks share the compiled model."""

  def __init__(self, config: EnvConfig):
    config.validate()
    self.config = config
    self.embodiment = embodiments.get(config.embodiment)
    self.spec = scene.build_spec(self.embodiment, config.image_size, config.timestep)
    self.mj_model = self.spec.compile()
    self.embodiment.bind(self.mj_model)
    self.index = scene.index(self.mj_model)
    self.mx = mjx.put_model(self.mj_model, impl=config.backend)
    kw = {}
    if config.backend == "warp":
      kw = dict(naconmax=config.num_envs * config.contacts_per_env, njmax=config.constraints_per_env)
    self._data0 = mjx.make_data(self.mj_model, impl=config.backend, **kw)
    self._base_rgba = jnp.asarray(self.mj_model.geom_rgba)
    self._base_light = jnp.asarray(self.mj_model.light_diffuse)
    self._camera_ids = [mujoco.mj_name2id(self.mj_model, mujoco.mjtObj.mjOBJ_CAMERA, c) for c in config.cameras]
    self._render_ctx = None
    self.physics = config.physics
    if self.physics == "auto":
      self.physics = "native" if jax.default_backend() == "cpu" else "mjx"
    self._native = native.NativePhysics(self.mj_model, config.substeps) if self.physics == "native" else None

  # ------------------------------------------------------------------------------------------------
  @property
  def action_dim(self) -> int:
    return self.embodiment.action_dim

  def reset(self, rng: jax.Array, task: jax.Array) -> State:
    """Samples an episode of task id `task` (see `tasks.TASKS`) and returns its first state."""
    cfg, idx, emb = self.config, self.index, self.embodiment
    hard, split = cfg.mode == "hard", cfg.split
    keys = iter(jax.random.split(rng, 16))
    task = jnp.asarray(task, jnp.int32)
    table_z = scene.TABLE_TOP + (jax.random.uniform(next(keys), (), minval=-0.03, maxval=0.03) if hard else 0.0)

    # Objects: which cube (or held-out shape) is manipulated, which is stacked on, which distract.
    n_cubes = 4
    order = jax.random.permutation(next(keys), n_cubes)
    if split == "unseen_objects":
      obj = jnp.asarray(scene.HELD_OUT_OBJECTS)[jax.random.randint(next(keys), (), 0, 2)]
      obj2, distract = order[0], order[1:3]
    else:
      obj, obj2, distract = order[0], order[1], order[2:4]

    # Layout: each role gets its own grid cell; the manipulated object's cell respects the split.
    u = jax.random.uniform(next(keys), (len(tasks.CELLS),))
    held = jnp.zeros(len(tasks.CELLS), bool).at[tasks.HELD_OUT_CELLS].set(True)
    allowed = held if split == "unseen_positions" else ~held
    obj_cell = jnp.argmin(jnp.where(allowed, u, 2.0))
    order = jnp.argsort(u.at[obj_cell].set(-1.0))  # cell of each role rank
    if cfg.push_layout == "adjacent":  # push: the zone (rank 3) swaps into a random neighbour of the block's cell
      zone_cell = jnp.argmin(jnp.where(jnp.asarray(tasks.ADJACENT_CELLS)[obj_cell], u, 2.0))
      rank = jnp.argmax(order == zone_cell)
      swapped = order.at[rank].set(order[3]).at[3].set(zone_cell)
      order = jnp.where(task == 1, swapped, order)
    cells = jnp.asarray(tasks.CELLS)[order]
    jitter = jax.random.uniform(next(keys), (len(tasks.CELLS), 2), minval=-tasks.CELL_JITTER,
                                maxval=tasks.CELL_JITTER)
    # roles -> cell rank: 0 obj, 1 obj2, 2 bowl, 3 zone, 4 target, 5-6 distractors
    pos_xy = cells + jitter
    bowl_xy, zone_xy, target_xy = cells[2], cells[3] + 0.4 * jitter[3], pos_xy[4]

    is_reach, is_push = task == 0, task == 1
    is_place, is_stack = task == 2, task == 3
    qpos = jnp.asarray(self.mj_model.qpos0)
    obj_half = jnp.asarray(scene.OBJECT_HALF_HEIGHT, jnp.float32)
    yaws = jax.random.uniform(next(keys), (scene.N_OBJECTS,), minval=-np.pi / 4, maxval=np.pi / 4)
    placed = jnp.zeros(scene.N_OBJECTS, bool)
    xy = jnp.asarray([scene.park_position(i)[:2] for i in range(scene.N_OBJECTS)])
    def put(placed, xy, i, where, cond):
      return placed.at[i].set(placed[i] | cond), xy.at[i].set(jnp.where(cond, where, xy[i]))
    placed, xy = put(placed, xy, obj, pos_xy[0], ~is_reach)
    placed, xy = put(placed, xy, obj2, pos_xy[1], is_stack)
    if hard:
      placed, xy = put(placed, xy, distract[0], pos_xy[5], True)
      placed, xy = put(placed, xy, distract[1], pos_xy[6], True)
    z = jnp.where(placed, table_z + obj_half + 0.001, scene.PARK_Z)
    for i in range(scene.N_OBJECTS):
      a = idx.obj_qpos[i]
      quat = jnp.stack([jnp.cos(yaws[i] / 2), 0.0, 0.0, jnp.sin(yaws[i] / 2)])
      qpos = qpos.at[a:a + 7].set(jnp.concatenate([xy[i], z[i][None], quat]))
    noise = jax.random.uniform(next(keys), (len(emb.qpos_adr),), minval=-0.02, maxval=0.02)
    qpos = qpos.at[emb.qpos_adr].set(jnp.asarray(emb.home, jnp.float32) + noise * (emb.jnt_type == 3))

    # Mocap bodies: table, bowl, zone, reach target, camera rig, light rig.
    far = lambda k: jnp.asarray([3.0, 1.0 + k, 0.0])
    mocap_pos = jnp.asarray(self.mj_model.body_pos[self.mj_model.body_mocapid >= 0][np.argsort(
        self.mj_model.body_mocapid[self.mj_model.body_mocapid >= 0])])
    mocap_quat = jnp.tile(jnp.asarray([1.0, 0, 0, 0]), (self.mj_model.nmocap, 1))
    m = idx.mocap
    mocap_pos = mocap_pos.at[m["table"]].set(jnp.stack([0.0, 0.0, table_z - scene.TABLE_HALF[2]]))
    mocap_pos = mocap_pos.at[m["bowl"]].set(jnp.where(is_place, jnp.append(bowl_xy, table_z), far(0)))
    mocap_pos = mocap_pos.at[m["zone"]].set(jnp.where(is_push, jnp.append(zone_xy, table_z), far(1)))
    ball_z = table_z + jax.random.uniform(next(keys), (), minval=0.05, maxval=0.16)
    mocap_pos = mocap_pos.at[m["target"]].set(jnp.where(is_reach, jnp.append(target_xy, ball_z), far(2)))
    cam_yaw = 0.0
    cam_pos = jnp.asarray(scene.CAMERA_RIG_POS) + jnp.stack([0.0, 0.0, table_z - scene.TABLE_TOP])
    if hard:
      cam_pos = cam_pos + jax.random.uniform(next(keys), (3,), minval=-0.03, maxval=0.03)
      cam_yaw = jax.random.uniform(next(keys), (), minval=-0.06, maxval=0.06)
    if split == "unseen_scene":
      side = jnp.where(jax.random.bernoulli(next(keys)), 1.0, -1.0)
      cam_yaw = side * jax.random.uniform(next(keys), (), minval=0.3, maxval=0.45)
    mocap_pos = mocap_pos.at[m["camera_rig"]].set(cam_pos)
    mocap_quat = mocap_quat.at[m["camera_rig"]].set(quat_from_euler_zyx(cam_yaw, 0.0, 0.0))
    light_pos = jnp.asarray([0.3, 0.4, scene.TABLE_TOP + 1.2])
    light_scale = 1.0
    if hard:
      light_pos = light_pos + jax.random.uniform(next(keys), (3,), minval=jnp.asarray([-0.6, -0.8, -0.3]),
                                                 maxval=jnp.asarray([0.3, 0.4, 0.4]))
      light_scale = jax.random.uniform(next(keys), (), minval=0.45, maxval=1.3)
    if split == "unseen_scene":
      light_pos = jnp.asarray([-0.5, -0.6, scene.TABLE_TOP + 0.9])
    mocap_pos = mocap_pos.at[m["light_rig"]].set(light_pos)

    colour, rgba = self._colours(next(keys), hard, split == "unseen_scene")
    data = self._data0.replace(qpos=qpos, qvel=jnp.zeros_like(self._data0.qvel), ctrl=emb.ctrl_from_action(
        self._home_action()), mocap_pos=mocap_pos, mocap_quat=mocap_quat)
    data = mjx.forward(self.mx, data)

    obj2_top = jnp.append(pos_xy[1], table_z + 2 * obj_half[obj2])
    target_pos = jnp.select([is_reach, is_push, is_place], [jnp.append(target_xy, ball_z),
                             jnp.append(zone_xy, table_z), jnp.append(bowl_xy, table_z)], obj2_top)
    episode = Episode(task=task, obj=obj.astype(jnp.int32), obj2=obj2.astype(jnp.int32), target_pos=target_pos,
                      table_z=jnp.asarray(table_z, jnp.float32), colour=colour, geom_rgba=rgba,
                      light_diffuse=self._base_light * light_scale)
    return self._observe(data, episode, jnp.zeros((), jnp.int32))

  def step(self, state: State, action: jax.Array) -> State:
    """Applies one native action for `substeps` physics steps (a 10 Hz control step)."""
    data = state.data.replace(ctrl=self.embodiment.ctrl_from_action(action))
    if self._native is None:
      data = jax.lax.fori_loop(0, self.config.substeps, lambda _, d: mjx.step(self.mx, d), data)
    else:
      data = self._native_step(data)
    return self._observe(data, state.episode, state.step + 1)

  def _native_step(self, data):
    """The substeps natively on the host (one callback per control step for a whole vmapped batch), then MJX
    kinematics: the poses observations, experts and the renderer read."""
    def host(*arrays):
      single = arrays[0].ndim == 1  # called outside vmap
      arrays = [a[None] for a in arrays] if single else arrays
      out = self._native(*arrays)
      return tuple(o[0] for o in out) if single else out
    shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (data.qpos, data.qvel, data.act))
    qpos, qvel, act = jax.pure_callback(host, shapes, data.qpos, data.qvel, data.act, data.ctrl, data.mocap_pos,
                                        data.mocap_quat, vmap_method="expand_dims")
    data = data.replace(qpos=qpos, qvel=qvel, act=act,
                        time=data.time + self.config.substeps * self.config.timestep)
    return mjx.kinematics(self.mx, data)

  # ------------------------------------------------------------------------------------------------
  def object_pose(self, data, i):
    """Position (3,) and quaternion (4,) of object `i` (traced index allowed)."""
    body = jnp.asarray(self.index.obj_body)[i]
    return data.xpos[body], data.xquat[body]

  def _observe(self, data, episode, step) -> State:
    emb = self.embodiment
    obj_pos, _ = self.object_pose(data, episode.obj)
    obj2_pos, _ = self.object_pose(data, episode.obj2)
    half = jnp.asarray(scene.OBJECT_HALF_HEIGHT, jnp.float32)
    target = jnp.where(episode.task == 3, obj2_pos, episode.target_pos)
    success = tasks.success(episode.task, obj_pos, obj2_pos, half[episode.obj], half[episode.obj2],
                            emb.grasp_point(data), target, episode.table_z)
    obs = {"state": emb.proprio(data), "eef": emb.eef_vector(data), "gripper": emb.gripper_opening(data)[None],
           "privileged": privileged_state(episode.task, target, obj_pos, obj2_pos, episode.table_z)}
    if emb.kind == "human":
      obs["hand_keypoints"] = emb.keypoints(data)
      obs["thumb_knuckle"] = emb.thumb_knuckle(data)
    return State(data=data, episode=episode, obs=obs, reward=success.astype(jnp.float32), success=success,
                 step=step)

  def _home_action(self):
    emb = self.embodiment
    if emb.kind == "human":
      return jnp.asarray(emb.home, jnp.float32)
    n = len(emb.home) - 2
    return jnp.concatenate([jnp.asarray(emb.home[:n], jnp.float32), jnp.zeros(1)])

  def _colours(self, rng, hard, unseen_scene):
    """Palette ids for objects, bowl, zone and target, and the per-episode geom colours."""
    k1, k2, k3 = jax.random.split(rng, 3)
    n = scene.N_OBJECTS + 3
    fixed = jnp.asarray([palette.index(c) for c in
                         ("red", "yellow", "cyan", "purple", "pink", "orange", "blue", "green", "white")])
    colour = jax.random.permutation(k1, len(palette.NAMES))[:n] if hard else fixed
    rgb = jnp.asarray(palette.RGB)[colour]
    idx = self.index
    rgba = self._base_rgba
    rgba = rgba.at[idx.obj_geom, :3].set(rgb[:scene.N_OBJECTS])
    rgba = rgba.at[idx.bowl_geoms, :3].set(rgb[scene.N_OBJECTS])
    rgba = rgba.at[idx.zone_geom, :3].set(rgb[scene.N_OBJECTS + 1])
    rgba = rgba.at[idx.target_geom, :3].set(rgb[scene.N_OBJECTS + 2])
    if hard:  # wood/grey table tints and floor shades seen in training
      table = jax.random.uniform(k2, (3,), minval=jnp.asarray([0.35, 0.25, 0.15]), maxval=jnp.asarray([0.8, 0.65, 0.5]))
      floor = jax.random.uniform(k3, (), minval=0.15, maxval=0.6) * jnp.ones(3)
      rgba = rgba.at[idx.table_geom, :3].set(table).at[idx.floor_geom, :3].set(floor)
    if unseen_scene:  # a green felt table on a dark blue floor: never seen in training
      rgba = rgba.at[idx.table_geom, :3].set(jnp.asarray([0.12, 0.42, 0.22]))
      rgba = rgba.at[idx.floor_geom, :3].set(jnp.asarray([0.1, 0.12, 0.3]))
    return colour.astype(jnp.int32), rgba

  # ---- rendering (warp batch renderer) ------------------------------------------------------------
  def render(self, state: State) -> jax.Array:
    """Batched images (B, n_cameras, H, W, 3) uint8 of a batch of `num_envs` states. Jit-able."""
    if self.config.backend != "warp":
      raise ValueError("EnvConfig.backend='jax' has no renderer: render with backend='warp' or natively "
                       "(vam.sim.render.NativeRenderer)")
    from mujoco.mjx._src import bvh, render as mjx_render, render_util  # pylint: disable=g-import-not-at-top
    if self._render_ctx is None:
      w, h = self.config.image_size
      self._render_ctx = mjx.create_render_context(
          self.mj_model, nworld=self.config.num_envs, cam_res=(w, h), use_textures=False, use_shadows=True,
          render_rgb=True, render_depth=False, cam_active=list(self._camera_ids), enabled_geom_groups=[0, 1, 2])
    rc = self._render_ctx.pytree()

    def one(data, episode):
      mx = self.mx.tree_replace({"geom_rgba": episode.geom_rgba, "light_diffuse": episode.light_diffuse})
      data = bvh.refit_bvh(mx, data, rc)
      return mjx_render.render(mx, data, rc)[0]

    packed = jax.vmap(one)(state.data, state.episode)
    images = [jax.vmap(render_util.get_rgb, in_axes=(None, None, 0))(rc, i, packed) for i in range(len(self._camera_ids))]
    return (jnp.stack(images, axis=1) * 255.0 + 0.5).astype(jnp.uint8)

  def contact_overflow(self, state: State) -> jax.Array:
    """True where a warp contact/constraint buffer overflowed (contacts or constraints were dropped).

    Only the buffer bits of MuJoCo Warp's overflow mask count (nefc, nnz, broad/narrow phase, CCD,
    hfield, islands, EPA); solver iteration-limit bits are not data loss.
    """
    if self.config.backend != "warp":
      return jnp.zeros((), bool)
    buffers = 0b1_1011_1111
    return jnp.any((state.data._impl.overflow & buffers) != 0)  # pylint: disable=protected-access
