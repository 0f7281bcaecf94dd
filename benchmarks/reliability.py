"""The reliability campaign: faults injected into real `vam.train` runs, each outcome classified, one JSON.

    python -m benchmarks.reliability --data_dir out/demo/data --out benchmarks/results/reliability.json
        [--cases=fuzz,kill9,kill9_2proc,sigterm] [--fuzz 40] [--kills 10]
        [--kill_phases=startup,step,save,final]
        [--seed 0]

  fuzz     random `--config.key=value` overrides and CLI mistakes (unknown keys, wrong types, out-of-range
           values, missing paths) on the tiny quickstart config: every case must end in a finished run or a
           one-line `error: ...` naming the key or file -- never a traceback from deep inside a library
  kill9    a tiny run SIGKILLed `--kills` times in each phase (each restart resumes): `startup` before the
           first step (imports, compilation, restoring the checkpoint of step >= steps/4), `step` a random moment 1-8 steps after each
           restart (inside a step, between steps), `save` inside an asynchronous checkpoint save, `final` inside the
           final save; against one uninterrupted run, the final params, EMA, optimizer state and data-iterator
           state (the sequence of batches seen) must be bit-identical
  kill9_2proc  the same for a 2-process run (launch/local.py), one random process of it SIGKILLed each time
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
flags.DEFINE_list("cases", ["fuzz", "kill9", "kill9_2proc", "sigterm"], "which faults to inject")
flags.DEFINE_integer("fuzz", 40, "fuzz cases")
flags.DEFINE_integer("kills", 10, "SIGKILLs of the kill9 cases, per phase")
flags.DEFINE_list("kill_phases", ["startup", "step", "save", "final"], "when to SIGKILL: startup (before the first "
                  "step: imports, compilation, restore), step (a random moment), save (during an asynchronous "
                  "checkpoint save), final (during the final save)")
flags.DEFINE_integer("seed", 0, "random seed of the campaign")
flags.DEFINE_integer("steps", 40, "training steps of the kill9 and sigterm runs")
FLAGS = flags.FLAGS
CASES = ("fuzz", "kill9", "kill9_2proc", "sigterm")
PHASES = ("startup", "step", "save", "final")
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
  """Content hashes of the final checkpoint's state, EMA and data-iterator states (one per process: equal
  states = the same sequence of batches seen)."""
  code = ("import glob, hashlib, json, os, sys; from vam import checkpoints; import orbax.checkpoint as ocp\n"
          "m = checkpoints.manager(sys.argv[1], read_only=True); s = m.latest_step()\n"
          "import jax; dev = jax.sharding.SingleDeviceSharding(jax.devices()[0]); md = m.item_metadata(s)\n"
          "target = lambda item: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), "
          "md[item].tree)  # onto one device, whatever topology wrote it\n"
          "r = m.restore(s, args=ocp.args.Composite(**{i: ocp.args.StandardRestore(target(i)) "
          "for i in (checkpoints.STATE, checkpoints.EMA)}))\n"
          "files = sorted(glob.glob(os.path.join(str(m.directory), str(s), checkpoints.DATA, 'process_*.json')))\n"
          "data = hashlib.sha256(b''.join(open(f, 'rb').read() for f in files)).hexdigest()[:12]\n"
          "print(json.dumps(dict(step=s, state=checkpoints.fingerprint(r[checkpoints.STATE]), "
          "ema=checkpoints.fingerprint(r[checkpoints.EMA]), data=data, data_files=len(files))))\n")
  proc = subprocess.run([sys.executable, "-c", code, workdir], cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"))
  if proc.returncode:
    raise RuntimeError(f"reading {workdir}: {proc.stderr[-1500:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _timed_run(cmd: list[str], log_path: str) -> tuple[float, float]:
  """Runs a training to the end; returns (seconds to its first logged step, total seconds)."""
  t0, first = time.perf_counter(), None
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
      log.write(line)
      if first is None and re.search(r"\] step \d+/", line):
        first = time.perf_counter() - t0
    proc.wait()
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed: see {log_path}")
  return first or 0.0, time.perf_counter() - t0


def _phase(log_path: str) -> str:
  """What the run was doing when it died: its last line of vam's log (any process's)."""
  lines = [m.group(1).strip() for m in (re.search(r"\d vam\.\w+\] (.*)", l) for l in open(log_path, errors="replace"))
           if m]
  if not lines:
    return "start-up (nothing logged)"
  if lines[-1].startswith("step "):
    return "training: after " + lines[-1].split(" loss")[0]
  return lines[-1][:80]


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


def _listing(folder: str) -> list[str]:
  try:
    return sorted(os.listdir(folder))
  except FileNotFoundError:
    return []


def _saving(ckpt_dir: str, step: int | None = None) -> str | None:
  """The step orbax is writing now (its `<step>.orbax-checkpoint-tmp` folder), or None."""
  for name in _listing(ckpt_dir):
    if ".orbax-checkpoint-tmp" in name and (step is None or name.split(".")[0] == str(step)):
      return name.split(".")[0]
  return None


def _logged_step(log_path: str) -> int:
  """The newest step the run has logged (0 before the first)."""
  steps = re.findall(r"\] step (\d+)/", open(log_path, errors="replace").read())
  return int(steps[-1]) if steps else 0


def _aim(proc, log_path: str, ckpt_dir: str, phase: str, rng: random.Random, step_s: float,
         steps: int) -> tuple[float, str]:
  """Waits for the moment `phase` names; returns (seconds waited once there, what was happening), or a
  negative delay if the run ended first.
    step   j steps (1..8) after the first step this start logged, then a random fraction of a step: inside a
           step, between two, or during a save
    save   inside the j-th asynchronous save from now (j in 1..3), a random fraction of a save's duration in
    final  inside the final step's save"""
  if phase == "step":
    target = min(_logged_step(log_path) + rng.randint(1, 8), steps)
    while _logged_step(log_path) < target:
      if proc.poll() is not None:
        return -1.0, "ended"
      time.sleep(0.005)
    delay = rng.uniform(0.0, step_s)
    time.sleep(delay)
    return delay, f"{delay:.2f} s after step {target} was logged"
  target = str(steps) if phase == "final" else None
  saves = 1 if phase == "final" else rng.randint(1, 3)
  seen = set()
  while True:
    if proc.poll() is not None:
      return -1.0, "ended"
    now = _saving(ckpt_dir, target)
    if now is not None and now not in seen:
      seen.add(now)
      if len(seen) == saves:
        delay = rng.uniform(0.0, 0.3)  # a tiny run's save takes ~0.6 s
        time.sleep(delay)
        return delay, f"saving step {now}" if _saving(ckpt_dir) == now else f"just after saving step {now}"
    time.sleep(0.001)


