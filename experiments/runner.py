"""What the experiment drivers (experiments/demos.py, experiments/video_horizon.py) share: run a vam command
in its own process, as a user would, with its output appended to a log; list a workdir's checkpoint steps."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args: list[str], log: str) -> None:
  """`python <args>` from the repository root, stdout and stderr appended to `log`; exits naming the log on
  failure."""
  with open(log, "a") as f:
    f.write(f"$ python {' '.join(args)}\n")
    f.flush()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
  if proc.returncode:
    raise SystemExit(f"python {' '.join(args[:4])} ... failed (exit {proc.returncode}); see {log}")


def checkpoint_steps(workdir: str) -> list[int]:
  """The finished checkpoint steps of a training workdir, in increasing order."""
  ckpt = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) if os.path.isdir(ckpt) else []
