"""A resumable sweep driver: train and evaluate a list of runs, collect one results JSON and a Markdown table.

    python experiments/sweep.py --sweep recipe --data_dir out/recipe/data --out out/recipe [--only NAME ...]

Each run is `python -m vam.train` (which resumes by itself) then `python -m vam.eval` in separate processes,
exactly as a user would start them; a run whose evaluation is already in `OUT/results.json` is skipped, so
the driver can be stopped and started again. Results: `OUT/results.json` ({run: {config, success per cell,
offline errors, train seconds}}) and `OUT/results.md` (the table the README quotes).

Sweeps (`SWEEPS`): `recipe` -- what makes image-conditioned flow policies learn at small scale (the README's
recipe table); `ladder` -- the privileged-state rung; `prediction` -- what the action decoder predicts (velocity
or clean chunk, the loss's space, a plain regressor), on the privileged-state policy; `feed` -- the image
baseline with the privileged probe's state estimate fed to its decoder (README "What the features know");
`vam_readout` -- how the VAM's decoder reads the frozen video features (cross-attention over the tokens, or
spatial-softmax keypoints added), on the video model `--video_workdir`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from vam import atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Evaluation of every run: reach and push, easy worlds of the seen layout, 16 episodes per cell.
EVAL = ["--config.eval.tasks=['reach', 'push']", "--config.eval.modes=['easy']", "--config.eval.splits=['train']",
        "--config.eval.episodes=16", "--config.eval.num_envs=32", "--config.eval.videos_per_task=1"]
ROBOT_DATA = ["--config.data.mixture={'sim_robot': 1.0}"]
IMAGE = ["--config.total_steps=3000", "--config.batch_size=32", "--config.log_every=100",
         "--config.checkpoint_every=1000"] + ROBOT_DATA

SWEEPS = {
    "recipe": {  # name: (config file, overrides); each differs from `conv` by one thing
        "vit_lr3e-4": ("quickstart.py", IMAGE + ["--config.model.encoder.kind=vit", "--config.optimizer.lr=3e-4"]),
        "vit": ("quickstart.py", IMAGE + ["--config.model.encoder.kind=vit", "--config.optimizer.lr=3e-3"]),
        "conv": ("quickstart.py", IMAGE + ["--config.optimizer.lr=3e-3"]),
        "conv_no_probe": ("quickstart.py", IMAGE + ["--config.optimizer.lr=3e-3", "--config.model.privileged_aux=0.0"]),
        "conv_no_shift": ("quickstart.py", IMAGE + ["--config.optimizer.lr=3e-3", "--config.model.encoder.shift=0"]),
        "conv_grid": ("quickstart.py", IMAGE + ["--config.optimizer.lr=3e-3", "--config.model.encoder.readout=grid"]),
        "conv_lr1e-3": ("quickstart.py", IMAGE + ["--config.optimizer.lr=1e-3"]),
        "conv_pad_mask": ("quickstart.py", IMAGE + ["--config.optimizer.lr=3e-3", "--config.data.pad=mask"]),
    },
    "ladder": {
        "state": ("state_policy.py", ["--config.total_steps=3000"]),
    },
    "prediction": {  # the decoder's output and the flow loss's space (README "What the decoder predicts")
        name: ("state_policy.py", ["--config.total_steps=3000", f"--config.model.decoder.prediction={pred}",
                                   f"--config.model.action_loss={space}", f"--config.model.action_time_sampler={t}"])
        for name, pred, space, t in (("velocity", "velocity", "velocity", "sqrt"),
                                     ("x0_velocity_loss", "x0", "velocity", "sqrt"),
                                     ("x0", "x0", "x0", "sqrt"),
                                     ("regression", "x0", "x0", "one"))
    },
    "feed": {  # README "What the features know about the task"
        "baseline": ("quickstart.py", IMAGE),
        "feed": ("quickstart.py", IMAGE + ["--config.model.privileged_feed=True"]),
        "feed_x0": ("quickstart.py", IMAGE + ["--config.model.privileged_feed=True",
                                              "--config.model.decoder.prediction=x0", "--config.model.action_loss=x0"]),
    },
    "vam_readout": {  # README "What the features know about the task"
        "vam_no_keypoints": ("mutual_pretrain.py", ["--config.model.keypoints=0"]),
        "vam": ("mutual_pretrain.py", []),  # keypoints=8, the default
    },
}


def _run(args, log):
  with open(log, "a") as f:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
  if proc.returncode:
    raise SystemExit(f"{' '.join(args[:4])} ... failed (exit {proc.returncode}); see {log}")


def summarize(report: dict) -> dict:
  ev = report["evaluations"][-1]
  out = dict(step=ev["step"], mean=ev["means"]["overall"],
             cells={f"{c['embodiment']}/{c['task']}/{c['mode']}": dict(rate=c["success_rate"], ci95=c["ci95"],
                                                                      episodes=c["episodes"]) for c in ev["cells"]})
  out["offline"] = {k: {m: round(v[m], 4) for m in ("rmse_native", "hold_rmse_native", "last_rmse_native") if m in v}
                    for k, v in ev.get("offline", {}).items() if k.endswith("_joints")}
  if ev.get("state_estimate"):
    out["state_estimate_m"] = {k: round(v["error_m"], 4) for k, v in ev["state_estimate"].items()}
  return out


def table(results: dict) -> str:
  cells = sorted({c for r in results.values() for c in r["joints"]["cells"]})
  head = ("| run | " + " | ".join(cells) + " | offline joint RMSE (policy / hold) | eef control: "
          + " | ".join(cells) + " |")
  lines = [head, "|" + "---|" * (2 + 2 * len(cells))]
  for name, r in results.items():
    rate = lambda ev, c: f"{ev['cells'][c]['rate']:.2f}" if c in ev["cells"] else ""
    off = "; ".join(f"{k.split('_')[0]} {v['rmse_native']:.3f} / {v['hold_rmse_native']:.3f}"
                    for k, v in r["joints"]["offline"].items())
    lines.append(f"| {name} | " + " | ".join(rate(r["joints"], c) for c in cells) + f" | {off} | " +
                 " | ".join(rate(r["eef"], c) for c in cells) + " |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sweep", required=True, choices=sorted(SWEEPS))
  p.add_argument("--data_dir", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--only", nargs="*", default=None)
  p.add_argument("--video_workdir", default="out/demo/video", help="the frozen video model of VAM runs")
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "results.json")
  results = json.load(open(path)) if os.path.exists(path) else {}
  for name, (config, overrides) in SWEEPS[args.sweep].items():
    if (args.only and name not in args.only) or name in results:
      continue
    w, log = os.path.join(args.out, name), os.path.join(args.out, f"{name}.log")
    t0 = time.time()
    _run(["-m", "vam.train", "--config", f"experiments/{config}", "--workdir", w, f"--config.data_dir={args.data_dir}",
          *(["--config.model.video_workdir=" + args.video_workdir] if config == "mutual_pretrain.py" else []),
          *overrides], log)
    train_s = time.time() - t0
    _run(["-m", "vam.eval", "--workdir", w, *EVAL], log)
    _run(["-m", "vam.eval", "--workdir", w, "--out", os.path.join(w, "eval_eef"), "--config.eval.control=eef",
          "--config.eval.offline_windows=0", *EVAL], log)
    reports = {k: json.load(open(os.path.join(w, d, "report.json")))
               for k, d in (("joints", "eval"), ("eef", "eval_eef"))}
    results[name] = dict(config=config, overrides=overrides, train_seconds=round(train_s),
                         **{k: summarize(v) for k, v in reports.items()})
    atomic.write_json(path, results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
      f.write(table(results) + "\n")
    print(f"{name}: {results[name]['joints']['mean']:.3f} (joints) {results[name]['eef']['mean']:.3f} (eef)",
          flush=True)
  print(table(results))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
