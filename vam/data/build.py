"""Builds the datasets a variant of `experiments/datasets.py` names.

    python -m vam.data.build --config experiments/datasets.py:quickstart --data_dir DIR [--overwrite]
        [--only sim_robot] [--config.key=value ...]

Writes `DIR/<dataset>/1.0.0/` (TFDS array_record files, `normalization.json`, `build_config.json`)
and `DIR/preview.mp4`. An existing dataset is never overwritten without `--overwrite`; TFDS writes
into a temporary folder and renames it at the end, so a failed build leaves nothing half-written.
"""

import argparse
import importlib
import importlib.util
import json
import os
import shutil
import sys
import time

from vam import atomic
from vam import config as config_lib

DATA_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data")
BUILDERS_PACKAGE = "vam_dataset_builders"


def builder_class(name: str):
  """Imports `data/<name>/<name>_dataset_builder.py` (as a package, which TFDS requires)."""
  folder = os.path.join(DATA_ROOT, name)
  if not os.path.isfile(os.path.join(folder, f"{name}_dataset_builder.py")):
    valid = sorted(d for d in os.listdir(DATA_ROOT) if os.path.isfile(os.path.join(DATA_ROOT, d, f"{d}_dataset_builder.py")))
    raise ValueError(f"unknown dataset {name!r}: no {folder}/{name}_dataset_builder.py; valid datasets: {valid}")
  if BUILDERS_PACKAGE not in sys.modules:
    spec = importlib.util.spec_from_file_location(BUILDERS_PACKAGE, os.path.join(DATA_ROOT, "__init__.py"),
                                                  submodule_search_locations=[DATA_ROOT])
    package = importlib.util.module_from_spec(spec)
    sys.modules[BUILDERS_PACKAGE] = package
    spec.loader.exec_module(package)
  module = importlib.import_module(f"{BUILDERS_PACKAGE}.{name}.{name}_dataset_builder")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  classes = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, tfds.core.GeneratorBasedBuilder) and v.__module__ == module.__name__]
  if len(classes) != 1:
    raise ValueError(f"{module.__file__}: expected exactly one dataset builder class, found {len(classes)}")
  return classes[0]


def validate(cfg) -> None:
  from vam.sim import embodiments, tasks  # pylint: disable=g-import-not-at-top
  for t in cfg.tasks:
    tasks.task_id(t)
  if cfg.mode not in tasks.MODES:
    raise ValueError(f"config.mode={cfg.mode!r} is not valid; choose one of {list(tasks.MODES)}")
  if cfg.split not in tasks.SPLITS:
    raise ValueError(f"config.split={cfg.split!r} is not valid; choose one of {list(tasks.SPLITS)}")
  for key, d in cfg.datasets.items():
    for e in d.embodiments:
      if e not in embodiments.EMBODIMENTS:
        raise ValueError(f"config.datasets.{key}.embodiments: unknown embodiment {e!r}; valid embodiments: "
                         f"{sorted(embodiments.EMBODIMENTS)}")


def prepare_output(data_dir: str, names, overwrite: bool) -> None:
  """Fails early (before any simulation) on an unwritable or already-populated output."""
  try:
    os.makedirs(data_dir, exist_ok=True)
  except OSError as e:
    raise SystemExit(f"error: cannot create --data_dir {data_dir!r}: {e.strerror}") from None
  if not os.access(data_dir, os.W_OK):
    raise SystemExit(f"error: --data_dir {data_dir!r} is not writable")
  from vam.data import rlds  # pylint: disable=g-import-not-at-top
  for name in names:
    out = os.path.join(data_dir, name, rlds.VERSION)
    if os.path.exists(out):
      if not overwrite:
        raise SystemExit(f"error: {out} already exists; pass --overwrite to rebuild it (nothing was changed)")


def build(cfg, data_dir: str, only=None, overwrite=False) -> dict:
  """Builds every dataset in `cfg.datasets` (or those in `only`); returns {name: version dir}."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vam.data import stats as stats_lib  # pylint: disable=g-import-not-at-top
  validate(cfg)
  chosen = {k: d for k, d in cfg.datasets.items() if not only or d.name in only}
  if only and len(chosen) != len(set(only)):
    raise ValueError(f"--only {list(only)}: valid datasets in this config: {[d.name for d in cfg.datasets.values()]}")
  prepare_output(data_dir, [d.name for d in chosen.values()], overwrite)
  outputs = {}
  for key, d in chosen.items():
    cls = builder_class(d.name)
    gen = ml_collections.ConfigDict(cfg.to_dict())
    gen.dataset = d
    # Build into a scratch folder and move the finished dataset in at the end: an existing dataset is
    # only replaced (with --overwrite) once its successor is complete.
    scratch = os.path.join(data_dir, f".building-{d.name}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
      builder = cls(data_dir=scratch, generation=gen)
      t0 = time.time()
      builder.download_and_prepare(file_format="array_record", download_dir=os.path.join(scratch, "downloads"))
      stats_lib.write(builder.normalization_stats(), builder.data_dir)
      if hasattr(builder, "conversion_report"):  # converters of real data: what was accepted and refused
        with open(os.path.join(builder.data_dir, "conversion_report.json"), "w") as f:
          json.dump(builder.conversion_report(), f, indent=1)
      config_lib.save_json(gen, os.path.join(builder.data_dir, "build_config.json"))
      final = os.path.join(data_dir, d.name, os.path.basename(builder.data_dir))
      atomic.replace_dir(builder.data_dir, final)  # the old dataset stays whole until the new one takes its place
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
    print(f"built {d.name} in {time.time() - t0:.0f} s -> {final}", flush=True)
    outputs[d.name] = final
  return outputs



def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = config_lib.split_overrides(argv)
  parser = argparse.ArgumentParser(prog="python -m vam.data.build", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="experiments/datasets.py:<variant>")
  parser.add_argument("--data_dir", required=True, help="output folder (TFDS data_dir)")
  parser.add_argument("--overwrite", action="store_true", help="rebuild datasets that already exist")
  parser.add_argument("--only", nargs="*", default=None, help="dataset names to build (default: all in the config)")
  parser.add_argument("--no_preview", action="store_true", help="skip the preview video")
  args = parser.parse_args(rest)
  try:
    cfg = config_lib.load(args.config, overrides)
    outputs = build(cfg, args.data_dir, args.only, args.overwrite)
  except (config_lib.ConfigError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  if not args.no_preview and cfg.preview_episodes > 0:
    from vam.data import preview  # pylint: disable=g-import-not-at-top
    path = preview.write(list(outputs.values()), os.path.join(args.data_dir, "preview.mp4"), cfg.preview_episodes)
    print(f"preview video: {path}")


if __name__ == "__main__":
  main()
