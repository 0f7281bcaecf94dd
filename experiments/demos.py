"""mimic-video's headline in miniature: success against the number of action-labelled robot demos, for the VAM
(its action decoder on a frozen stage-1 video model) and the image baseline, each trained on the first N demos
of every (robot, task) and evaluated in closed loop at every checkpoint (success versus step: convergence).

    python experiments/demos.py --data_dir out/demo/data --video_workdir out/demo/video_s4 --out out/demos \
        [--demos 2 4 8 16 32] [--methods baseline vam vam_layer1 vam_layer4] [--steps 3000] \
        [--tau_v 0 0.25 0.5 0.75 1]

Each run is `python -m vam.train` (resumes by itself) then `python -m vam.eval --step S` per checkpoint, in
separate processes as a user would start them; a step already in a run's `eval/report.json` is skipped, so the
driver can be stopped and started again, and drivers with different `--demos` / `--methods` may run at once.
Both methods see robot data only (`sim_robot`; the VAM's video model saw all video in stage 1) and no mutual
imitation; the VAM adopts its video model's frames and stride. Every VAM evaluation also measures the offline
action error at each inference tau_v of `TAU_V`; `--tau_v` adds closed-loop evaluations of the last checkpoint
at those tau_v (`OUT/<run>/eval_tau_v/<tau_v>/`). `vam_layer1` / `vam_layer4` read the video DiT's first /
last block instead of block 3 (the layer-k curve); `vam_clean_future` / `vam_no_future` train the decoder only on the
clean future / only on the context (the oracle rung: what the future is worth to the decoder).
Results, rebuilt from the run folders `OUT/<method>_<N>/`: `OUT/results.json` ({method: {N: {train_seconds,
by_step: {step: success, cells, offline error}, closed_loop_by_tau_v}}}), `OUT/results.md` (success at the last
step by N, the fewest demos with which each method reaches the baseline's best, success by step, the tau_v
curves) and `OUT/success_vs_demos.svg`.
"""

import argparse
import json
import math
import os
import re
import time

import runner

from vam import atomic
from vam.eval import report

# Reach and push, easy worlds of the seen layout, fixed-seed episodes (--episodes per (robot, task) cell).
def eval_args(episodes: int) -> list[str]:
  return ["--config.eval.tasks=['reach', 'push']", "--config.eval.modes=['easy']", "--config.eval.splits=['train']",
          f"--config.eval.episodes={episodes}", "--config.eval.num_envs=32", "--config.eval.videos_per_task=0",
          "--config.eval.offline_windows=256"]
ROBOT_ONLY = ["--config.data.mixture={'sim_robot': 1.0, 'sim_human': 0.0}", "--config.data.mapping.directions=[]"]
METHODS = {  # config file, extra overrides
    "baseline": ("quickstart.py", []),  # robot demos only already (the hand's data: statistics)
    "vam": ("mutual_pretrain.py", ROBOT_ONLY),  # the decoder reads block k = 3 of 4 (METHOD.md: ~2/3 of depth)
  # The layer-k curve: the first and the last block of the quickstart video DiT (4 blocks).
  "vam_layer1": ("mutual_pretrain.py", ROBOT_ONLY + ["--config.model.layer=1"]),
  "vam_layer4": ("mutual_pretrain.py", ROBOT_ONLY + ["--config.model.layer=4"]),
  # Does the decoder use the future at all? Trained only on the clean ground-truth future (tau_v = 0, which
  # inference then imagines with the video flow) vs only on pure noise (tau_v = 1, the context alone): the gap
  # in offline error at those tau_v is what the future is worth to this readout, however good the video model.
  "vam_clean_future": ("mutual_pretrain.py", ROBOT_ONLY + ["--config.model.tau_v=0.0",
                                                          "--config.model.tau_v_inference_fraction=1.0"]),
  "vam_no_future": ("mutual_pretrain.py", ROBOT_ONLY + ["--config.model.tau_v=1.0",
                                                       "--config.model.tau_v_inference_fraction=1.0"]),
}
TAU_V = (0.0, 0.25, 0.5, 0.75, 1.0)  # inference tau_v of the VAM's offline error curve (every VAM evaluation)


def _pooled_rmse(slots: dict, prefix: str = "") -> float | None:
  """Normalised action RMSE pooled over every slot of an offline evaluation ({slot: row})."""
  n = sum(v["entries"] for v in slots.values())
  return math.sqrt(sum(v[f"{prefix}rmse_normalised"] ** 2 * v["entries"] for v in slots.values()) / n) if n else None


