"""What keeps a training run safe from its surroundings: one writer per workdir (`WorkdirLock`) and a stop
request by signal (`StopRequest`: SIGTERM -> save at the next step boundary and exit 0, as preemption
schedulers such as SLURM's `--signal=TERM@120` expect).
"""

import datetime
import fcntl
import json
import os
import signal
import socket
import threading

from vam import log as log_lib

logging = log_lib.get("vam.train")
LOCK_FILE = ".vam-train.lock"


class WorkdirLockedError(ValueError):
  """Another live `vam.train` holds the workdir."""


class WorkdirLock:
  """An exclusive lock on `W/.vam-train.lock` (flock: the kernel releases it when its holder dies, however it
  dies). The file names the holder (host, pid, start time); a file left by a dead holder is taken over with
  a warning. Release empties it; the file itself stays (unlinking it would let two writers lock two inodes)."""

  def __init__(self, workdir: str):
    self.workdir, self.path, self._file = workdir, os.path.join(workdir, LOCK_FILE), None

  def acquire(self) -> "WorkdirLock":
    os.makedirs(self.workdir, exist_ok=True)
    f = open(self.path, "a+")  # pylint: disable=consider-using-with  (held for the run's lifetime)
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(f)
      f.close()
      raise WorkdirLockedError(
          f"workdir {self.workdir} is in use by a running vam.train ({_describe(holder)}); stop that run or "
          f"choose another --workdir (lock: {self.path})") from None
    previous = _read_holder(f)
    if previous:
      logging.warning("workdir %s: taking over the lock left by a process that is no longer running (%s)",
                      self.workdir, _describe(previous))
    f.seek(0)
    f.truncate()
    f.write(json.dumps(dict(host=socket.gethostname(), pid=os.getpid(),
                            since=datetime.datetime.now().isoformat(timespec="seconds"))))
    f.flush()
    self._file = f
    return self

  def release(self) -> None:
    if self._file is None:
      return
    self._file.seek(0)
    self._file.truncate()
    self._file.flush()
    fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
    self._file.close()
    self._file = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _read_holder(f) -> dict:
  f.seek(0)
  text = f.read().strip()
  if not text:
    return {}
  try:
    return json.loads(text)
  except ValueError:
    return dict(unreadable=text[:80])


def _describe(holder: dict) -> str:
  if not holder:
    return "holder unknown"
  if "unreadable" in holder:
    return f"lock file content {holder['unreadable']!r}"
  return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"


class StopRequest:
  """Turns SIGTERM into a request to stop at the next step boundary (after a checkpoint) instead of dying.
  Only in the main thread of a single-process run: multi-process runs get the same from JAX's preemption
  service through the checkpoint manager (`reached_preemption`), which keeps every process on one step."""

  def __init__(self, signals=(signal.SIGTERM,), enabled: bool = True):
    self.requested, self.signal_name, self._previous = False, None, {}
    if not enabled or threading.current_thread() is not threading.main_thread():
      return
    for sig in signals:
      self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.requested, self.signal_name = True, signal.Signals(signum).name

  def close(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
