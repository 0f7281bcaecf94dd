"""The JSON report every benchmark writes: the machine, the config, results and same-run ratios."""

import json
import os
import platform
import subprocess
import sys


def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  return dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(), jax=jax.__version__,
              devices=[str(d) for d in jax.devices()])


def commit() -> str:
  """This checkout's commit (with '+dirty' for uncommitted changes), or 'unknown' outside git."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                           text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


def write(path: str, benchmark: str, config: dict, results: dict, ratios: dict) -> None:
  """Writes the report (with the commit and the command that made it) to `path` and prints results and ratios."""
  command = " ".join([f"python -m benchmarks.{benchmark}"] + sys.argv[1:])
  report = dict(benchmark=benchmark, commit=commit(), command=command, machine=machine(), config=config, results=results, ratios=ratios)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(dict(results=results, ratios=ratios), indent=1))