def _summary(evaluation: dict) -> dict:
  """Pooled success, its cells, and the offline action error (normalised RMSE, pooled; hold-still beside it)."""
  cells = {f"{c['embodiment']}/{c['task']}": dict(rate=c["success_rate"], ci95=c["ci95"], successes=c["successes"],
                                                  episodes=c["episodes"]) for c in evaluation["cells"]}
  wins, n = sum(c["successes"] for c in cells.values()), sum(c["episodes"] for c in cells.values())
  out = dict(mean=wins / max(n, 1), successes=wins, episodes=n, cells=cells)
  if evaluation.get("offline"):
    out["offline_rmse"] = _pooled_rmse(evaluation["offline"])
    out["hold_rmse"] = _pooled_rmse(evaluation["offline"], "hold_")
  if evaluation.get("offline_by_tau_v"):
    out["offline_rmse_by_tau_v"] = {f"{float(t):g}": _pooled_rmse(slots) for t, slots in evaluation["offline_by_tau_v"].items()}
  if evaluation.get("future_oracle"):
    o = evaluation["future_oracle"]
    out["future_oracle"] = dict(executed_steps=o["executed_steps"], future_steps=o["future_steps"],
                                ratio=o["oracle_ratio"], executed={k: r["executed"] for k, r in o["rows"].items()})
  return out


def _by_step(report_path: str) -> dict:
  """{step: summary} of an evaluation report (the newest evaluation of each step)."""
  if not os.path.exists(report_path):
    return {}
  return {str(ev["step"]): _summary(ev) for ev in json.load(open(report_path))["evaluations"]}


def collect(out: str) -> dict:
  """results.json's contents, rebuilt from the run folders `OUT/<method>_<N>` (so drivers started at once with
  different `--demos` / `--methods` never overwrite each other's results)."""
  results = {}
  runs = [(m, int(n)) for m, n in (re.fullmatch(r"(.+)_(\d+)", d).groups() for d in sorted(os.listdir(out))
                                   if re.fullmatch(r"(.+)_(\d+)", d) and os.path.isdir(os.path.join(out, d)))
          if m in METHODS]
  for method in METHODS:
    for n in sorted(n for m, n in runs if m == method):
      w = os.path.join(out, f"{method}_{n}")
      timing = os.path.join(w, "train_seconds.json")
      r = dict(by_step=_by_step(os.path.join(w, "eval", "report.json")),
               **(json.load(open(timing)) if os.path.exists(timing) else {}))
      tau = {f"{float(t):g}": final(dict(by_step=_by_step(os.path.join(w, "eval_tau_v", t, "report.json"))))
             for t in (sorted(os.listdir(os.path.join(w, "eval_tau_v"))) if os.path.isdir(os.path.join(w, "eval_tau_v"))
                       else [])}
      if tau := {t: v for t, v in tau.items() if v}:
        r["closed_loop_by_tau_v"] = tau
      if foresight := final(dict(by_step=_by_step(os.path.join(w, "eval_foresight", "report.json")))):
        r["foresight"] = foresight
      results.setdefault(method, {})[str(n)] = r
  return results


def final(run: dict) -> dict | None:
  steps = run.get("by_step", {})
  return steps[max(steps, key=int)] if steps else None


def _with_interval(f: dict) -> str:
  """'0.31 (10/32; 0.18-0.49)': pooled success, its counts and the 95% Wilson interval."""
  lo, hi = report.wilson(f["successes"], f["episodes"])
  return f"{f['mean']:.2f} ({f['successes']}/{f['episodes']}; {lo:.2f}-{hi:.2f})"


def demos_to_reach(results: dict, method: str, target: float) -> int | None:
  """The fewest demos with which `method`'s final success reaches `target` (None: never)."""
  hits = [int(n) for n, r in results.get(method, {}).items() if final(r) and final(r)["mean"] >= target]
  return min(hits) if hits else None


