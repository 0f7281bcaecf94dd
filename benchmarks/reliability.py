"""The reliability campaign: faults injected into real `vam.train` runs, each outcome classified, one JSON.

    python -m benchmarks.reliability --data_dir out/demo/data --out benchmarks/results/reliability.json
        [--cases=fuzz,kill9,sigterm] [--fuzz 40] [--kills 10] [--seed 0]

  fuzz     random `--config.key=value` overrides and CLI mistakes (unknown keys, wrong types, out-of-range
           values, missing paths) on the tiny quickstart config: every case must end in a finished run or a
           one-line `error: ...` naming the key or file -- never a traceback from deep inside a library
  kill9    a tiny run SIGKILLed at `--kills` random moments (each restart resumes), against one uninterrupted
           run: final params, EMA, optimizer state and the batches' provenance must be bit-identical
  sigterm  SIGTERM mid-run: exit 0 with a checkpoint of the current step; the restart finishes the run
The fast, deterministic faults (damaged checkpoints, the workdir lock, atomic writes) are tests
(tests/test_reliability.py); this module repeats the slow and random ones at scale.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import report

flags.DEFINE_string("data_dir", "out/demo/data", "datasets of the runs (the quickstart ones)")
flags.DEFINE_string("out", "benchmarks/results/reliability.json", "where the JSON report goes")
flags.DEFINE_list("cases", ["fuzz", "kill9", "sigterm"], "which faults to inject")
flags.DEFINE_integer("fuzz", 40, "fuzz cases")
flags.DEFINE_integer("kills", 10, "SIGKILLs of the kill9 case")
flags.DEFINE_integer("seed", 0, "random seed of the campaign")
flags.DEFINE_integer("steps", 40, "training steps of the kill9 and sigterm runs")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "experiments/quickstart.py:tiny"


def train_cmd(workdir: str, *overrides: str, config: str = CONFIG) -> list[str]:
  return [sys.executable, "-m", "vam.train", "--config", config, "--workdir", workdir, *overrides]


# ---- fuzz -------------------------------------------------------------------------------------------------
# (key, values): wrong types, out of range, nonsense; each drawn with a few valid ones so some runs finish.
FUZZ_KEYS = {
    "total_steps": ["0", "-5", "2", "1.5", "'ten'", "[2]", "None"],
    "batch_size": ["0", "-8", "7", "8", "3.0", "'big'", "100000"],
    "log_every": ["0", "-1", "1", "x"],
    "checkpoint_every": ["0", "-2", "2", "{}"],
    "seed": ["-1", "3", "1e9", "'s'"],
    "keep_checkpoints": ["0", "-1", "2", "'all'"],
    "data.context_frames": ["0", "-1", "1", "3", "2.5", "'two'"],
    "data.action_horizon": ["0", "-4", "8", "1000", "'h'"],
    "data.frame_stride": ["0", "-1", "2", "'x'"],
    "data.mixture": ["{}", "{'sim_robot': -1.0}", "{'sim_robot': 1.0}", "{'nope': 1.0}", "[1]",
                     "{'sim_robot': 0.0, 'sim_human': 0.0}"],
    "data.camera": ["'front'", "'ceiling'", "3"],
    "data.norm_mode": ["'quantile'", "'minmax'"],
    "data.pad": ["'mask'", "'zeros'"],
    "data.proprio_dim": ["0", "3", "17", "-2"],
    "data.embodiments": ["['arm6']", "['human_hand', 'arm6', 'gantry']", "['robot9']", "[]"],
    "data.balance": ["'window'", "'episode'"],
    "model.name": ["'image_baseline'", "'transformer9'", "3"],
    "optimizer.name": ["'adamw'", "'sgd9'"],
    "optimizer.lr": ["-1.0", "0.0", "1e-3", "'fast'"],
    "mesh": ["{'data': 8}", "{'data': 3}", "{'data': 0}", "{'data': 2, 'fsdp': 4}", "{'pipeline': 8}"],
    "data_dir": ["'/nonexistent/data'", "'/tmp'"],
    "compute_dtype": ["'bfloat16'", "'float8'"],
    "grad_accum_steps": ["0", "2", "3"],
}
TYPOS = ["totl_steps", "data.mixtur", "model.decoder.widht", "optimiser.lr", "eval.episode"]


def fuzz_case(rng: random.Random, data_dir: str, workdir: str) -> list[str]:
  args = [f"--config.data_dir={data_dir}", "--config.total_steps=2", "--config.log_every=1",
          "--config.checkpoint_every=2"]
  for key in rng.sample(sorted(FUZZ_KEYS), rng.randint(1, 3)):
    args.append(f"--config.{key}={rng.choice(FUZZ_KEYS[key])}")
  if rng.random() < 0.15:
    args.append(f"--config.{rng.choice(TYPOS)}=1")
  if rng.random() < 0.05:
    return [sys.executable, "-m", "vam.train", "--workdir", workdir, *args]  # no --config
  if rng.random() < 0.05:
    return train_cmd(workdir, *args, config="experiments/nonexistent.py")
  if rng.random() < 0.05:
    return train_cmd(workdir, *args, config="experiments/quickstart.py:nosuchvariant")
  return train_cmd(workdir, *args)


def classify(proc) -> tuple[str, str]:
  """finished | clear error (the run ends on one `error: ...` line, or absl's usage message without a
  traceback) | traceback (anything else: an exception escaped from inside a library)."""
  if proc.returncode == 0:
    return "finished", ""
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  last = lines[-1] if lines else ""
  if last.startswith("error: ") or (last and "Traceback (most recent call last)" not in proc.stderr):
    return "clear error", last[:300]
  return "traceback", last[:300]


def names_its_input(message: str, args: list[str]) -> bool:
  """Whether an error names one of the overridden keys (its last part), a flag or a file it was given."""
  words = set()
  for a in args:
    key = a.split("=", 1)[0].lstrip("-")
    words |= {key.split(".")[-1], key}
  words |= {"--config", "--workdir", "experiments/", "dataset ", "mesh"}
  return any(w and w in message for w in words)


def run_fuzz(n: int, seed: int, data_dir: str) -> dict:
  rng = random.Random(seed)
  cases = []
  for i in range(n):
    workdir = tempfile.mkdtemp(prefix="vam-fuzz-")
    cmd = fuzz_case(rng, data_dir, workdir)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    outcome, message = classify(proc)
    args = [a for a in cmd[3:] if a.startswith("--config.") and "data_dir=" + data_dir not in a and
            a not in ("--config.total_steps=2", "--config.log_every=1", "--config.checkpoint_every=2")]
    cases.append(dict(args=args, config=cmd[cmd.index("--config") + 1] if "--config" in cmd else None,
                      outcome=outcome, message=message, names_its_input=names_its_input(message, args) if message
                      else None, seconds=round(time.perf_counter() - t0, 1)))
    print(f"fuzz {i}: {outcome}: {message[:160]}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
  counts = {k: sum(c["outcome"] == k for c in cases) for k in ("finished", "clear error", "traceback")}
  counts["error not naming its input"] = sum(c["outcome"] == "clear error" and not c["names_its_input"]
                                             for c in cases)
  return dict(cases=cases, counts=counts)


# ---- kill -9 ----------------------------------------------------------------------------------------------
def _final(workdir: str) -> dict:
  """Content hashes of the final checkpoint's state and EMA, and the batches' provenance of the metrics."""
  code = ("import json, sys; from vam import checkpoints; import orbax.checkpoint as ocp\n"
          "m = checkpoints.manager(sys.argv[1], read_only=True); s = m.latest_step()\n"
          "r = m.restore(s, args=ocp.args.Composite(**{checkpoints.STATE: ocp.args.StandardRestore(), "
          "checkpoints.EMA: ocp.args.StandardRestore()}))\n"
          "print(json.dumps(dict(step=s, state=checkpoints.fingerprint(r[checkpoints.STATE]), "
          "ema=checkpoints.fingerprint(r[checkpoints.EMA]))))\n")
  proc = subprocess.run([sys.executable, "-c", code, workdir], cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"))
  if proc.returncode:
    raise RuntimeError(f"reading {workdir}: {proc.stderr[-1500:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _timed_run(cmd: list[str], log_path: str) -> tuple[float, float]:
  """Runs a training to the end; returns (seconds to its first logged step, total seconds)."""
  t0, first = time.perf_counter(), None
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
      log.write(line)
      if first is None and re.search(r"\] step \d+/", line):
        first = time.perf_counter() - t0
    proc.wait()
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed: see {log_path}")
  return first or 0.0, time.perf_counter() - t0


def _phase(log_path: str) -> str:
  """What the run was doing when it died: its last line of vam's log."""
  lines = [l for l in open(log_path, errors="replace") if "] " in l and "vam." in l]
  if not lines:
    return "start-up (nothing logged)"
  last = lines[-1].split("] ", 1)[1].strip()
  if last.startswith("step "):
    return "training: after " + last.split(" loss")[0]
  return last[:80]


