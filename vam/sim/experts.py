"""Scripted experts: a waypoint phase machine per task, in jnp, jit/vmap-able.

Every expert speaks in one embodiment-agnostic language -- where the grasp point should go, the
yaw of the hand/gripper about world z, and how closed it should be -- and the embodiment turns that
into its native action (`Embodiment.expert_action`: differential IK for the arms, direct wrist and
finger targets for the hand). Waypoints are recomputed from the current object poses every step, so
the experts are closed-loop (they follow a block that slipped or was nudged, and start over when a held
block is dropped or a pushed one slides off the pusher's line).
"""

import jax
import jax.numpy as jnp
from flax import struct

from vam.sim import scene
from vam.sim.geometry import wrap_angle

LIFT = 0.15  # carrying height above the table (m)
# Robots push with the gripper at its home yaw. Turning it square to the push direction buys nothing (the
# closed fingers' contact face is almost square) and costs imitation dearly: which way to turn flips with the
# push direction (the gripper is 180-degree symmetric), a discontinuity no policy averages well (measured:
# the tool-roll delta was the one joint a state policy could not predict, worse than holding still).
TURN_TO_PUSH = False
PUSH_OFF_LINE = 0.02  # lateral offset (m) of the pusher from the block -> zone line that makes the expert start over
PUSH_OVERRUN = 0.015  # how far the pusher may come closer to the block centre than contact before it starts over
PUSH_STEP = 0.04  # how far ahead of contact the pushing waypoint leads (m per control step)
# Steering: the pushing waypoint's lead shrinks linearly with the pusher's lateral offset from the block -> zone
# line and is zero at this offset, so the pusher re-centres behind the block before it pushes on. Without it
# (advancing at full speed whatever the offset) the narrow pusher shoved the block off its line and the expert
# started over before succeeding in 25 of 64 arm6 test pushes (a second mode in the demos; counting start-overs
# right after success, in 87-94% of the quickstart push demos); with it, in none of 64 per embodiment, success
# 100% (arm6, gantry, the hand).
PUSH_STEER = 0.01
PUSH_SETTLED = 0.03  # once the block is this close to the zone centre (inside the success region), never start over


@struct.dataclass
class ExpertState:
  phase: jax.Array  # () int32
  t: jax.Array  # () int32 control steps spent in the phase
  yaw: jax.Array  # () float32 yaw the object was grasped at, held while it is carried


def init() -> ExpertState:
  return ExpertState(phase=jnp.zeros((), jnp.int32), t=jnp.zeros((), jnp.int32), yaw=jnp.zeros((), jnp.float32))


def _yaw_of(quat, symmetric):
  w, x, y, z = quat
  yaw = jnp.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
  # Square footprints look the same every 90 degrees: grasp at the nearest face pair.
  return jnp.where(symmetric, wrap_angle(4 * yaw) / 4, 0.0)


def _advance(es, done, yaw, restart=False):
  phase = jnp.where(restart, 0, jnp.where(done, es.phase + 1, es.phase))
  return ExpertState(phase=phase, t=jnp.where(done | restart, 0, es.t + 1), yaw=yaw)


