"""`python -m vam.train --config experiments/<exp>.py[:args] --workdir W [--config.key=value ...]`."""

import sys
import traceback

from absl import app, flags, logging

from vam import config as config_lib

flags.DEFINE_string("config", None, "config file, `path.py[:args]`")
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and the resolved config go; resumes if it has them")
flags.DEFINE_integer("stop_after_steps", None, "stop with a checkpoint after this many steps of this run "
                     "(fits a job time limit; the next run resumes)")
# Multi-process runs (vam/distributed.py): these override the launcher's VAM_* environment variables.
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs)")
flags.DEFINE_integer("num_processes", None, "number of processes in the run (multi-process runs)")
flags.DEFINE_integer("process_id", None, "this process's index in [0, num_processes) (multi-process runs)")
FLAGS = flags.FLAGS
_OVERRIDES = []  # --config.key=value, filled by the flags parser


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.config or not FLAGS.workdir:
    raise app.UsageError("both --config and --workdir are required")
  logging.set_verbosity(logging.WARNING)  # libraries; vam's own progress lines use vam.log
  from vam import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)  # before any device use
  config = config_lib.load(FLAGS.config, _OVERRIDES)
  from vam.train import train  # pylint: disable=g-import-not-at-top  (after flags: fast --help)
  train.train(config, FLAGS.workdir, stop_after=FLAGS.stop_after_steps)


if __name__ == "__main__":
  try:
    app.run(main, flags_parser=config_lib.absl_flags_parser(FLAGS, _OVERRIDES))
  except (ValueError, FileNotFoundError, FloatingPointError) as e:  # bad input: the message names it
    traceback.print_exc()
    sys.exit(f"error: {e}")
