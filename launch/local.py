"""Several processes of one vam entry point on this machine, joined as one multi-host run.

    python launch/local.py --processes 2 --devices_per_process 4 -- \\
        --config experiments/quickstart.py:tiny --workdir /tmp/w --config.data_dir=out/demo/data

Starts P copies of `python -m vam.train` (or `--module vam.eval`), each told its place in the group through
VAM_COORDINATOR_ADDRESS / VAM_NUM_PROCESSES / VAM_PROCESS_ID (vam/distributed.py) and given D host-platform
CPU devices; cross-process collectives go through gloo on localhost. This is how the tests exercise
multi-host training on one machine. Each line of output is prefixed with its process (`[p1] ...`); if one
process fails, the others are stopped, and the exit status is the first failure's.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("vam.train", "vam.eval")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def process_env(base: dict, index: int, processes: int, port: int, devices: int, platform: str) -> dict:
  env = dict(base)
  env.update(VAM_COORDINATOR_ADDRESS=f"localhost:{port}", VAM_NUM_PROCESSES=str(processes),
             VAM_PROCESS_ID=str(index), PYTHONUNBUFFERED="1")
  if platform == "cpu":
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
  return env


def _pump(stream, prefix: str, sink) -> None:
  for line in iter(stream.readline, b""):
    sink.write(prefix + line.decode(errors="replace"))
    sink.flush()


def launch(module: str, args: list[str], processes: int, devices_per_process: int, platform: str = "cpu",
           port: int | None = None, python: str = sys.executable) -> int:
  """Runs the group to completion; returns 0 or the first non-zero exit status."""
  if module not in MODULES:
    raise ValueError(f"--module {module!r}: launchers only start {list(MODULES)}")
  if processes < 1 or devices_per_process < 1:
    raise ValueError(f"--processes={processes} and --devices_per_process={devices_per_process} must be >= 1")
  port = port or free_port()
  procs, pumps = [], []
  for i in range(processes):
    env = process_env(os.environ, i, processes, port, devices_per_process, platform)
    p = subprocess.Popen([python, "-m", module, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    pumps.append(threading.Thread(target=_pump, args=(p.stdout, f"[p{i}] ", sys.stdout), daemon=True))
    pumps[-1].start()
  status = 0
  try:
    running = set(range(processes))
    while running:
      for i in sorted(running):
        rc = procs[i].poll()
        if rc is None:
          continue
        running.discard(i)
        if rc and not status:
          status = rc
          print(f"[launch] process {i} exited with status {rc}; stopping the others", file=sys.stderr, flush=True)
          _stop([procs[j] for j in running])
      time.sleep(0.2)
  except KeyboardInterrupt:
    _stop(procs)
    status = status or 130
  for t in pumps:
    t.join(timeout=5)
  return status


def _stop(procs, grace: float = 10.0) -> None:
  for p in procs:
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGTERM)
  deadline = time.time() + grace
  for p in procs:
    try:
      p.wait(timeout=max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      os.killpg(p.pid, signal.SIGKILL)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   usage="launch/local.py --processes P --devices_per_process D [--module M] -- ARGS")
  parser.add_argument("--processes", type=int, default=2, help="processes to start (P)")
  parser.add_argument("--devices_per_process", type=int, default=4, help="CPU devices each process gets (D)")
  parser.add_argument("--module", default="vam.train", choices=MODULES, help="entry point each process runs")
  parser.add_argument("--platform", default="cpu", choices=("cpu", "native"),
                      help="cpu: force D host-platform CPU devices per process; native: leave JAX's platform alone")
  parser.add_argument("--port", type=int, default=None, help="coordinator port on localhost (default: a free one)")
  parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the entry point's arguments")
  ns = parser.parse_args(argv)
  args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
  if not args:
    parser.error("give the entry point's arguments after --")
  try:
    return launch(ns.module, args, ns.processes, ns.devices_per_process, ns.platform, ns.port)
  except ValueError as e:
    parser.error(str(e))


if __name__ == "__main__":
  sys.exit(main())
