"""The tabletop scene, built programmatically with `mujoco.MjSpec`.

One scene per embodiment holds every object any task needs, so all tasks (and easy/hard modes) of an
embodiment share one compiled model and batch together. What changes per episode lives in `mjx.Data`
or in a few per-episode model fields:
- free bodies (four cubes and two held-out shapes) are placed on the table or parked on the
  floor out of view;
- mocap bodies move the table (height jitter), the bowl, the zone, the reach target, the camera rig
  and the light rig;
- colours (`geom_rgba`) and light intensity are per-episode model fields used only by the renderer.
"""

import dataclasses

import mujoco
import numpy as np

TABLE_TOP = 0.40  # nominal table-top height (m)
TABLE_HALF = (0.40, 0.50, 0.20)
CUBE_HALF = 0.02
ROBOT_MOUNT = np.array([-0.40, 0.0, TABLE_TOP])
HAND_MOUNT = np.array([-0.22, 0.0, TABLE_TOP + 0.22])
PARK_Z = 0.03  # parked objects rest on the floor

# Free objects: (name, geom type, size). The last two are held out for the 'unseen_objects' split.
# All are boxes: MJX's JAX backend has no cylinder-box collision.
OBJECTS = (
    ("cube0", mujoco.mjtGeom.mjGEOM_BOX, (CUBE_HALF,) * 3),
    ("cube1", mujoco.mjtGeom.mjGEOM_BOX, (CUBE_HALF,) * 3),
    ("cube2", mujoco.mjtGeom.mjGEOM_BOX, (CUBE_HALF,) * 3),
    ("cube3", mujoco.mjtGeom.mjGEOM_BOX, (CUBE_HALF,) * 3),
    ("flat_block", mujoco.mjtGeom.mjGEOM_BOX, (0.026, 0.026, 0.014)),
    ("tall_block", mujoco.mjtGeom.mjGEOM_BOX, (0.017, 0.017, 0.026)),
)
N_OBJECTS = len(OBJECTS)
HELD_OUT_OBJECTS = (4, 5)
OBJECT_HALF_HEIGHT = np.array([s[2] if t == mujoco.mjtGeom.mjGEOM_BOX else s[1] for _, t, s in OBJECTS])
MOCAPS = ("table", "bowl", "zone", "target", "camera_rig", "light_rig")
BOWL_INNER = 0.055  # half-width of the bowl's floor
BOWL_WALL = 0.03  # wall height
ZONE_HALF = 0.05
CAMERAS = ("front", "side")
# Camera rig nominal pose: in front of the table (+x) looking back at the robot.
CAMERA_RIG_POS = np.array([0.0, 0.0, TABLE_TOP])


@dataclasses.dataclass(frozen=True)
class SceneIndex:
  """Static indices into the compiled model, used by the env and tasks under jit."""

  obj_body: np.ndarray  # (N_OBJECTS,)
  obj_qpos: np.ndarray  # (N_OBJECTS,) start address of each free joint's 7 qpos
  obj_dof: np.ndarray  # (N_OBJECTS,) start address of each free joint's 6 dofs
  obj_geom: np.ndarray  # (N_OBJECTS,)
  mocap: dict  # name -> mocap id
  table_geom: int
  floor_geom: int
  zone_geom: int
  bowl_geoms: np.ndarray
  target_geom: int
  light: int


def _look_at_xyaxes(eye, target, up=(0, 0, 1)):
  fwd = np.asarray(target, float) - np.asarray(eye, float)
  fwd /= np.linalg.norm(fwd)
  right = np.cross(fwd, up)
  right /= np.linalg.norm(right)
  cam_up = np.cross(right, fwd)
  return list(right) + list(cam_up)


