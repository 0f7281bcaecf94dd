"""Writes that a reader never sees half done and that, when they fail (a full disk, a kill), leave the previous
version intact: the one way vam replaces a file or a folder.

    write_text(path, text) / write_json(path, obj)   a unique temporary file beside `path`, fsynced, renamed over it
    replace_dir(new, final)                           `new` becomes `final` in one step (Linux: renameat2 exchange)
    with locked(path): ...                            an exclusive lock on `path + ".lock"` (read-modify-write)
    update_json(path, fn, default)                    `fn(old) -> new` under that lock, written atomically
"""

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import tempfile

_RENAME_EXCHANGE = 2  # linux/fs.h


def _fsync_dir(directory: str) -> None:
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass  # some filesystems cannot sync a directory; the rename is still atomic
  finally:
    os.close(fd)


def write_bytes(path: str, data: bytes) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  _fsync_dir(directory)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj, indent: int | None = 1) -> None:
  write_text(path, json.dumps(obj, indent=indent))


def _exchange(a: str, b: str) -> bool:
  """Swaps two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = libc.renameat2
  except (OSError, AttributeError):
    return False
  at_fdcwd = -100
  if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the filesystem does not support the exchange
    return False
  raise OSError(err, os.strerror(err), a)


def replace_dir(new: str, final: str) -> None:
  """Makes the finished folder `new` the folder `final` (same filesystem). If `final` exists, the two are
  exchanged in one step and the old one is then removed, so at every moment `final` is either the complete
  old folder or the complete new one; where no exchange exists the old folder is renamed aside first (kept
  as `<final>.old-*` if the process dies between the two renames)."""
  final = os.path.abspath(final)
  os.makedirs(os.path.dirname(final), exist_ok=True)
  if not os.path.exists(final):
    os.rename(new, final)
  elif _exchange(new, final):
    shutil.rmtree(new)  # now the old folder
  else:
    aside = tempfile.mkdtemp(dir=os.path.dirname(final), prefix=f"{os.path.basename(final)}.old-")
    os.rmdir(aside)
    os.rename(final, aside)
    os.rename(new, final)
    shutil.rmtree(aside)
  _fsync_dir(os.path.dirname(final))


@contextlib.contextmanager
def locked(path: str):
  """An exclusive advisory lock for read-modify-write of `path` (held on `path + ".lock"`; waits for it)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".lock", "a") as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def update_json(path: str, fn, default):
  """Reads `path` (or `default()` if absent), writes `fn(value)` back atomically, all under `locked(path)`, so
  concurrent writers never lose each other's update. Returns the new value."""
  with locked(path):
    if os.path.exists(path):
      with open(path) as f:
        value = json.load(f)
    else:
      value = default()
    value = fn(value)
    write_json(path, value)
  return value
