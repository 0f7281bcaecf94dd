"""Config files: `experiments/x.py:arg1,arg2` -> a locked `ml_collections.ConfigDict`.

A config file defines `get_config(arg: str | None) -> ConfigDict`; the part after `:` is passed
through verbatim (a variant name, or comma-separated options the file parses itself).
`--config.key.sub=value` overrides are applied on top, typed by the existing value, and an unknown
or mistyped key fails with the valid keys (and the closest match) in the message.
"""

import ast
import difflib
import importlib.util
import json
import os
import sys
from typing import Sequence

import ml_collections

OVERRIDE_PREFIX = "--config."


class ConfigError(ValueError):
  pass


def load_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path.py[:args]` by calling the file's `get_config(args)`."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist (from --config={spec!r})")
  module_spec = importlib.util.spec_from_file_location(f"vam_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  folder = os.path.dirname(os.path.abspath(path))
  sys.path.insert(0, folder)  # config files may import their siblings (experiments/common.py)
  try:
    module_spec.loader.exec_module(module)
  finally:
    sys.path.remove(folder)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} defines no get_config(arg)")
  config = module.get_config(arg or None)
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config must return an ml_collections.ConfigDict, got {type(config).__name__}")
  return config


def _parse_value(key: str, text: str, current):
  if isinstance(current, str) or current is None:
    quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
    return text[1:-1] if quoted else text  # --config.k="'a'" (a Python literal, as for other types) is 'a'
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if isinstance(current, bool) and text.lower() in ("true", "false"):
      return text.lower() == "true"
    raise ConfigError(f"--config.{key}={text!r}: cannot parse as {type(current).__name__}") from None
  if isinstance(current, bool) != isinstance(value, bool):
    raise ConfigError(f"--config.{key}={text!r}: expected {type(current).__name__}")
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
    return type(current)(value)
  if isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
    return ml_collections.ConfigDict(value)  # e.g. --config.data.mixture="{'sim_robot': 1.0}"
  if not isinstance(value, type(current)):
    raise ConfigError(f"--config.{key}={text!r}: expected {type(current).__name__}, got {type(value).__name__}")
  return value


def override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets dotted `key` from its command-line text; the key must already exist."""
  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    keys = list(node.keys())
    if part not in keys:
      where = ".".join(parts[:i]) or "<root>"
      close = difflib.get_close_matches(part, keys, n=1)
      hint = f" Did you mean {'.'.join(parts[:i] + close)!r}?" if close else ""
      raise ConfigError(f"unknown config key {key!r}: {where!r} has no field {part!r}; valid: {sorted(keys)}.{hint}")
    if i < len(parts) - 1:
      node = node[part]
      if not isinstance(node, ml_collections.ConfigDict):
        raise ConfigError(f"unknown config key {key!r}: {'.'.join(parts[:i + 1])!r} is not a group")
  with node.unlocked():
    node[parts[-1]] = _parse_value(key, text, node[parts[-1]])


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Separates `--config.key=value` (or `--config.key value`) arguments from the rest."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(OVERRIDE_PREFIX):
      body = arg[len(OVERRIDE_PREFIX):]
      if "=" in body:
        key, value = body.split("=", 1)
      elif i + 1 < len(argv):
        key, value = body, argv[i + 1]
        i += 1
      else:
        raise ConfigError(f"{arg} needs a value (--config.key=value)")
      overrides.append((key, value))
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def absl_flags_parser(flags_obj, overrides: list):
  """A `flags_parser` for `absl.app.run`: moves `--config.key=value` into `overrides` (absl would reject
  them as unknown flags), then lets absl parse the rest."""

  def parse(argv):
    rest, found = split_overrides(argv[1:])
    overrides.extend(found)
    return flags_obj([argv[0]] + rest)

  return parse


def load(spec: str, overrides: Sequence[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
  """Loads a config file, applies overrides, and locks it (no new keys; typos fail loudly)."""
  config = load_file(spec)
  for key, text in overrides:
    override(config, key, text)
  config.lock()
  return config


def save_json(config: ml_collections.ConfigDict, path: str) -> None:
  """Writes the resolved config next to an output (atomically: vam/atomic.py)."""
  from vam import atomic  # pylint: disable=g-import-not-at-top
  atomic.write_text(path, config.to_json_best_effort(indent=2, sort_keys=True))


def load_json(path: str) -> ml_collections.ConfigDict:
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))
