"""Closed-loop traces: where the gripper and the object go, policy beside the scripted expert, from the same
worlds -- the ladder's next look when a success rate says *that* a task fails but not *how* (README
"Diagnostic ladder").

    python -m vam.eval.traces --workdir W --embodiment arm6 --task push [--episodes 16] [--out DIR]
        [--config.eval.replan_every=4 ...]

Writes DIR/traces_<embodiment>_<task>.json (per-episode measures and their means for both agents) and
.svg (one top-down panel per episode: target square or ball, grasp-point paths solid, object paths dashed,
expert green, policy red). The worlds are the evaluation's own (`closed_loop.cell_seeds`), so a trace explains
the matching cell of `python -m vam.eval`.

Measures per episode (metres, table frame): `success`; `final_error` (reach: grasp point to target; other
tasks: object to target, horizontal); `object_moved` (horizontal); `closest_approach` (grasp point to object);
for push, over the steps when the pusher is low (< 5 cm above the table) and within 6 cm of the block:
`push_height` (median grasp-point height), `lateral_offset` (median distance of the pusher from the
block -> target line; the expert starts over beyond 2 cm) and `pusher_ahead` (fraction of those steps with the
pusher on the target's side of the block: it slid past or over it).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from vam.eval import agents, closed_loop
from vam.input import windows
from vam.sim import rollout as sim_rollout
from vam.sim import scene
from vam.sim import tasks

PUSH_LOW = 0.05  # pusher height above the table (m) below which it can touch a block
PUSH_NEAR = 0.06  # horizontal pusher-to-block distance (m) within which a step counts as pushing


def record(restored, embodiment: str, task: str, episodes: int, mode: str = "easy", split: str = "train",
           agent_names=("expert", "policy")) -> dict:
  """Rolls out the expert and the checkpoint's policy on the same `episodes` worlds of one cell.

  Returns {agent: {"success": (T, B) bool, "grasp": (T + 1, B, 3), "privileged": (T + 1, B, P)}} with
  positions in the table frame (vam/sim/env.py `privileged_state`), plus "seeds" and "instructions".
  """
  ec, cfg = restored.config.eval, restored.config
  if embodiment not in ec.embodiments:
    raise ValueError(f"--embodiment={embodiment!r}: config.eval.embodiments is {list(ec.embodiments)}")
  tasks.task_id(task)
  runner = closed_loop.Runner(embodiment, episodes, restored.image_size, cfg.data.camera, ec.backend,
                              ec.physics, ec.push_layout)
  seeds = closed_loop.cell_seeds(ec.seed, list(ec.embodiments).index(embodiment), task, mode, split, episodes)
  keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
  state = runner.reset(mode, split, keys, jnp.full((episodes,), tasks.task_id(task), jnp.int32))
  episode = jax.device_get(state.episode)
  texts = [sim_rollout.instruction(task, int(s), episode, b)[0] for b, s in enumerate(seeds)]
  instruction = jnp.asarray(np.stack([windows.encode_instruction(t) for t in texts]))
  table = np.asarray(episode.table_z)[None, :, None] * np.array([0.0, 0.0, 1.0])
  out = dict(seeds=[int(s) for s in seeds], instructions=texts)
  for name in agent_names:
    agent = (agents.expert(runner.env) if name == "expert" else
             agents.from_eval_config(restored, embodiment, ec))
    success, _, _, trace = closed_loop.rollout(runner.env, agent, tasks.HORIZON[task], False, restored.params,
                                               state, instruction, jax.random.PRNGKey(ec.seed), trace=True)
    trace = jax.device_get(trace)
    out[name] = dict(success=np.asarray(success), grasp=np.asarray(trace["grasp"]) - table,
                     privileged=np.asarray(trace["privileged"]))
  return out


def measures(task: str, success, grasp, privileged) -> list[dict]:
  """Per-episode measures (module docstring) of one agent's trace: success (T, B), grasp (T + 1, B, 3) and
  privileged (T + 1, B, P), table frame."""
  target, obj = privileged[..., 0:3], privileged[..., 3:6]
  rows = []
  for b in range(grasp.shape[1]):
    g, o, t = grasp[:, b], obj[:, b], target[:, b]
    final = g[-1] - t[-1] if task == "reach" else (o[-1] - t[-1]) * np.array([1.0, 1.0, 0.0])
    row = dict(success=bool(success[:, b].any()), final_error=float(np.linalg.norm(final)),
               object_moved=float(np.linalg.norm(o[-1, :2] - o[0, :2])),
               closest_approach=float(np.min(np.linalg.norm(g - o, axis=-1))))
    if task == "push":
      to_target = t[:, :2] - o[:, :2]
      u = to_target / (np.linalg.norm(to_target, axis=-1, keepdims=True) + 1e-9)
      rel = o[:, :2] - g[:, :2]  # pusher -> block
      pushing = (g[:, 2] < PUSH_LOW) & (np.linalg.norm(rel, axis=-1) < PUSH_NEAR)
      lateral = np.abs(u[:, 0] * rel[:, 1] - u[:, 1] * rel[:, 0])
      ahead = np.sum(rel * u, axis=-1) < 0  # the block is behind the pusher, seen from the target
      row.update(pushing_steps=int(pushing.sum()),
                 push_height=float(np.median(g[pushing, 2])) if pushing.any() else None,
                 lateral_offset=float(np.median(lateral[pushing])) if pushing.any() else None,
                 pusher_ahead=float(np.mean(ahead[pushing])) if pushing.any() else None)
    rows.append(row)
  return rows


def summary(rows: list[dict]) -> dict:
  """Means of each measure over the episodes that have it (None where none has)."""
  out = {}
  for k in rows[0]:
    vals = [float(r[k]) for r in rows if r[k] is not None]
    out[k] = float(np.mean(vals)) if vals else None
  return out


def svg(task: str, traces: dict, agent_names, columns: int = 4, size: int = 220) -> str:
  """One top-down panel per episode; each panel is scaled to what moved in it."""
  colours = dict(expert="#2a2", policy="#d22")
  n = traces[agent_names[0]]["grasp"].shape[1]
  rows = -(-n // columns)
  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{columns * size}" height="{rows * size}" '
           f'font-family="sans-serif" font-size="11">']
  for b in range(n):
    x0, y0 = (b % columns) * size, (b // columns) * size
    target = traces[agent_names[0]]["privileged"][0, b, 0:3]
    pts = [traces[a]["grasp"][:, b, :2] for a in agent_names]
    pts += [traces[a]["privileged"][:, b, 3:5] for a in agent_names]
    pts = np.concatenate(pts + [target[None, :2] + d for d in ([-0.05, -0.05], [0.05, 0.05])])
    lo, hi = pts.min(0) - 0.01, pts.max(0) + 0.01
    scale = (size - 20) / max(float(np.max(hi - lo)), 1e-3)
    # Panels draw world x to the right and world y up.
    to_px = lambda p: (x0 + 10 + (p[..., 0] - lo[0]) * scale, y0 + size - 10 - (p[..., 1] - lo[1]) * scale)
    parts.append(f'<rect x="{x0 + 1}" y="{y0 + 1}" width="{size - 2}" height="{size - 2}" fill="none" stroke="#ccc"/>')
    tx, ty = to_px(target[:2])
    if task == "reach":
      parts.append(f'<circle cx="{tx:.1f}" cy="{ty:.1f}" r="{0.04 * scale:.1f}" fill="none" stroke="#888"/>')
    else:
      h = scene.ZONE_HALF * scale
      parts.append(f'<rect x="{tx - h:.1f}" y="{ty - h:.1f}" width="{2 * h:.1f}" height="{2 * h:.1f}" '
                   f'fill="none" stroke="#888"/>')
    title = []
    for a in agent_names:
      tr = traces[a]
      for key, dash in (("grasp", ""), ("object", ' stroke-dasharray="4,3"')):
        path = tr["grasp"][:, b] if key == "grasp" else tr["privileged"][:, b, 3:6]
        if key == "object" and task == "reach":
          continue
        px, py = to_px(path)
        d = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(px, py))
        parts.append(f'<polyline points="{d}" fill="none" stroke="{colours.get(a, "#22d")}" stroke-width="1.2"{dash}/>')
      title.append(f"{a} {'ok' if tr['success'][:, b].any() else 'fail'}")
    parts.append(f'<text x="{x0 + 6}" y="{y0 + 14}">{b}: {", ".join(title)}</text>')
  parts.append("</svg>")
  return "\n".join(parts)


def write(out: str, embodiment: str, task: str, traces: dict, agent_names=("expert", "policy")) -> dict:
  """DIR/traces_<embodiment>_<task>.{json,svg}; returns the JSON's content."""
  os.makedirs(out, exist_ok=True)
  result = dict(embodiment=embodiment, task=task, seeds=traces["seeds"], instructions=traces["instructions"])
  for a in agent_names:
    rows = measures(task, traces[a]["success"], traces[a]["grasp"], traces[a]["privileged"])
    result[a] = dict(summary=summary(rows), episodes=rows)
  stem = os.path.join(out, f"traces_{embodiment}_{task}")
  with open(stem + ".json", "w") as f:
    json.dump(result, f, indent=1)
  with open(stem + ".svg", "w") as f:
    f.write(svg(task, traces, agent_names))
  return result


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  from vam.eval import restore  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m vam.eval.traces", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a policy's training workdir")
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--embodiment", default="arm6")
  parser.add_argument("--task", default="push", choices=tasks.TASKS)
  parser.add_argument("--mode", default="easy", choices=tasks.MODES)
  parser.add_argument("--split", default="train", choices=tasks.SPLITS)
  parser.add_argument("--episodes", type=int, default=16)
  parser.add_argument("--out", default=None, help="default: WORKDIR/eval")
  args, rest = parser.parse_known_args(argv)
  overrides = []
  for arg in rest:  # --config.key=value, applied to the checkpoint's saved config (as `python -m vam.eval`)
    if not (arg.startswith("--config.") and "=" in arg):
      parser.error(f"unexpected argument {arg!r} (overrides are --config.key=value)")
    key, value = arg[len("--config."):].split("=", 1)
    overrides.append((key, value))
  restored = restore.load(args.workdir, args.step, overrides)
  traces = record(restored, args.embodiment, args.task, args.episodes, args.mode, args.split)
  out = args.out or os.path.join(args.workdir, "eval")
  result = write(out, args.embodiment, args.task, traces)
  for a in ("expert", "policy"):
    print(a, json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result[a]["summary"].items()}))
  print(f"traces: {os.path.abspath(os.path.join(out, f'traces_{args.embodiment}_{args.task}'))}.{{json,svg}}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