def build_spec(embodiment, image_size=(64, 64), timestep=0.01) -> mujoco.MjSpec:
  """Returns the MjSpec of the scene with `embodiment` mounted at the table edge."""
  spec = mujoco.MjSpec()
  spec.modelname = f"vam_{embodiment.name}"
  spec.compiler.degree = False  # all angles in this package are radians
  spec.option.timestep = timestep
  spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
  spec.option.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL
  spec.visual.global_.offwidth = max(640, image_size[0])
  spec.visual.global_.offheight = max(480, image_size[1])
  spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
  spec.visual.headlight.diffuse = [0.3, 0.3, 0.3]
  w = spec.worldbody
  w.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], rgba=[0.32, 0.34, 0.38, 1])

  table = w.add_body(name="table", mocap=True, pos=[0, 0, TABLE_TOP - TABLE_HALF[2]])
  table.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(TABLE_HALF), rgba=[0.62, 0.48, 0.34, 1],
                 friction=[0.8, 0.02, 0.001])

  bowl = w.add_body(name="bowl", mocap=True, pos=[3.0, 0, 0])
  bowl.add_geom(name="bowl_floor", type=mujoco.mjtGeom.mjGEOM_BOX, size=[BOWL_INNER + 0.006, BOWL_INNER + 0.006, 0.003],
                pos=[0, 0, 0.003], rgba=[0.15, 0.3, 0.85, 1])
  for i, (dx, dy) in enumerate(((1, 0), (-1, 0), (0, 1), (0, -1))):
    half = [0.003, BOWL_INNER + 0.006, BOWL_WALL / 2] if dx else [BOWL_INNER + 0.006, 0.003, BOWL_WALL / 2]
    bowl.add_geom(name=f"bowl_wall{i}", type=mujoco.mjtGeom.mjGEOM_BOX, size=half,
                  pos=[dx * (BOWL_INNER + 0.003), dy * (BOWL_INNER + 0.003), BOWL_WALL / 2],
                  rgba=[0.15, 0.3, 0.85, 1])

  zone = w.add_body(name="zone", mocap=True, pos=[3.0, 1.0, 0])
  zone.add_geom(name="zone", type=mujoco.mjtGeom.mjGEOM_BOX, size=[ZONE_HALF, ZONE_HALF, 0.001],
                pos=[0, 0, 0.001], rgba=[0.2, 0.75, 0.3, 1], contype=0, conaffinity=0)

  target = w.add_body(name="target", mocap=True, pos=[3.0, -1.0, 0])
  target.add_geom(name="target", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.018, 0, 0],
                  rgba=[0.95, 0.85, 0.1, 1], contype=0, conaffinity=0)

  rig = w.add_body(name="camera_rig", mocap=True, pos=list(CAMERA_RIG_POS))
  # The front camera frames the workspace and the robot's gripper at home (objects ~1.3x the size they had in
  # a wider view that was one third background); the side camera looks across the table.
  for name, eye, look, fovy in (("front", [0.38, 0.0, 0.52], [-0.12, 0.0, 0.08], 44),
                                ("side", [-0.05, 0.62, 0.48], [-0.1, 0.0, 0.04], 48)):
    rig.add_camera(name=name, pos=eye, xyaxes=_look_at_xyaxes(eye, look), fovy=fovy, resolution=list(image_size))

  # The key light casts shadows: from one camera, a shadow is what tells how high a ball or a gripper is.
  light_rig = w.add_body(name="light_rig", mocap=True, pos=[0.3, 0.4, TABLE_TOP + 1.2])
  light_rig.add_light(name="key", pos=[0, 0, 0], dir=[-0.25, -0.35, -1.0], diffuse=[0.65, 0.65, 0.65],
                      specular=[0.1, 0.1, 0.1], castshadow=True)

  for i, (name, gtype, size) in enumerate(OBJECTS):
    b = w.add_body(name=name, pos=[2.0 + 0.2 * i, 2.0, PARK_Z])
    b.add_freejoint(name=name)
    b.add_geom(name=name, type=gtype, size=list(size), mass=0.05, rgba=[0.8, 0.2, 0.2, 1],
               friction=[1.2, 0.02, 0.001], condim=4)

  embodiment.build(spec, HAND_MOUNT if embodiment.kind == "human" else ROBOT_MOUNT)
  return spec


def index(m: mujoco.MjModel) -> SceneIndex:
  body = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, n)
  geom = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n)
  jnt = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n, _, _ in OBJECTS]
  return SceneIndex(
      obj_body=np.array([body(n) for n, _, _ in OBJECTS]),
      obj_qpos=np.array(m.jnt_qposadr[jnt]),
      obj_dof=np.array(m.jnt_dofadr[jnt]),
      obj_geom=np.array([geom(n) for n, _, _ in OBJECTS]),
      mocap={n: int(m.body_mocapid[body(n)]) for n in MOCAPS},
      table_geom=geom("table"),
      floor_geom=geom("floor"),
      zone_geom=geom("zone"),
      bowl_geoms=np.array([geom("bowl_floor")] + [geom(f"bowl_wall{i}") for i in range(4)]),
      target_geom=geom("target"),
      light=mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_LIGHT, "key"),
  )


def park_position(i: int) -> np.ndarray:
  """Where object `i` rests when a task does not use it: on the floor, behind the camera."""
  return np.array([1.6 + 0.15 * i, 1.6, PARK_Z])
