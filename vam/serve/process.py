"""Starting `python -m vam.serve` from a script (benchmarks, tests, an experiment driver): one subprocess on
a free port, returned once it listens.

    proc, uri = process.start("out/demo/baseline", "--config.eval.replan_every=4")
    ...  # PolicyClient(uri)
    proc.terminate()
"""

import os
import select
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def start(workdir: str, *flags: str, timeout: float = 600.0) -> tuple[subprocess.Popen, str]:
  """`python -m vam.serve --workdir W --port 0 FLAGS...`; returns (process, ws:// uri) once it prints that it
  serves. Raises RuntimeError with the server's stderr if it exits or does not start in `timeout` s."""
  proc = subprocess.Popen([sys.executable, "-m", "vam.serve", "--workdir", workdir, "--port", "0", *flags],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + timeout
  while time.time() < deadline:
    if select.select([proc.stdout], [], [], 1.0)[0]:
      line = proc.stdout.readline()
      if line.startswith("serving "):
        return proc, line.split(" on ")[-1].strip()
    if proc.poll() is not None:
      raise RuntimeError(f"vam.serve --workdir {workdir} exited ({proc.returncode}): {proc.stderr.read()[-3000:]}")
  proc.kill()
  raise RuntimeError(f"vam.serve --workdir {workdir} did not start in {timeout:.0f} s")
