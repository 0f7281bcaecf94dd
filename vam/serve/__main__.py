"""`python -m vam.serve --workdir W [--step N] [--host H] [--port P] [--embodiment arm6] [--config.key=value ...]`

Restores the checkpoint as `vam.eval` does (EMA params, its normalisation and config; `--config.eval.*` and
`--config.model.tau_v` overrides apply), compiles the policy once, and serves it over WebSockets. Prints
`serving <workdir> step <N> (<embodiment>) on ws://<host>:<port>` when ready; SIGTERM / Ctrl-C stop it.
"""

import asyncio
import signal
import sys
import traceback

from absl import app, flags, logging

from vam import config as config_lib

flags.DEFINE_string("workdir", None, "a training workdir (its checkpoints/ are read, never written)")
flags.DEFINE_integer("step", None, "checkpoint step to serve (default: the newest finished one)")
flags.DEFINE_string("host", "127.0.0.1", "interface to listen on (0.0.0.0: every interface)")
flags.DEFINE_integer("port", 8000, "TCP port (0: any free port, printed when ready)")
flags.DEFINE_string("embodiment", None, "the robot requests command by default (default: the first robot of "
                    "config.eval.embodiments)")
flags.DEFINE_integer("seed", 0, "base of the sampling keys of requests that send none")
flags.DEFINE_float("max_message_mb", 8.0, "larger requests get an error reply")
FLAGS = flags.FLAGS
_OVERRIDES = []


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  if FLAGS.max_message_mb <= 0:
    raise app.UsageError(f"--max_message_mb={FLAGS.max_message_mb} must be positive")
  logging.set_verbosity(logging.ERROR)
  from vam.eval import restore  # pylint: disable=g-import-not-at-top
  from vam.serve import policy as policy_lib  # pylint: disable=g-import-not-at-top
  from vam.serve import server as server_lib  # pylint: disable=g-import-not-at-top
  restored = restore.load(FLAGS.workdir, FLAGS.step, _OVERRIDES)
  embodiment = FLAGS.embodiment or restored.config.eval.embodiments[0]
  policy = policy_lib.ServedPolicy(restored, embodiment, seed=FLAGS.seed)
  server = server_lib.PolicyServer(policy, int(FLAGS.max_message_mb * (1 << 20)))

  async def run():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
      loop.add_signal_handler(sig, stop.set)
    ready = lambda port: print(f"serving {restored.workdir} step {restored.step} ({embodiment}) on "
                               f"ws://{FLAGS.host}:{port}", flush=True)
    await server.serve(FLAGS.host, FLAGS.port, ready, stop)
    print(f"stopped after {server.requests} requests", flush=True)

  asyncio.run(run())


if __name__ == "__main__":
  try:
    app.run(main, flags_parser=config_lib.absl_flags_parser(FLAGS, _OVERRIDES))
  except (ValueError, FileNotFoundError, OSError) as e:  # bad input (CheckpointError, ConfigError, a busy port)
    traceback.print_exc()
    sys.exit(f"error: {e}")
