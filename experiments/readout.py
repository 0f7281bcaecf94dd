"""Does the decoder read the future? The readout ablation behind README "Does the decoder read the future?": VAM
decoders on one frozen video model, each trained with one change to how it reads the video features, then scored
by the future oracle (vam/eval/offline.py `future_oracle`: held-out windows, the true future vs the context
alone vs another window's future vs the imagined future) and, with `--closed_loop`, rolled out with the true
future (`--agent foresight`, the VAM with a perfect video model) and as it is (the imagined future).

    python experiments/readout.py --data_dir out/demo/data --video_workdir out/demo/video_s4 --out out/readout \
        [--variants default grid8 grid8_future_state] [--steps 1500] [--closed_loop] [--episodes 32]

Every run is `experiments/mutual_pretrain.py` (the demo's VAM: robot and hand data, mutual imitation) with the
variant's overrides, `python -m vam.train` in its own process; a finished run or evaluation is skipped (resumable).
Results, rebuilt from the run folders `OUT/<variant>/`: `OUT/results.json` ({variant: {overrides, steps,
train_seconds, oracle, foresight, policy}}) and `OUT/results.md`.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling `runner`, also when imported by path
import runner  # pylint: disable=g-import-not-at-top,wrong-import-position

from vam import atomic  # pylint: disable=g-import-not-at-top,wrong-import-position

M = "--config.model."
VARIANTS = {  # name -> vam.train overrides of experiments/mutual_pretrain.py (the demo's VAM before this issue)
    "default": [f"{M}grid_keypoints=0", f"{M}future_state_aux=0.0", f"{M}future_state_feed=False"],
    # the context hidden from the decoder on half of the samples whose future is informative (tau_v < 1)
    "context_dropout": [f"{M}grid_keypoints=0", f"{M}future_state_aux=0.0", f"{M}future_state_feed=False",
                        f"{M}context_dropout=0.5"],
    # motion tokens: each future token with its difference to the newest context frame's, and their keypoints
    "motion": [f"{M}grid_keypoints=0", f"{M}future_state_aux=0.0", f"{M}future_state_feed=False",
               f"{M}motion_tokens=True"],
    # 8 keypoints per frame on the latent grid (the tokens unpatchified to their 4 x 4 cells)
    "grid8": [f"{M}grid_keypoints=8", f"{M}future_state_aux=0.0", f"{M}future_state_feed=False"],
    "grid8_context_dropout": [f"{M}grid_keypoints=8", f"{M}future_state_aux=0.0", f"{M}future_state_feed=False",
                              f"{M}context_dropout=0.5"],
    # + the future-state probe: the proprio at each future frame regressed from the tokens, its estimate read
    "grid8_future_state": [f"{M}grid_keypoints=8", f"{M}future_state_aux=1.0", f"{M}future_state_feed=True"],
    # The diagnostic rung: the decoder fed the robot's *true* proprio at the future frames (no inference path; its
    # oracle rows all read it): what a perfectly perceived future would buy this decoder.
    "grid8_privileged_future_state": [f"{M}grid_keypoints=8", f"{M}future_state_aux=1.0",
                                      f"{M}future_state_feed=True", f"{M}future_state_privileged=True"],
    # ... fed beside the proprio, the path the decoder reads the present state through
    "grid8_privileged_future_state_proprio": [f"{M}grid_keypoints=8", f"{M}future_state_aux=1.0",
                                              f"{M}future_state_feed=True", f"{M}future_state_privileged=True",
                                              f"{M}future_state_path=proprio"],
    # the probe's own estimate from the frames fed beside the proprio (a policy: inference reads the estimate)
    "grid8_future_state_proprio": [f"{M}grid_keypoints=8", f"{M}future_state_aux=1.0", f"{M}future_state_feed=True",
                                   f"{M}future_state_path=proprio"],
}
ORACLE_SCRIPT = """
import json, sys
from vam.eval import offline, restore
w, out, noise = sys.argv[1], sys.argv[2], float(sys.argv[3])
r = restore.load(w)
o = offline.future_oracle(r, r.config.data_dir, 256, 64, 0, r.config.eval.sample_steps, (0.0, 0.25, 0.5), noise,
                          r.config.eval.replan_every)