def act(env, state, es: ExpertState):
  """One expert step: (action (A,), next ExpertState)."""
  emb, ep, data = env.embodiment, state.episode, state.data
  human = emb.kind == "human"
  g = emb.grasp_point(data)
  obj, quat = env.object_pose(data, ep.obj)
  obj2, _ = env.object_pose(data, ep.obj2)
  half = jnp.asarray(scene.OBJECT_HALF_HEIGHT)[ep.obj]
  table = ep.table_z
  up = jnp.array([0.0, 0.0, 1.0])
  grasp_yaw = _yaw_of(quat, True)  # every object is a box with a square footprint
  # Arm fingers must stay clear of the table: grasp at least 2.2 cm above it.
  grasp_at = jnp.where(human, obj, obj.at[2].set(jnp.maximum(obj[2] + 0.008, table + 0.03)))
  near = lambda wp, tol: jnp.linalg.norm(g - wp) < tol

  # ---- reach ----
  reach_wp = ep.target_pos

  # ---- pick, carry and release (pick_place and stack) ----
  clearance = 0.012  # drop height on release: the fingers reach a little below the block they hold
  place_obj = jnp.where(ep.task == 3, obj2 + up * (jnp.asarray(scene.OBJECT_HALF_HEIGHT)[ep.obj2] + half + clearance),
                        ep.target_pos + up * (0.006 + half + 0.02))
  held_offset = g - obj  # keeps the object, not the hand, on the path when it slipped in the grasp
  above_obj = obj + up * 0.1
  carry = jnp.concatenate([place_obj[:2] + held_offset[:2], jnp.array([table + LIFT])])
  lower = place_obj + held_offset
  # Release in place (the held offset changes as the fingers open), then retreat straight up.
  pick_wps = jnp.stack([above_obj, grasp_at, grasp_at, g.at[2].set(table + LIFT), carry, lower, g,
                        g.at[2].set(table + 0.25)])
  phase = jnp.minimum(es.phase, 7)
  pick_wp = pick_wps[phase]
  pick_close = jnp.asarray([0, 0, 1, 1, 1, 1, 0, 0], jnp.float32)[phase]
  # The hand grasps fingers-then-thumb and releases thumb-then-fingers (see HumanHand.expert_action), so
  # neither a closing thumb nor a springing-back squeeze shoves the block.
  hand_stage = ((phase == 2) & (es.t < 2)) | ((phase == 6) & (es.t < 3))
  pick_close = jnp.where(human & hand_stage, 0.5, pick_close)
  pick_done = jnp.stack([
      near(above_obj, 0.02) | (es.t > 25),
      near(grasp_at, 0.012) | (es.t > 12),
      es.t >= (6 if human else 4),
      (g[2] > table + LIFT - 0.02) | (es.t > 15),
      (jnp.linalg.norm(g[:2] - carry[:2]) < 0.015) | (es.t > 30),
      (near(lower, 0.008) & (jnp.linalg.norm(obj[:2] - place_obj[:2]) < 0.006)) | (es.t > 20),
      es.t >= (6 if human else 4),
      False,
  ])[phase]
  # Once grasped, keep the grasp yaw: following the held block's yaw feeds back (it turns with the hand,
  # and its nearest face pair can flip), and a released block may turn on its own.
  pick_yaw = jnp.where(phase <= 2, grasp_yaw, es.yaw)

  # ---- push: re-aim behind the block along the block->zone line every step ----
  to_zone = ep.target_pos[:2] - obj[:2]
  dist = jnp.linalg.norm(to_zone)
  u = jnp.append(to_zone / (dist + 1e-6), 0.0)
  contact = 0.057 if human else 0.036  # grasp point to block centre when the pusher touches the block
  push_z = table + (0.03 if human else 0.025)
  # Start 2 cm behind the contact point (4 cm for the hand): far corners are at the arm's full reach.
  behind = obj.at[2].set(push_z) - u * (contact + (0.04 if human else 0.02))
  rel = obj[:2] - g[:2]
  lateral = jnp.abs(u[0] * rel[1] - u[1] * rel[0])  # pusher's offset from the block -> zone line
  advance = PUSH_STEP * (jnp.clip(1.0 - lateral / PUSH_STEER, 0.0, 1.0) if PUSH_STEER > 0 else 1.0)
  pushing = obj.at[2].set(push_z) - u * contact + u * jnp.minimum(advance, dist)
  push_phase = jnp.minimum(es.phase, 3)
  # Coming back from a failed push, first lift clear (backing off the block), then go round behind it.
  away = jnp.append((g[:2] - obj[:2]) / (jnp.linalg.norm(g[:2] - obj[:2]) + 1e-6), 0.0)
  above_behind = jnp.where(g[2] < push_z + 0.05, g.at[2].set(push_z + 0.1) + away * 0.03, behind + up * 0.1)
  retreat = (obj - u * (contact + 0.03)).at[2].set(push_z + 0.1)  # fixed point: no drift after success
  push_wps = jnp.stack([above_behind, behind, pushing, retreat])
  push_wp = push_wps[push_phase]
  push_done = jnp.stack([near(behind + up * 0.1, 0.02) | (es.t > 25), near(behind, 0.012) | (es.t > 20),
                         (dist < 0.012) | (es.t > 45), False])[push_phase]
  # Pushing only steers from behind the block: once it slid off the pusher's line, start over.
  off_line = (lateral > PUSH_OFF_LINE) | (rel @ u[:2] < contact - PUSH_OVERRUN)
  # Turn the least way from the current yaw: wrapping at +-pi (the hand) or +-pi/2 (the 180-degree symmetric
  # gripper) would spin the pusher round while it touches the block. The hand's wrist stops short of pi.
  eef_rot = emb.eef_pose(data)[1] @ jnp.asarray(emb.down_frame, jnp.float32).T
  cur_yaw = jnp.arctan2(eef_rot[1, 0], eef_rot[0, 0])
  push_yaw = jnp.arctan2(u[1], u[0]) + (0.0 if human else jnp.pi / 2)
  push_yaw = (jnp.clip(cur_yaw + wrap_angle(push_yaw - cur_yaw), -3.05, 3.05) if human
              else cur_yaw + wrap_angle(2 * (push_yaw - cur_yaw)) / 2)
  if not human and not TURN_TO_PUSH:
    push_yaw = 0.0

  task = ep.task
  wp = jnp.select([task == 0, task == 1], [reach_wp, push_wp], pick_wp)
  yaw = jnp.select([task == 0, task == 1], [0.0, push_yaw], pick_yaw)
  close = jnp.select([task == 0, task == 1], [0.0 if not human else 0.15, 1.0], pick_close)
  done = jnp.select([task == 0, task == 1], [False, push_done], pick_done)
  # A block dropped while lifting, carrying or lowering is picked up again from the start.
  dropped = (task >= 2) & (phase >= 3) & (phase <= 5) & (jnp.linalg.norm(held_offset) > 0.05)
  restart = dropped | ((task == 1) & (push_phase == 2) & off_line & (dist >= PUSH_SETTLED))
  action = emb.expert_action(data, wp, yaw, close)
  return action, _advance(es, done, pick_yaw, restart)
