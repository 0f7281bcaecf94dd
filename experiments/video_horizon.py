"""Does the stage-1 video model learn dynamics? A resumable driver that trains video models under the levers
issue 15 names and scores each against copy-last-frame by horizon (README "Does the video model predict?").

    python experiments/video_horizon.py --data_dir out/long/data --out out/v15 [--only NAME ...]

Steps (each skipped when its output exists, so the driver can be stopped and started again):
  1. the datasets (`experiments/datasets.py:standard`: all four tasks, robots and the hand: ~75k training
     frames of action-free video for stage 1) unless `--data_dir` has them;
  2. the autoencoder (`experiments/autoencoder.py`, `--ae_steps`) and its evaluation (reconstruction PSNR);
  3. its latents, stored beside the datasets (`python -m vam.train.latents`);
  4. every run of `RUNS` (`experiments/video_pretrain.py` + overrides): `python -m vam.train`, then
     `python -m vam.eval --step N` at each checkpoint (PSNR/SSIM by horizon of the mean and sampled
     predictions, copy-last-frame, copy-last-latent, reconstruction; latent MSE; loss by tau).
Results: `OUT/results.json` ({run: {overrides, train_seconds, by step: video metrics}}, rebuilt from the run
folders, so drivers with different `--only` may run at once) and `OUT/results.md` (the table the README
quotes: at the last step, PSNR at the longest horizon of each predictor). Run logs: `OUT/<run>.log`.
"""

import argparse
import json
import os
import time

import runner

from vam import atomic

STEPS = ["--config.total_steps=4000", "--config.checkpoint_every=1000", "--config.keep_checkpoints=10"]

# name: overrides of experiments/video_pretrain.py (quickstart sizes: H_o = H_f = 2 latent frames).
RUNS = {
    "stride1": STEPS + ["--config.data.frame_stride=1"],  # +1, +2 steps: 0.1-0.2 s ahead
    "stride2": STEPS + ["--config.data.frame_stride=2"],  # +2, +4 steps
    "stride4": STEPS + ["--config.data.frame_stride=4"],  # +4, +8 steps: 0.4-0.8 s ahead
    "stride8": STEPS + ["--config.data.frame_stride=8"],  # +8, +16 steps: 0.8-1.6 s ahead
    # The autoencoder lever: stride 4 on the demo's autoencoder budget (250 steps instead of `--ae_steps`).
    "stride4_ae250": STEPS + ["--config.data.frame_stride=4"],
}
RUN_AE_STEPS = {"stride4_ae250": 250}  # runs on an autoencoder of their own (OUT/autoencoder_<steps>)


def _video(report_path: str) -> dict:
  """{step: video metrics} of an evaluation report (the newest evaluation of each step)."""
  rep = json.load(open(report_path))
  return {str(ev["step"]): ev["video"] for ev in rep["evaluations"]}


def table(results: dict) -> str:
  """At each run's last evaluated step: PSNR (dB) at its longest horizon and over all horizons."""
  lines = ["| run | step | horizon | mean prediction | sampled | copy last frame | copy last latent | "
           "reconstruction | latent MSE mean / copy-last | mean - copy-last (longest) |", "|" + "---|" * 10]
  for name, r in results.items():
    if not r.get("by_step") or "by_horizon" not in next(iter(r["by_step"].values())):
      continue  # an autoencoder's entry
    step = max(r["by_step"], key=int)
    v = r["by_step"][step]
    h = v["by_horizon"]
    last = lambda k: h[k][-1]
    lines.append(f"| {name} | {step} | +{h['steps_ahead'][-1]} steps ({h['steps_ahead'][-1] / 10:.1f} s) | "
                 f"{last('predicted_mean_psnr'):.2f} | {last('predicted_psnr'):.2f} | {last('copy_last_psnr'):.2f} | "
                 f"{last('copy_last_latent_psnr'):.2f} | {last('reconstruction_psnr'):.2f} | "
                 f"{last('mean_latent_mse'):.3f} / {last('copy_last_latent_mse'):.3f} | "
                 f"{v['mean_psnr_gain_at_longest']:+.2f} |")
  for name, r in results.items():
    if "video" in r and r["video"]:
      v = r["video"][max(r["video"], key=int)]
      lines.append(f"\n{name} ({r['steps']} steps): reconstruction {v['reconstruction_psnr']:.2f} dB PSNR, "
                   f"SSIM {v['reconstruction_ssim']:.3f} on {v['clips']} held-out clips")
  return "\n".join(lines)


