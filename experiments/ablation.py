"""MiVLA's ablation in miniature: does pretraining the action decoder on human data (mutual imitation) make a
few-demo fine-tune on a new robot better? Four pretraining settings, each followed by the same fine-tune on N
demos per task of the target robot (which no pretraining saw), evaluated alike in closed loop.

    python experiments/ablation.py --data_dir out/demo/data --video_workdir out/demo/video_s4 --out out/ablation \
        [--settings scratch human_only human_to_robot both] [--demos 4] [--robot arm6] \
        [--pretrain_steps 3000] [--finetune_steps 1500]

Settings (experiments/mutual_pretrain.py variants; the pretraining data never holds the target robot):
- `scratch`: no pretraining, the decoder starts from random weights on the same frozen video model;
- `human_only`: the simulated hand's episodes only, mapped onto the robots' action slots;
- `human_to_robot`: the hand and the other robot, the hand mapped onto the robots;
- `both`: the hand and the other robot, mapped both ways (human -> robot and robot -> human).
The fine-tune (experiments/finetune.py) is one recipe for every setting: the target robot's first N demos per
task, `--finetune_steps` at one learning rate, checkpoints every `--checkpoint_every`, each evaluated on the
target robot (reach, push; easy worlds of the seen layout, 16 episodes per cell); the last one also on the
held-out worlds (unseen positions / objects / scene). Each pretrained decoder is also evaluated as it is on the
target robot (N = 0: zero-shot transfer through the mapping).

Resumable like experiments/demos.py: runs are `python -m vam.train` / `python -m vam.eval` processes, a finished
run or evaluated step is skipped. Results, rebuilt from the run folders (`OUT/pretrain_<setting>/`,
`OUT/<setting>_<N>/`): `OUT/results.json` ({setting: {N: {train_seconds, by_step: {step: {split: success}},
heldout: {split: success}}}}) and `OUT/results.md` (success with Wilson 95% intervals, and the ordering).
"""

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling `runner`, also when imported by path
import runner  # pylint: disable=g-import-not-at-top,wrong-import-position

from vam import atomic  # pylint: disable=g-import-not-at-top,wrong-import-position
from vam.eval import report as report_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

SETTINGS = ("scratch", "human_only", "human_to_robot", "both")  # MiVLA's expected ordering, worst to best
ROBOTS = ("arm6", "gantry")
HAND = "human_hand"
HELDOUT = ("unseen_positions", "unseen_objects", "unseen_scene")
EVAL = ["--config.eval.tasks=['reach', 'push']", "--config.eval.modes=['easy']", "--config.eval.episodes=16",
        "--config.eval.num_envs=32", "--config.eval.videos_per_task=0", "--config.eval.offline_windows=0"]


def pretrain_overrides(setting: str, robot: str) -> list[str]:
  """vam.train flags of a setting's pretraining run (none for `scratch`): its embodiments leave out `robot`."""
  if setting not in SETTINGS or setting == "scratch":
    raise ValueError(f"no pretraining for setting {setting!r}; pretrained settings: {list(SETTINGS[1:])}")
  others = [r for r in ROBOTS if r != robot]
  embodiments = [HAND] if setting == "human_only" else [HAND, *others]
  return [f"--config=experiments/mutual_pretrain.py:{setting}", f"--config.data.only_embodiments={embodiments}"]


def summary(evaluation: dict) -> dict:
  """{split: pooled success over the evaluation's cells of that split, with its Wilson 95% interval}."""
  out = {}
  for c in evaluation["cells"]:
    s = out.setdefault(c["split"], dict(successes=0, episodes=0))
    s["successes"] += c["successes"]
    s["episodes"] += c["episodes"]
  for s in out.values():
    s["mean"] = s["successes"] / max(s["episodes"], 1)
    s["ci95"] = list(report_lib.wilson(s["successes"], s["episodes"]))
  return out


