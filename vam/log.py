"""Console logging for vam's entry points: `vam.log.get(__name__)` prints `[time name] message` to stderr.

Kept apart from absl's logger so that libraries' INFO chatter (orbax logs every file it writes) can stay
at WARNING while our progress lines still show.
"""

import logging
import sys


def get(name: str) -> logging.Logger:
  root = logging.getLogger("vam")
  if not root.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
  return logging.getLogger(name)