def _save(results: dict, out: str) -> None:
  atomic.write_json(os.path.join(out, "results.json"), results)
  atomic.write_text(os.path.join(out, "results.md"), table(results) + "\n")


def _ae_dir(out: str, steps: int, default_steps: int) -> str:
  return os.path.join(out, "autoencoder" if steps == default_steps else f"autoencoder_{steps}")


def _autoencoder(args, steps: int, log: str) -> None:
  """Trains (or resumes) and evaluates the autoencoder of `steps` steps and stores its latents."""
  ae = _ae_dir(args.out, steps, args.ae_steps)
  if steps not in runner.checkpoint_steps(ae):
    runner.run(["-m", "vam.train", "--config", "experiments/autoencoder.py", "--workdir", ae,
          f"--config.data_dir={args.data_dir}", f"--config.total_steps={steps}",
          f"--config.checkpoint_every={min(steps, 500)}"], log)
  if not os.path.exists(os.path.join(ae, "eval", "report.json")):
    runner.run(["-m", "vam.eval", "--workdir", ae], log)
  # Idempotent: latents keyed by the autoencoder's fingerprint are rewritten only when missing.
  runner.run(["-m", "vam.train.latents", "--autoencoder", ae, "--data_dir", args.data_dir], log)


def _collect(out: str, ae_steps: int) -> dict:
  """results.json's contents, rebuilt from the run folders (so drivers started with different `--only` at
  once never overwrite each other's results)."""
  results = {}
  for steps in sorted({ae_steps} | set(RUN_AE_STEPS.values())):
    ae_report = os.path.join(_ae_dir(out, steps, ae_steps), "eval", "report.json")
    if os.path.exists(ae_report):
      results[os.path.basename(_ae_dir(out, steps, ae_steps))] = dict(steps=steps, video=_video(ae_report))
  for name, overrides in RUNS.items():
    w = os.path.join(out, name)
    report, timing = os.path.join(w, "eval", "report.json"), os.path.join(w, "train_seconds.json")
    if os.path.exists(report):
      results[name] = dict(overrides=overrides, by_step=_video(report),
                           **(json.load(open(timing)) if os.path.exists(timing) else {}))
  return results


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--only", nargs="*", default=None, help="runs of RUNS to do (default: all)")
  p.add_argument("--ae_steps", type=int, default=2000)
  args = p.parse_args(argv)
  if args.only and set(args.only) - set(RUNS):
    raise SystemExit(f"--only {sorted(set(args.only) - set(RUNS))}: unknown runs; valid: {sorted(RUNS)}")
  os.makedirs(args.out, exist_ok=True)
  log = os.path.join(args.out, "driver.log")
  if not os.path.isdir(os.path.join(args.data_dir, "sim_robot")):
    runner.run(["-m", "vam.data.build", "--config", "experiments/datasets.py:standard", "--data_dir", args.data_dir], log)
  chosen = [n for n in RUNS if not args.only or n in args.only]
  for steps in sorted({RUN_AE_STEPS.get(n, args.ae_steps) for n in chosen} | {args.ae_steps}):
    _autoencoder(args, steps, log)
  for name in chosen:
    overrides = RUNS[name]
    ae = _ae_dir(args.out, RUN_AE_STEPS.get(name, args.ae_steps), args.ae_steps)
    w = os.path.join(args.out, name)
    timing = os.path.join(w, "train_seconds.json")
    if not os.path.exists(timing):  # vam.train resumes an interrupted run; its wall time then covers the rest only
      t0 = time.time()
      runner.run(["-m", "vam.train", "--config", "experiments/video_pretrain.py", "--workdir", w,
            f"--config.data_dir={args.data_dir}", f"--config.model.autoencoder_workdir={ae}", *overrides],
           os.path.join(args.out, f"{name}.log"))
      with open(timing, "w") as f:
        json.dump(dict(train_seconds=round(time.time() - t0)), f)
    report = os.path.join(w, "eval", "report.json")
    done = set(_video(report)) if os.path.exists(report) else set()  # retention may delete evaluated steps
    for step in runner.checkpoint_steps(w):
      if str(step) not in done:
        runner.run(["-m", "vam.eval", "--workdir", w, "--step", str(step)], os.path.join(args.out, f"{name}.log"))
    _save(_collect(args.out, args.ae_steps), args.out)
  results = _collect(args.out, args.ae_steps)
  _save(results, args.out)
  print(table(results))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
