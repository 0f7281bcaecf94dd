"""`python -m vam.eval --workdir W [--step N] [--watch] [--out DIR] [--config.key=value ...]`."""

import sys
import traceback

from absl import app, flags, logging

from vam import config as config_lib

flags.DEFINE_string("workdir", None, "a training workdir (its checkpoints/ are read, never written)")
flags.DEFINE_integer("step", None, "checkpoint step to evaluate (default: the newest finished one)")
flags.DEFINE_bool("watch", False, "evaluate each new finished checkpoint as training writes them")
flags.DEFINE_string("out", None, "output folder (default: W/eval, W/eval_<agent> for other agents): report.json, "
                    "report.html, videos/, tensorboard/")
flags.DEFINE_enum("agent", "policy", ["policy", "foresight", "expert", "random"],
                  "what acts: the checkpoint's policy; `foresight`, a video-action model's decoder reading the true "
                  "future (the scripted expert rolled forward on a copy of the world and rendered; default out "
                  "W/eval_foresight); or a reference (scripted expert / random) that checks the harness")
flags.DEFINE_float("poll_seconds", 10.0, "--watch: seconds between looks for new checkpoints")
flags.DEFINE_float("watch_timeout", None, "--watch: stop after this many seconds without a new checkpoint")
FLAGS = flags.FLAGS
_OVERRIDES = []  # --config.key=value (applied to the checkpoint's saved config), filled by the flags parser


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  logging.set_verbosity(logging.ERROR)  # libraries (orbax warns that a read-only manager is read-only)
  from vam.eval import evaluate  # pylint: disable=g-import-not-at-top
  if FLAGS.watch:
    rep = evaluate.watch(FLAGS.workdir, FLAGS.out, _OVERRIDES, FLAGS.agent, FLAGS.poll_seconds, FLAGS.watch_timeout)
  else:
    rep = evaluate.evaluate(FLAGS.workdir, FLAGS.step, FLAGS.out, _OVERRIDES, FLAGS.agent)
  if rep is not None:
    import os  # pylint: disable=g-import-not-at-top
    from vam.eval import report  # pylint: disable=g-import-not-at-top
    print(report.text_table(rep["evaluations"][-1]))
    out = FLAGS.out or evaluate.default_out(FLAGS.workdir, FLAGS.agent)
    print(f"report: {os.path.join(os.path.abspath(out), 'report.json')}")


if __name__ == "__main__":
  try:
    app.run(main, flags_parser=config_lib.absl_flags_parser(FLAGS, _OVERRIDES))
  except (ValueError, FileNotFoundError) as e:  # bad input (CheckpointError, ConfigError): the message names it
    traceback.print_exc()
    sys.exit(f"error: {e}")