def table(results: dict) -> str:
  """Final pooled success by N; the fewest demos reaching the baseline's best; success by step (convergence);
  the offline error; the VAM's curves in inference tau_v."""
  ns = sorted({int(n) for runs in results.values() for n in runs})
  lines = ["| method | " + " | ".join(f"N = {n}" for n in ns) + " |", "|" + "---|" * (len(ns) + 1)]
  for method, runs in results.items():
    cell = lambda n: _with_interval(final(runs[str(n)])) if str(n) in runs and final(runs[str(n)]) else ""
    lines.append(f"| {method} | " + " | ".join(cell(n) for n in ns) + " |")
  best = max((final(r)["mean"] for r in results.get("baseline", {}).values() if final(r)), default=None)
  if best is not None:
    lines.append("")
    lines.append(f"baseline's best pooled success {best:.2f}; demos per task to reach it: " + ", ".join(
        f"{m} {demos_to_reach(results, m, best) or 'not reached'}" for m in results))
  lines += ["", "| method, N | success by step | offline RMSE (normalised): policy / hold still | train s |",
            "|---|---|---|---|"]
  for method, runs in results.items():
    for n, r in sorted(runs.items(), key=lambda kv: int(kv[0])):
      if not final(r):
        continue
      steps = " / ".join(f"{r['by_step'][s]['mean']:.2f}" for s in sorted(r["by_step"], key=int))
      f = final(r)
      err = f"{f['offline_rmse']:.3f} / {f['hold_rmse']:.3f}" if f.get("offline_rmse") is not None else ""
      lines.append(f"| {method}, {n} | {steps} (steps {', '.join(sorted(r['by_step'], key=int))}) | {err} | "
                   f"{r.get('train_seconds', '')} |")
  oracle = [(m, n, r) for m, runs in results.items() for n, r in sorted(runs.items(), key=lambda kv: int(kv[0]))
            if final(r) and (r.get("foresight") or final(r).get("future_oracle"))]
  if oracle:
    lines += ["", "| VAM run, N | success | with the true future (foresight) | offline: true future / context only |",
              "|---|---|---|---|"]
    for method, n, r in oracle:
      f, fo, o = final(r), r.get("foresight"), final(r).get("future_oracle")
      lines.append(f"| {method}, {n} | {_with_interval(f)} | " + (_with_interval(fo) if fo else "") + " | " +
                   (f"{o['executed']['true_future@0']:.4f} / {o['executed']['context_only']:.4f} = {o['ratio']:.2f}"
                    if o else "") + " |")
  curves = [(m, n, r) for m, runs in results.items() for n, r in runs.items()
            if final(r) and (r.get("closed_loop_by_tau_v") or final(r).get("offline_rmse_by_tau_v"))]
  if curves:
    lines += ["", "| VAM run, N | inference tau_v | closed-loop success | offline RMSE (normalised) |", "|---|---|---|---|"]
    for method, n, r in curves:
      closed, offline = r.get("closed_loop_by_tau_v", {}), final(r).get("offline_rmse_by_tau_v", {})
      for t in sorted(set(closed) | set(offline), key=float):
        c = f"{closed[t]['mean']:.2f} ({closed[t]['successes']}/{closed[t]['episodes']})" if t in closed else ""
        o = f"{offline[t]:.4f}" if t in offline else ""
        lines.append(f"| {method}, {n} | {float(t):g} | {c} | {o} |")
  return "\n".join(lines)


def svg(results: dict) -> str:
  """Pooled final success (0-1) against demos per task (log2 axis), one line per method."""
  ns = sorted({int(n) for runs in results.values() for n in runs})
  w, h, left, right, top, bottom = 560, 280, 48, 110, 30, 40
  if len(ns) < 2:
    return ""
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
    atomic.write_text(os.path.join(out, name), text)


def _train(args, method: str, n: int, w: str, log: str) -> None:
  config, extra = METHODS[method]
  t0 = time.time()
  runner.run(["-m", "vam.train", "--config", f"experiments/{config}", "--workdir", w,
              f"--config.data_dir={args.data_dir}", f"--config.data.demos_per_task={n}",
              f"--config.total_steps={args.steps}", f"--config.checkpoint_every={args.checkpoint_every}",
              "--config.keep_checkpoints=100", *extra,
              *([f"--config.model.video_workdir={args.video_workdir}"] if _is_vam(method) else []),
              *args.config_overrides], log)
  with open(os.path.join(w, "train_seconds.json"), "w") as f:
    json.dump(dict(train_seconds=round(time.time() - t0)), f)


# What every run of one OUT folder shares; a resumed driver skips trained runs and evaluated steps, so a folder
# holding runs made another way would be silently mixed into one table.
RECIPE_KEYS = ("data_dir", "video_workdir", "steps", "checkpoint_every", "episodes", "config_overrides")