def _by_step(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  return {str(ev["step"]): summary(ev) for ev in json.load(open(path))["evaluations"]}


def collect(out: str) -> dict:
  """results.json's contents, from the run folders: `pretrain_<setting>` is N = 0 (the pretrained decoder as it
  is), `<setting>_<N>` a fine-tune on N demos per task."""
  results = {}
  for d in sorted(os.listdir(out)) if os.path.isdir(out) else []:
    m = re.fullmatch(r"pretrain_(.+)", d) or re.fullmatch(r"(.+)_(\d+)", d)
    if not m or m.group(1) not in SETTINGS or not os.path.isdir(os.path.join(out, d)):
      continue
    n = m.group(2) if m.re.groups == 2 else "0"
    w = os.path.join(out, d)
    timing = os.path.join(w, "train_seconds.json")
    r = dict(by_step=_by_step(os.path.join(w, "eval", "report.json")),
             **(json.load(open(timing)) if os.path.exists(timing) else {}))
    heldout = _by_step(os.path.join(w, "eval_heldout", "report.json"))
    if heldout:
      r["heldout"] = heldout[max(heldout, key=int)]
    results.setdefault(m.group(1), {})[n] = r
  return {s: results[s] for s in SETTINGS if s in results}


def final(run: dict, split: str = "train") -> dict | None:
  steps = run.get("by_step", {})
  return steps[max(steps, key=int)].get(split) if steps else None


def _cell(s: dict | None) -> str:
  return f"{s['mean']:.2f} ({s['successes']}/{s['episodes']}; {s['ci95'][0]:.2f}-{s['ci95'][1]:.2f})" if s else ""


def table(results: dict) -> str:
  """Final success by setting and N (seen worlds, then each held-out split), then the observed ordering per N."""
  ns = sorted({int(n) for runs in results.values() for n in runs})
  cols = [("train", n) for n in ns] + [(h, n) for n in ns if n > 0 for h in HELDOUT]
  cols = [c for c in cols if any(_get(results[s], *c) for s in results)]
  head = [f"N = {n}" + ("" if split == "train" else f", {split.replace('_', ' ')}") for split, n in cols]
  lines = ["| pretraining | " + " | ".join(head) + " |", "|" + "---|" * (len(cols) + 1)]
  for s, runs in results.items():
    lines.append(f"| {s} | " + " | ".join(_cell(_get(runs, split, n)) for split, n in cols) + " |")
  for n in ns:
    ranked = sorted(((_get(runs, "train", n)["mean"], s) for s, runs in results.items() if _get(runs, "train", n)))
    if len(ranked) > 1:
      lines.append(f"\nN = {n}, seen worlds, observed ordering (worst to best): "
                   + " < ".join(f"{s} {m:.2f}" for m, s in ranked))
  return "\n".join(lines)


def _get(runs: dict, split: str, n: int) -> dict | None:
  r = runs.get(str(n))
  if not r:
    return None
  return final(r, split) if split == "train" else r.get("heldout", {}).get(split)


def _timed_train(flags: list[str], w: str, log: str) -> None:
  t0 = time.time()
  runner.run(["-m", "vam.train", "--workdir", w, *flags], log)
  with open(os.path.join(w, "train_seconds.json"), "w") as f:
    json.dump(dict(train_seconds=round(time.time() - t0)), f)


def _evaluate(w: str, log: str, robot: str, steps: list[int], out: str, splits: list[str]) -> None:
  done = _by_step(os.path.join(out, "report.json"))
  for step in steps:
    if str(step) not in done:
      runner.run(["-m", "vam.eval", "--workdir", w, "--step", str(step), "--out", out, *EVAL,
                  f"--config.eval.embodiments=['{robot}']", f"--config.eval.splits={splits}"], log)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir", required=True)
  p.add_argument("--video_workdir", required=True, help="the frozen stage-1 video model of every run")
  p.add_argument("--out", required=True)
  p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
  p.add_argument("--demos", nargs="+", type=int, default=[4], help="demos per task of the fine-tune")
  p.add_argument("--robot", default="arm6", choices=ROBOTS, help="the target robot (absent from pretraining)")
  p.add_argument("--pretrain_steps", type=int, default=3000)
  p.add_argument("--finetune_steps", type=int, default=1500)
  p.add_argument("--finetune_lr", type=float, default=1e-3, help="one fine-tune learning rate for every setting")
  p.add_argument("--checkpoint_every", type=int, default=500)
  p.add_argument("--config_overrides", nargs="*", default=[], help="--config.key=value for every training run")
  args = p.parse_args(argv)
  if any(n < 1 for n in args.demos):
    raise SystemExit(f"--demos {args.demos}: every N must be >= 1")
  os.makedirs(args.out, exist_ok=True)
  common = [f"--config.data_dir={args.data_dir}", f"--config.checkpoint_every={args.checkpoint_every}",
            "--config.keep_checkpoints=100", *args.config_overrides]
  for setting in args.settings:
    init = []
    if setting != "scratch":
      w = os.path.join(args.out, f"pretrain_{setting}")
      log = w + ".log"
      flags = pretrain_overrides(setting, args.robot)
      if not os.path.exists(os.path.join(w, "train_seconds.json")):
        _timed_train([*flags, *common,
                      f"--config.total_steps={args.pretrain_steps}",
                      f"--config.model.video_workdir={args.video_workdir}"], w, log)
      last = runner.checkpoint_steps(w)[-1]
      _evaluate(w, log, args.robot, [last], os.path.join(w, "eval"), ["train"])
      init = [f"--config.init_from={w}"]
    for n in args.demos:
      w = os.path.join(args.out, f"{setting}_{n}")
      log = w + ".log"
      if not os.path.exists(os.path.join(w, "train_seconds.json")):
        _timed_train([f"--config=experiments/finetune.py:{'scratch' if setting == 'scratch' else 'pretrained'}",
                      *init, *([f"--config.model.video_workdir={args.video_workdir}"] if not init else []),
                      f"--config.data.only_embodiments=['{args.robot}']", "--config.data.max_episodes=0",
                      f"--config.data.demos_per_task={n}", f"--config.total_steps={args.finetune_steps}",
                      f"--config.optimizer.lr={args.finetune_lr}", *common], w, log)
      steps = runner.checkpoint_steps(w)
      _evaluate(w, log, args.robot, steps, os.path.join(w, "eval"), ["train"])
      _evaluate(w, log, args.robot, steps[-1:], os.path.join(w, "eval_heldout"), list(HELDOUT))
      _save(collect(args.out), args.out)
  results = collect(args.out)
  _save(results, args.out)
  print(table(results))
  return 0


def _save(results: dict, out: str) -> None:
  for name, text in (("results.json", json.dumps(results, indent=1)), ("results.md", table(results) + "\n")):
    atomic.write_text(os.path.join(out, name), text)


if __name__ == "__main__":
  raise SystemExit(main())