def _wait_for_training(proc, log_path: str, timeout: float = 900.0) -> bool:
  """Waits until the run logs a training step (True), or exits first (False)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      return False
    if any(re.search(r"\] step \d+/", l) for l in open(log_path, errors="replace")):
      return True
    time.sleep(0.05)
  raise RuntimeError(f"no training step logged in {timeout:.0f} s: see {log_path}")


def run_kill9(kills: int, seed: int, data_dir: str, steps: int) -> dict:
  """SIGKILL a run again and again while it trains (each restart resumes), then let it finish; compare the
  final state with an uninterrupted run's."""
  rng = random.Random(seed + 1)
  common = [f"--config.data_dir={data_dir}", f"--config.total_steps={steps}", "--config.log_every=1",
            "--config.checkpoint_every=2", "--config.keep_checkpoints=2"]
  root = tempfile.mkdtemp(prefix="vam-kill9-")
  reference = os.path.join(root, "reference")
  first, ref_seconds = _timed_run(train_cmd(reference, *common), os.path.join(root, "reference.log"))
  step_s = (ref_seconds - first) / steps
  victim = os.path.join(root, "victim")
  moments = []
  for i in range(kills):
    log_path = os.path.join(root, f"victim{i}.log")
    with open(log_path, "w") as log:
      proc = subprocess.Popen(train_cmd(victim, *common), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
      if not _wait_for_training(proc, log_path):
        break  # it finished: nothing left to interrupt
      delay = rng.uniform(0.0, 6 * step_s)  # within the next ~6 steps: inside a step, between, during a save
      time.sleep(delay)
      finished = proc.poll() is not None
      if not finished:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    on_disk = sorted(int(d) for d in os.listdir(os.path.join(victim, "checkpoints")) if d.isdigit())
    moments.append(dict(after_first_step_s=round(delay, 2), killed=not finished, phase=_phase(log_path),
                        finished_steps_on_disk=on_disk))
    if finished:
      break
  done = subprocess.run(train_cmd(victim, *common), cwd=ROOT, capture_output=True, text=True, timeout=1800)
  if done.returncode:
    return dict(outcome="failed to resume", message=done.stderr[-1500:], moments=moments)
  a, b = _final(reference), _final(victim)
  shutil.rmtree(root, ignore_errors=True)
  return dict(outcome="identical" if a == b else "differs", reference=a, resumed=b,
              kills=sum(m["killed"] for m in moments), moments=moments, reference_seconds=round(ref_seconds, 1),
              step_seconds=round(step_s, 3))


# ---- SIGTERM ------------------------------------------------------------------------------------------------
def run_sigterm(data_dir: str, steps: int) -> dict:
  root = tempfile.mkdtemp(prefix="vam-sigterm-")
  w = os.path.join(root, "run")
  common = [f"--config.data_dir={data_dir}", f"--config.total_steps={steps}", "--config.log_every=1",
            f"--config.checkpoint_every={steps}"]
  proc = subprocess.Popen(train_cmd(w, *common), cwd=ROOT, stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:
    if re.search(r"step [3-9]/", line):
      break
  proc.send_signal(signal.SIGTERM)
  rest = proc.communicate(timeout=600)[1]
  saved = re.search(r"SIGTERM: saved step (\d+)", rest)
  again = subprocess.run(train_cmd(w, *common), cwd=ROOT, capture_output=True, text=True, timeout=1800)
  out = dict(exit_code=proc.returncode, saved_step=int(saved.group(1)) if saved else None,
             resumed=f"resumed from" in again.stderr, restart_exit_code=again.returncode,
             steps_after_restart=sorted(int(s) for s in os.listdir(os.path.join(w, "checkpoints")) if s.isdigit()))
  out["outcome"] = ("saved, resumed" if out["exit_code"] == 0 and out["saved_step"] and out["resumed"] and
                    again.returncode == 0 and steps in out["steps_after_restart"] else "failed")
  shutil.rmtree(root, ignore_errors=True)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]} (lists are comma-separated: --cases=fuzz,kill9)")
  data_dir = os.path.abspath(FLAGS.data_dir)
  res = {}
  if "fuzz" in FLAGS.cases:
    res["fuzz"] = run_fuzz(FLAGS.fuzz, FLAGS.seed, data_dir)
  if "kill9" in FLAGS.cases:
    res["kill9"] = run_kill9(FLAGS.kills, FLAGS.seed, data_dir, FLAGS.steps)
  if "sigterm" in FLAGS.cases:
    res["sigterm"] = run_sigterm(data_dir, FLAGS.steps)
  ratios = {}
  if "fuzz" in res:
    ratios["fuzz_tracebacks_per_case"] = res["fuzz"]["counts"]["traceback"] / max(FLAGS.fuzz, 1)
  report.write(FLAGS.out, "reliability", dict(data_dir=data_dir, cases=FLAGS.cases, fuzz=FLAGS.fuzz,
                                              kills=FLAGS.kills, seed=FLAGS.seed, steps=FLAGS.steps), res, ratios)


if __name__ == "__main__":
  app.run(main)