def _check_recipe(args) -> None:
  """Writes OUT/recipe.json on a new folder; refuses (naming the keys) to add runs to one made another way."""
  path = os.path.join(args.out, "recipe.json")
  recipe = {k: (os.path.abspath(getattr(args, k)) if k.endswith(("_dir", "_workdir")) else getattr(args, k))
            for k in RECIPE_KEYS}
  if os.path.exists(path):
    old = json.load(open(path))
    if diff := sorted(k for k in RECIPE_KEYS if old.get(k) != recipe[k]):
      raise SystemExit(f"{path}: this folder's runs were made with " + ", ".join(f"--{k}={old.get(k)!r}" for k in diff)
                       + " (now " + ", ".join(f"{recipe[k]!r}" for k in diff) + "); use another --out or the same "
                       "settings")
  elif collect(args.out):
    raise SystemExit(f"{args.out}: holds runs but no recipe.json (made by an older driver, settings unknown); use "
                     "another --out, or write its recipe.json by hand if you know them")
  else:
    atomic.write_json(path, recipe)


def _is_vam(method: str) -> bool:
  return METHODS[method][0] == "mutual_pretrain.py"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir", required=True)
  p.add_argument("--video_workdir", required=True, help="the frozen stage-1 video model of the VAM runs")
  p.add_argument("--out", required=True)
  p.add_argument("--demos", nargs="+", type=int, default=[2, 4, 8, 16, 32])
  p.add_argument("--methods", nargs="+", default=["baseline", "vam"], choices=sorted(METHODS))
  p.add_argument("--steps", type=int, default=3000, help="training steps of every run")
  p.add_argument("--checkpoint_every", type=int, default=1000)
  p.add_argument("--episodes", type=int, default=16, help="closed-loop episodes per (robot, task) cell")
  p.add_argument("--foresight", action="store_true",
                 help="VAM runs: also roll the last checkpoint out with the true future (--agent foresight)")
  p.add_argument("--tau_v", nargs="*", type=float, default=[],
                 help="VAM runs: also evaluate the last checkpoint in closed loop at each of these inference tau_v")
  p.add_argument("--config_overrides", nargs="*", default=[], help="--config.key=value for every run")
  args = p.parse_args(argv)
  if any(n < 1 for n in args.demos):
    raise SystemExit(f"--demos {args.demos}: every N must be >= 1")
  if any(not 0.0 <= t <= 1.0 for t in args.tau_v):
    raise SystemExit(f"--tau_v {args.tau_v}: every tau_v must be in [0, 1]")
  os.makedirs(args.out, exist_ok=True)
  _check_recipe(args)
  for n in args.demos:
    for method in args.methods:
      w, log = os.path.join(args.out, f"{method}_{n}"), os.path.join(args.out, f"{method}_{n}.log")
      if not os.path.exists(os.path.join(w, "train_seconds.json")):
        _train(args, method, n, w, log)
      evaluation = eval_args(args.episodes)
      extra_eval = [f"--config.eval.tau_v_values={list(TAU_V)}"] if _is_vam(method) else []
      done = _by_step(os.path.join(w, "eval", "report.json"))
      for step in runner.checkpoint_steps(w):
        if str(step) not in done:
          runner.run(["-m", "vam.eval", "--workdir", w, "--step", str(step), "--out", os.path.join(w, "eval"),
                      *evaluation, *extra_eval], log)
      last = runner.checkpoint_steps(w)[-1]
      for t in args.tau_v if _is_vam(method) else []:
        out = os.path.join(w, "eval_tau_v", f"{t:g}")
        if str(last) not in _by_step(os.path.join(out, "report.json")):
          runner.run(["-m", "vam.eval", "--workdir", w, "--step", str(last), "--out", out, *evaluation,
                      f"--config.model.tau_v={t}", "--config.eval.offline_windows=0"], log)
      if args.foresight and _is_vam(method):
        out = os.path.join(w, "eval_foresight")
        if str(last) not in _by_step(os.path.join(out, "report.json")):
          runner.run(["-m", "vam.eval", "--workdir", w, "--step", str(last), "--out", out, "--agent", "foresight",
                      *evaluation, "--config.eval.offline_windows=0"], log)
      _save(collect(args.out), args.out)
      r = collect(args.out)[method][str(n)]
      print(f"{method} N={n}: {final(r)['mean']:.2f}", flush=True)
  results = collect(args.out)
  _save(results, args.out)
  print(table(results))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
