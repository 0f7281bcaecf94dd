"""The JSON report every benchmark writes: the machine, the config, results and same-run ratios."""

import json
import os
import platform


def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  return dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(), jax=jax.__version__,
              devices=[str(d) for d in jax.devices()])


def write(path: str, benchmark: str, config: dict, results: dict, ratios: dict) -> None:
  """Writes the report to `path` and prints results and ratios."""
  report = dict(benchmark=benchmark, machine=machine(), config=config, results=results, ratios=ratios)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(dict(results=results, ratios=ratios), indent=1))
