"""mimic-video's headline in miniature: success against the number of action-labelled robot demos, for the VAM
(its action decoder on a frozen stage-1 video model) and the image baseline, each trained on the first N demos
of every (robot, task) and evaluated in closed loop at every checkpoint (success versus step: convergence).

    python experiments/demos.py --data_dir out/demo/data --video_workdir out/v15/stride4 --out out/demos \
        [--demos 2 4 8 16 32] [--methods baseline vam] [--steps 3000]

Each run is `python -m vam.train` (resumes by itself) then `python -m vam.eval --step S` per checkpoint, in
separate processes as a user would start them; an evaluated step already in `OUT/results.json` is skipped, so
the driver can be stopped and started again. Both methods see robot data only (`sim_robot`; the VAM's video
model saw all video in stage 1) and no mutual imitation; the VAM adopts its video model's frames and stride.
Results: `OUT/results.json` ({method: {N: {train_seconds, by_step: {step: cells and mean}}}}), `OUT/results.md`
(success at the last step by N, and the fewest demos with which each method reaches the baseline's best) and
`OUT/success_vs_demos.svg`.
"""

import argparse
import json
import os
import time

import runner

# Reach and push, easy worlds of the seen layout, 16 fixed-seed episodes per (robot, task) cell.
EVAL = ["--config.eval.tasks=['reach', 'push']", "--config.eval.modes=['easy']", "--config.eval.splits=['train']",
        "--config.eval.episodes=16", "--config.eval.num_envs=32", "--config.eval.videos_per_task=0",
        "--config.eval.offline_windows=256"]
ROBOT_ONLY = ["--config.data.mixture={'sim_robot': 1.0, 'sim_human': 0.0}", "--config.data.mapping.directions=[]"]
METHODS = {  # config file, extra overrides
    "baseline": ("quickstart.py", []),  # robot demos only already (the hand's data: statistics)
    "vam": ("mutual_pretrain.py", ROBOT_ONLY),
}


def _summary(evaluation: dict) -> dict:
  cells = {f"{c['embodiment']}/{c['task']}": dict(rate=c["success_rate"], ci95=c["ci95"], successes=c["successes"],
                                                  episodes=c["episodes"]) for c in evaluation["cells"]}
  wins, n = sum(c["successes"] for c in cells.values()), sum(c["episodes"] for c in cells.values())
  return dict(mean=wins / max(n, 1), successes=wins, episodes=n, cells=cells)


def final(run: dict) -> dict | None:
  steps = run.get("by_step", {})
  return steps[max(steps, key=int)] if steps else None


def demos_to_reach(results: dict, method: str, target: float) -> int | None:
  """The fewest demos with which `method`'s final success reaches `target` (None: never)."""
  hits = [int(n) for n, r in results.get(method, {}).items() if final(r) and final(r)["mean"] >= target]
  return min(hits) if hits else None


def table(results: dict) -> str:
  ns = sorted({int(n) for runs in results.values() for n in runs})
  lines = ["| method | " + " | ".join(f"N = {n}" for n in ns) + " |", "|" + "---|" * (len(ns) + 1)]
  for method, runs in results.items():
    cell = lambda n: (f"{final(runs[str(n)])['mean']:.2f} ({final(runs[str(n)])['successes']}/"
                      f"{final(runs[str(n)])['episodes']})" if str(n) in runs and final(runs[str(n)]) else "")
    lines.append(f"| {method} | " + " | ".join(cell(n) for n in ns) + " |")
  best = max((final(r)["mean"] for r in results.get("baseline", {}).values() if final(r)), default=None)
  if best is not None:
    lines.append("")
    lines.append(f"baseline's best pooled success {best:.2f}; demos per task to reach it: " + ", ".join(
        f"{m} {demos_to_reach(results, m, best) or 'not reached'}" for m in results))
  return "\n".join(lines)