def _kill_all(proc, victims) -> None:
  """SIGKILL every process of the run (a launcher's children outlive the launcher) and reap it."""
  for pid in victims():
    os.kill(pid, signal.SIGKILL)
  proc.wait()


def _prepare_startup(start, ckpt_dir: str, steps: int) -> float:
  """Trains the victim to a checkpoint of step >= steps/4 (so start-up kills land in restores too), then
  returns how long a restart that restores takes to its first step (compilation cached by now)."""
  folder = os.path.dirname(ckpt_dir)
  proc, victims = start(os.path.join(folder, "startup_prepare.log"))
  while not [d for d in _listing(ckpt_dir) if d.isdigit() and int(d) >= steps // 4] and proc.poll() is None:
    time.sleep(0.05)
  _kill_all(proc, victims)
  t0 = time.perf_counter()
  proc, victims = start(os.path.join(folder, "startup_measure.log"))
  _wait_for_training(proc, os.path.join(folder, "startup_measure.log"))
  seconds = time.perf_counter() - t0
  _kill_all(proc, victims)
  return seconds


def _kill_and_resume(start, phase: str, kills: int, rng: random.Random, ckpt_dir: str, step_s: float,
                     steps: int, startup_s: float) -> list[dict]:
  """`start(log_path)` -> (Popen, pids it may SIGKILL). Kills `kills` times at `phase` (each restart resumes);
  `startup_s`: seconds from launch to the first logged step (for the startup phase: a warm restart's)."""
  moments = []
  if phase == "startup":
    startup_s = _prepare_startup(start, ckpt_dir, steps)
  for i in range(kills):
    log_path = os.path.join(os.path.dirname(ckpt_dir), f"{phase}{i}.log")
    proc, victims = start(log_path)
    if phase == "startup":  # imports, compilation, restoring the newest checkpoint
      delay = rng.uniform(0.0, 0.9 * startup_s)
      time.sleep(delay)
      doing = f"{delay:.1f} s after launch"
    elif not _wait_for_training(proc, log_path):
      break
    else:
      delay, doing = _aim(proc, log_path, ckpt_dir, phase, rng, step_s, steps)
    finished = proc.poll() is not None
    if not finished:
      pid = rng.choice(victims())
      os.kill(pid, signal.SIGKILL)
      proc.wait()
    moments.append(dict(phase=phase, waited_s=round(delay, 3), killed=not finished, doing=doing,
                        last_log=_phase(log_path), finished_steps_on_disk=[int(d) for d in _listing(ckpt_dir)
                                                                           if d.isdigit()]))
    print(f"kill {phase} {i}: {moments[-1]}", flush=True)
    if finished:
      break
  return moments


def _children(pid: int, count: int, timeout: float = 30.0) -> list[int]:
  """The `count` processes a launcher started (waiting for them: killing the launcher instead would leave its
  children running)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    try:
      children = [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except FileNotFoundError:
      children = []
    if len(children) >= count:
      return children
    time.sleep(0.01)
  raise RuntimeError(f"launcher {pid} did not start {count} processes in {timeout:.0f} s")


def run_kill9(kills: int, seed: int, data_dir: str, steps: int, phases=PHASES, processes: int = 1) -> dict:
  """SIGKILL a run again and again at each of `phases` (`kills` times each; each restart resumes), then let
  it finish; compare the final state, EMA and data-iterator state with an uninterrupted run's. With
  `processes` > 1 the run is `launch/local.py`'s group and one random process of it is killed (the launcher
  stops the others, as a cluster scheduler does when a host dies)."""
  rng = random.Random(seed + 1 + 100 * processes)
  common = [f"--config.data_dir={data_dir}", f"--config.total_steps={steps}", "--config.log_every=1",
            "--config.checkpoint_every=2", "--config.keep_checkpoints=2"]

  def cmd(workdir):
    if processes == 1:
      return train_cmd(workdir, *common)
    return [sys.executable, os.path.join(ROOT, "launch", "local.py"), "--processes", str(processes),
            "--devices_per_process", "1", "--", "--config", CONFIG, "--workdir", workdir, *common]

  root = tempfile.mkdtemp(prefix=f"vam-kill9-{processes}p-")
  reference = os.path.join(root, "reference")
  first, ref_seconds = _timed_run(cmd(reference), os.path.join(root, "reference.log"))
  step_s = (ref_seconds - first) / steps
  ref = _final(reference)
  out = dict(processes=processes, reference=ref, reference_seconds=round(ref_seconds, 1),
             startup_seconds=round(first, 1), step_seconds=round(step_s, 3), phases={})
  for phase in phases:
    victim = os.path.join(root, f"victim_{phase}")
    os.makedirs(victim)

    def start(log_path, victim=victim):
      with open(log_path, "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd(victim), cwd=ROOT, stdout=log if processes > 1 else subprocess.DEVNULL,
                                stderr=log)
      return proc, (lambda: [proc.pid]) if processes == 1 else (lambda: _children(proc.pid, processes))

    moments = _kill_and_resume(start, phase, kills, rng, os.path.join(victim, "checkpoints"), step_s, steps, first)
    done = subprocess.run(cmd(victim), cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode:
      out["phases"][phase] = dict(outcome="failed to resume", message=done.stderr[-1500:], moments=moments)
      continue
    got = _final(victim)
    out["phases"][phase] = dict(outcome="identical" if got == ref else "differs", resumed=got,
                                kills=sum(m["killed"] for m in moments), moments=moments)
  shutil.rmtree(root, ignore_errors=True)
  out["outcome"] = ("identical" if all(p["outcome"] == "identical" for p in out["phases"].values())
                    else "differs")
  return out


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
  for name, given, valid in (("--cases", FLAGS.cases, CASES), ("--kill_phases", FLAGS.kill_phases, PHASES)):
    if set(given) - set(valid):
      raise app.UsageError(f"{name}: unknown {sorted(set(given) - set(valid))}; valid: {list(valid)}")
  data_dir = os.path.abspath(FLAGS.data_dir)
  res = {}
  if "fuzz" in FLAGS.cases:
    res["fuzz"] = run_fuzz(FLAGS.fuzz, FLAGS.seed, data_dir)
  if "kill9" in FLAGS.cases:
    res["kill9"] = run_kill9(FLAGS.kills, FLAGS.seed, data_dir, FLAGS.steps, FLAGS.kill_phases)
  if "kill9_2proc" in FLAGS.cases:
    res["kill9_2proc"] = run_kill9(FLAGS.kills, FLAGS.seed, data_dir, FLAGS.steps, FLAGS.kill_phases, processes=2)
  if "sigterm" in FLAGS.cases:
    res["sigterm"] = run_sigterm(data_dir, FLAGS.steps)
  ratios = {}
  if "fuzz" in res:
    ratios["fuzz_tracebacks_per_case"] = res["fuzz"]["counts"]["traceback"] / max(FLAGS.fuzz, 1)
  report.write(FLAGS.out, "reliability", dict(data_dir=data_dir, cases=FLAGS.cases, fuzz=FLAGS.fuzz,
                                              kills=FLAGS.kills, seed=FLAGS.seed, steps=FLAGS.steps), res, ratios)


if __name__ == "__main__":
  app.run(main)
