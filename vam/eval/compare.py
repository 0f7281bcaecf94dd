"""`python -m vam.eval.compare --run NAME=WORKDIR ... --out DIR`: one table comparing the newest evaluation of
several runs (e.g. the VAM against the image baseline), per task and mode (easy/hard), plus each run's offline
action error (and, for a VAM, its error as a function of the inference tau_v and its future oracle). Reads the
runs' `eval/report.json` (written by `python -m vam.eval`), or a given evaluation folder's `report.json`; writes `DIR/comparison.json` and `.md`, prints the
table and, last, `report: <path of comparison.json>`.
"""

import json
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags; defined only when run as a program, so importing the module (a test, a driver)
  registers nothing in absl's global flag set."""
  flags.DEFINE_multi_string("run", [], "NAME=WORKDIR of an evaluated run (in table order)")
  flags.DEFINE_string("out", None, "where comparison.json/.md go")


def newest_evaluation(workdir: str) -> dict:
  """The newest evaluation of a run: WORKDIR/eval/report.json, or WORKDIR/report.json when WORKDIR is itself an
  evaluation folder (e.g. a VAM's `eval_foresight`, its decoder given the true future)."""
  path = os.path.join(workdir, "report.json")
  if not os.path.exists(path):
    path = os.path.join(workdir, "eval", "report.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: evaluate the run first (python -m vam.eval --workdir {workdir})")
  with open(path) as f:
    evaluations = json.load(f).get("evaluations", [])
  if not evaluations or "cells" not in evaluations[-1]:
    raise ValueError(f"{path} has no closed-loop evaluation (is {workdir} a policy's workdir?)")
  return evaluations[-1]


def rates(evaluation: dict) -> dict:
  """{(embodiment, task, mode): (successes, episodes)} summed over splits; embodiment 'all' pools them."""
  out = {}
  for c in evaluation["cells"]:
    for emb in (c["embodiment"], "all"):
      k, n = out.get((emb, c["task"], c["mode"]), (0, 0))
      out[(emb, c["task"], c["mode"])] = (k + c["successes"], n + c["episodes"])
  return out


def compare(runs: dict) -> dict:
  """{name: workdir} -> the comparison (JSON-able): success rates per (run, embodiment) row and task/mode column."""
  evals = {name: newest_evaluation(w) for name, w in runs.items()}
  per_run = {name: rates(e) for name, e in evals.items()}
  keys = [k for r in per_run.values() for k in r]
  tasks, modes = list(dict.fromkeys(t for _, t, _ in keys)), list(dict.fromkeys(m for _, _, m in keys))
  table, episodes = {}, {}
  for name, r in per_run.items():
    for emb in [e for e in dict.fromkeys(e for e, _, _ in r) if e != "all"] + ["all"]:
      row = f"{name} {emb}"
      table[row] = {f"{t}/{m}": (r[(emb, t, m)][0] / r[(emb, t, m)][1] if (emb, t, m) in r else None)
                    for t in tasks for m in modes}
      sel = [v for (e, _, _), v in r.items() if e == emb]
      table[row]["mean"] = sum(k for k, _ in sel) / max(sum(n for _, n in sel), 1)
      episodes[row] = sum(n for _, n in sel)
  return dict(runs={n: dict(workdir=os.path.abspath(w), step=evals[n]["step"]) for n, w in runs.items()},
              tasks=tasks, modes=modes, success=table, episodes=episodes,
              offline={n: {s: v["rmse_native"] for s, v in e.get("offline", {}).items()} for n, e in evals.items()},
              state_estimate_m={n: {p: v["error_m"] for p, v in e["state_estimate"].items()}
                                for n, e in evals.items() if e.get("state_estimate")},
              offline_by_tau_v={n: {t: {s: v["rmse_native"] for s, v in slots.items()}
                                    for t, slots in e["offline_by_tau_v"].items()}
                                for n, e in evals.items() if e.get("offline_by_tau_v")},
              future_oracle={n: e["future_oracle"] for n, e in evals.items() if e.get("future_oracle")})


def markdown(c: dict) -> str:
  cols = [f"{t}/{m}" for t in c["tasks"] for m in c["modes"]] + ["mean"]
  fmt = lambda v: "-" if v is None else f"{v:.2f}"
  lines = ["| run, embodiment | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
  for name, row in c["success"].items():
    lines.append(f"| {name} | " + " | ".join(fmt(row.get(k)) for k in cols) + " |")
  for name, parts in c.get("state_estimate_m", {}).items():
    lines.append("")
    lines.append(f"{name}: held-out state estimate (probe), mean distance: " +
                 ", ".join(f"{p} {v * 100:.1f} cm" for p, v in parts.items()))
  for name, curve in c["offline_by_tau_v"].items():
    slots = sorted({s for errs in curve.values() for s in errs if s.endswith("_joints")})
    for slot in slots:
      lines.append("")
      lines.append(f"{name}: offline {slot} RMSE (native) by inference tau_v: " +
                   ", ".join(f"{t}: {errs[slot]:.4f}" for t, errs in curve.items() if slot in errs))
  for name, oracle in c.get("future_oracle", {}).items():
    k, cov = oracle["executed_steps"], oracle["future_steps"]
    lines += ["", f"{name}: what the future is worth to its decoder (held-out windows, normalised action RMSE; "
                  f"true future / context only over steps 0-{k - 1}: {oracle['oracle_ratio']:.2f})", "",
              f"| decoder reads | steps 0-{k - 1} (executed) | steps 0-{cov - 1} (future frames) | beyond |",
              "|---|---|---|---|"]
    for row, r in oracle["rows"].items():
      label = f"imagined@{oracle['imagined_tau_v']:g}" if row == "imagined" else row
      lines.append(f"| {label} | {r['executed']:.4f} | {r['covered']:.4f} | {'-' if r['beyond'] is None else format(r['beyond'], '.4f')} |")
  return "\n".join(lines)


def main(argv):
  del argv
  runs = {}
  for item in FLAGS.run:
    name, sep, workdir = item.partition("=")
    if not sep or not name or not workdir:
      raise app.UsageError(f"--run={item!r}: expected NAME=WORKDIR")
    runs[name] = workdir
  if not runs or not FLAGS.out:
    raise app.UsageError("--run (one or more) and --out are required")
  c = compare(runs)
  os.makedirs(FLAGS.out, exist_ok=True)
  path = os.path.abspath(os.path.join(FLAGS.out, "comparison.json"))
  with open(path, "w") as f:
    json.dump(c, f, indent=1)
  text = markdown(c)
  with open(os.path.join(FLAGS.out, "comparison.md"), "w") as f:
    f.write(text + "\n")
  print("closed-loop success rate per task/mode (episodes per row: " +
        ", ".join(f"{n} {e}" for n, e in c["episodes"].items()) + ")")
  print(text)
  print(f"report: {path}")


if __name__ == "__main__":
  define_flags()
  try:
    app.run(main)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