def svg(results: dict) -> str:
  """Pooled final success (0-1) against demos per task (log2 axis), one line per method."""
  ns = sorted({int(n) for runs in results.values() for n in runs})
  w, h, left, right, top, bottom = 560, 280, 48, 110, 30, 40
  if len(ns) < 2:
    return ""
  import math  # pylint: disable=g-import-not-at-top
  x = lambda n: left + (w - left - right) * (math.log2(n) - math.log2(ns[0])) / (math.log2(ns[-1]) - math.log2(ns[0]))
  y = lambda r: top + (h - top - bottom) * (1.0 - r)
  out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
         f'<text x="{left}" y="16" font-size="13">Success versus demos per (robot, task)</text>']
  for r in (0.0, 0.5, 1.0):
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(r):.1f}" y2="{y(r):.1f}" stroke="#ddd"/>'
               f'<text x="{left - 6}" y="{y(r) + 4:.1f}" text-anchor="end">{r:.1f}</text>')
  for n in ns:
    out.append(f'<text x="{x(n):.1f}" y="{h - bottom + 16}" text-anchor="middle">{n}</text>')
  for i, (method, runs) in enumerate(results.items()):
    colour = ("#c63", "#36c", "#393", "#939")[i % 4]
    pts = [(int(n), final(r)["mean"]) for n, r in sorted(runs.items(), key=lambda kv: int(kv[0])) if final(r)]
    out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="' +
               " ".join(f"{x(n):.1f},{y(m):.1f}" for n, m in pts) + '"/>')
    out += [f'<circle cx="{x(n):.1f}" cy="{y(m):.1f}" r="3" fill="{colour}"><title>{method} N={n}: {m:.2f}</title></circle>'
            for n, m in pts]
    out.append(f'<text x="{w - right + 8}" y="{top + 14 * i + 10}" fill="{colour}">{method}</text>')
  return "\n".join(out + ["</svg>"])


def _save(results: dict, out: str) -> None:
  for name, text in (("results.json", json.dumps(results, indent=1)), ("results.md", table(results) + "\n"),
                     ("success_vs_demos.svg", svg(results))):
    path = os.path.join(out, name)
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir", required=True)
  p.add_argument("--video_workdir", required=True, help="the frozen stage-1 video model of the VAM runs")
  p.add_argument("--out", required=True)
  p.add_argument("--demos", nargs="+", type=int, default=[2, 4, 8, 16, 32])
  p.add_argument("--methods", nargs="+", default=list(METHODS), choices=sorted(METHODS))
  p.add_argument("--steps", type=int, default=3000, help="training steps of every run")
  p.add_argument("--checkpoint_every", type=int, default=1000)
  p.add_argument("--config_overrides", nargs="*", default=[], help="--config.key=value for every run")
  args = p.parse_args(argv)
  if any(n < 1 for n in args.demos):
    raise SystemExit(f"--demos {args.demos}: every N must be >= 1")
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "results.json")
  results = json.load(open(path)) if os.path.exists(path) else {}
  for n in args.demos:
    for method in args.methods:
      config, extra = METHODS[method]
      w, log = os.path.join(args.out, f"{method}_{n}"), os.path.join(args.out, f"{method}_{n}.log")
      r = results.setdefault(method, {}).setdefault(str(n), dict(by_step={}))
      if "train_seconds" not in r:
        t0 = time.time()
        runner.run(["-m", "vam.train", "--config", f"experiments/{config}", "--workdir", w,
              f"--config.data_dir={args.data_dir}", f"--config.data.demos_per_task={n}",
              f"--config.total_steps={args.steps}", f"--config.checkpoint_every={args.checkpoint_every}",
              "--config.keep_checkpoints=100", *extra,
              *([f"--config.model.video_workdir={args.video_workdir}"] if method == "vam" else []),
              *args.config_overrides], log)
        r["train_seconds"] = round(time.time() - t0)
        _save(results, args.out)
      for step in runner.checkpoint_steps(w):
        if str(step) in r["by_step"]:
          continue
        out = os.path.join(w, "eval")
        runner.run(["-m", "vam.eval", "--workdir", w, "--step", str(step), "--out", out, *EVAL], log)
        rep = json.load(open(os.path.join(out, "report.json")))
        r["by_step"][str(step)] = _summary([e for e in rep["evaluations"] if e["step"] == step][-1])
        _save(results, args.out)
      print(f"{method} N={n}: {final(r)['mean']:.2f}", flush=True)
  _save(results, args.out)
  print(table(results))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