json.dump(dict(o, step=r.step), open(out, "w"), indent=1)
"""
CELLS = ["--config.eval.tasks=['reach', 'push']", "--config.eval.modes=['easy']", "--config.eval.splits=['train']",
         "--config.eval.num_envs=32", "--config.eval.videos_per_task=0", "--config.eval.offline_windows=0"]


def closed_loop_summary(report_path: str) -> dict | None:
  """{mean, successes, episodes, cells: {robot/task: rate}} of the newest evaluation in a report (None: none)."""
  if not os.path.exists(report_path):
    return None
  evaluations = json.load(open(report_path))["evaluations"]
  if not evaluations:
    return None
  cells = evaluations[-1]["cells"]
  wins, n = sum(c["successes"] for c in cells), sum(c["episodes"] for c in cells)
  return dict(mean=wins / max(n, 1), successes=wins, episodes=n,
              cells={f"{c['embodiment']}/{c['task']}": dict(rate=c["success_rate"], ci95=c["ci95"],
                                                              successes=c["successes"], episodes=c["episodes"])
                     for c in cells})


def collect(out: str) -> dict:
  results = {}
  for name in VARIANTS:
    w = os.path.join(out, name)
    if not os.path.isdir(w):
      continue
    r = dict(overrides=VARIANTS[name])
    for key, path in (("timing", "train_seconds.json"), ("oracle", "oracle.json")):
      if os.path.exists(os.path.join(w, path)):
        r[key] = json.load(open(os.path.join(w, path)))
    for key, folder in (("foresight", "eval_foresight"), ("policy", "eval")):
      if s := closed_loop_summary(os.path.join(w, folder, "report.json")):
        r[key] = s
    results[name] = r
  return results


def privileged(name: str) -> bool:
  """Whether a variant feeds the decoder the true future joints (offline only: nothing to roll out)."""
  return f"{M}future_state_privileged=True" in VARIANTS.get(name, [])


def table(results: dict) -> str:
  lines = ["| readout | true future@0 | context only | other window's future | imagined | true / context | "
           "foresight closed loop | policy closed loop |", "|---|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    o = r.get("oracle")
    if not o:
      continue
    row = o["rows"]
    loop = lambda k: (f"{r[k]['mean']:.2f} ({r[k]['successes']}/{r[k]['episodes']})" if k in r else "")
    # the privileged decoder reads the window's true future joints in every row (vam/eval/offline.py FUTURE_KEYS)
    mark = " *" if privileged(name) else ""
    lines.append(f"| {name}{mark} | {row['true_future@0']['executed']:.4f} | {row['context_only']['executed']:.4f} | "
                 f"{row['other_future@0']['executed']:.4f} | {row['imagined']['executed']:.4f} "
                 f"(tau_v {o['imagined_tau_v']:g}) | {o['oracle_ratio']:.3f} | {loop('foresight')} | {loop('policy')} |")
  lines.append("")
  lines.append("Normalised action RMSE over the executed chunk steps (0-7) of 256 held-out windows; hold still: " +
               ", ".join(f"{r['oracle']['rows']['hold']['executed']:.4f}" for r in list(results.values())[:1]
                         if r.get("oracle")) + ".")
  if any(privileged(name) and r.get("oracle") for name, r in results.items()):
    lines.append("\\* a diagnostic fed the window's true future joints in every column (no inference path, no "
                 "rollouts): its columns are the frames read plus that privileged state.")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir", required=True)
  p.add_argument("--video_workdir", required=True, help="the frozen stage-1 video model of every run")
  p.add_argument("--out", required=True)
  p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--noise_scale", type=float, default=0.5, help="action sampling noise of the oracle's rows")
  p.add_argument("--closed_loop", action="store_true", help="also roll out with the true and the imagined future")
  p.add_argument("--episodes", type=int, default=32, help="closed-loop episodes per (robot, task) cell")
  p.add_argument("--config_overrides", nargs="*", default=[], help="--config.key=value for every run")
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  for name in args.variants:
    w, log = os.path.join(args.out, name), os.path.join(args.out, f"{name}.log")
    if not os.path.exists(os.path.join(w, "train_seconds.json")):
      t0 = time.time()
      runner.run(["-m", "vam.train", "--config", "experiments/mutual_pretrain.py", "--workdir", w,
                  f"--config.data_dir={args.data_dir}", f"--config.model.video_workdir={args.video_workdir}",
                  f"--config.total_steps={args.steps}", f"--config.checkpoint_every={args.steps}",
                  *VARIANTS[name], *args.config_overrides], log)
      atomic.write_json(os.path.join(w, "train_seconds.json"), dict(train_seconds=round(time.time() - t0),
                                                                    steps=args.steps))
    if not os.path.exists(os.path.join(w, "oracle.json")):
      runner.run(["-c", ORACLE_SCRIPT, w, os.path.join(w, "oracle.json"), str(args.noise_scale)], log)
    if args.closed_loop and not privileged(name):
      for agent, folder in (("foresight", "eval_foresight"), ("policy", "eval")):
        if closed_loop_summary(os.path.join(w, folder, "report.json")) is None:
          runner.run(["-m", "vam.eval", "--workdir", w, "--agent", agent, "--out", os.path.join(w, folder),
                      f"--config.eval.episodes={args.episodes}", *CELLS], log)
    results = collect(args.out)
    atomic.write_json(os.path.join(args.out, "results.json"), results)
    atomic.write_text(os.path.join(args.out, "results.md"), table(results) + "\n")
    print(f"{name}: " + table({name: results[name]}).splitlines()[2], flush=True)
  print(table(collect(args.out)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
