"""Tasks: reset layout, success predicate and instruction templates.

Each task is an integer id so that all tasks of an embodiment batch in one jitted rollout; the
per-task logic is selected with `jnp.where`/`lax.switch` on that id. A layout is the set of named
roles a task fills (manipulated object, second object, bowl, zone, reach target); roles a task does
not use are parked out of view.
"""

import jax
import jax.numpy as jnp
import numpy as np

from vam.sim import scene

TASKS = ("reach", "push", "pick_place", "stack")
HORIZON = {"reach": 30, "push": 60, "pick_place": 70, "stack": 70}  # control steps at 10 Hz
MODES = ("easy", "hard")
SPLITS = ("train", "unseen_positions", "unseen_objects", "unseen_scene")

INSTRUCTIONS = {
    "reach": ("reach the {target} ball", "touch the {target} ball", "move your hand to the {target} ball"),
    "push": ("push the {obj} {shape} to the {zone} zone", "slide the {obj} {shape} onto the {zone} square",
             "push the {obj} {shape} into the {zone} area"),
    "pick_place": ("put the {obj} {shape} in the {bowl} bowl", "pick up the {obj} {shape} and place it in the {bowl} bowl",
                   "move the {obj} {shape} into the {bowl} bowl"),
    "stack": ("stack the {obj} {shape} on the {obj2} block", "put the {obj} {shape} on top of the {obj2} block",
              "place the {obj} {shape} onto the {obj2} block"),
}
SHAPE_NAMES = ("block", "block", "block", "block", "flat block", "tall block")

# Layout grid on the table top (cell centres, metres). Cells in HELD_OUT_CELLS never hold the
# manipulated object in training episodes; the 'unseen_positions' split puts it only there.
GRID_X = np.array([-0.17, -0.05, 0.07])
GRID_Y = np.array([-0.19, -0.065, 0.065, 0.19])
CELLS = np.array([(x, y) for x in GRID_X for y in GRID_Y], np.float32)  # (12, 2)
HELD_OUT_CELLS = np.array([3, 8])  # (x=-0.17, y=+0.19) and (x=+0.07, y=-0.19)
CELL_JITTER = 0.025
# Where push puts the zone: `adjacent` (default) a grid cell next to the block's (a 9-17 cm push, up to four
# directions), `any` any other cell (12-45 cm, median 24 cm). Measured with the privileged-state policy at 3000
# steps on `any` pushes: 3 of 6 pushes under 15 cm succeeded, 0 of 10 longer ones (README, rung b: "Push: the
# demonstrations, then the layout").
PUSH_LAYOUTS = ("adjacent", "any")
_IX, _IY = np.divmod(np.arange(len(CELLS)), len(GRID_Y))
ADJACENT_CELLS = (np.abs(_IX[:, None] - _IX[None]) + np.abs(_IY[:, None] - _IY[None])) == 1  # (12, 12) grid neighbours
# The simulator's true task state (vam/sim/env.py `privileged_state`): target (3), object (3), second object
# (3), task one-hot.
PRIVILEGED_DIM = 9 + len(TASKS)


def task_id(name: str) -> int:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; valid tasks: {list(TASKS)}")
  return TASKS.index(name)


def horizon(task: int | jax.Array):
  return jnp.asarray([HORIZON[t] for t in TASKS])[task]


def instruction(task: str, rng: np.random.Generator, names: dict) -> str:
  """Fills one of the task's templates (chosen by `rng`) with colour/shape names."""
  templates = INSTRUCTIONS[task]
  return templates[rng.integers(len(templates))].format(**names)


def success(task, obj_pos, obj2_pos, obj_half, obj2_half, grasp_pos, target_pos, table_z):
  """Per-task success predicate (jnp, scalar bool).

  - reach: the grasp point is within 4 cm of the target ball;
  - push: the object's centre is inside the zone (1 cm margin) and it rests on the table;
  - pick_place: the object rests inside the bowl and the hand/gripper has let go (>= 6 cm away);
  - stack: the object rests centred (< 2 cm) on the second object and has been let go.
  """
  away = jnp.linalg.norm(grasp_pos - obj_pos) > 0.06
  reach = jnp.linalg.norm(grasp_pos - target_pos) < 0.04
  d_xy = jnp.abs(obj_pos[:2] - target_pos[:2])
  on_table = obj_pos[2] < table_z + obj_half + 0.01
  push = jnp.all(d_xy < scene.ZONE_HALF - 0.01) & on_table
  in_bowl = jnp.all(d_xy < scene.BOWL_INNER - 0.005) & (obj_pos[2] < table_z + 0.006 + obj_half + 0.01)
  pick_place = in_bowl & away
  stacked = (jnp.linalg.norm(obj_pos[:2] - obj2_pos[:2]) < 0.02) & (
      jnp.abs(obj_pos[2] - obj2_pos[2] - obj_half - obj2_half) < 0.01)
  stack = stacked & away
  return jnp.stack([reach, push, pick_place, stack])[task]
