import json

import pytest

from vam import config as config_lib

DATASETS = "experiments/datasets.py"


def test_load_variant_and_override():
  cfg = config_lib.load(f"{DATASETS}:tiny", [("seed", "7"), ("datasets.sim_robot.episodes_per_task", "3"),
                                              ("image_size", "(32, 32)"), ("mode", "hard")])
  assert cfg.variant == "tiny" and cfg.seed == 7 and cfg.mode == "hard"
  assert cfg.datasets.sim_robot.episodes_per_task == 3
  assert tuple(cfg.image_size) == (32, 32)


def test_config_is_locked():
  cfg = config_lib.load(f"{DATASETS}:tiny")
  with pytest.raises(AttributeError):
    cfg.new_field = 1


def test_unknown_key_names_it_and_suggests():
  with pytest.raises(config_lib.ConfigError, match=r"'datasets.sim_robot.episodes_per_tsk'.*episodes_per_task"):
    config_lib.load(f"{DATASETS}:tiny", [("datasets.sim_robot.episodes_per_tsk", "3")])
  with pytest.raises(config_lib.ConfigError, match="no field 'sed'"):
    config_lib.load(f"{DATASETS}:tiny", [("sed", "3")])


def test_mistyped_value():
  with pytest.raises(config_lib.ConfigError, match="seed"):
    config_lib.load(f"{DATASETS}:tiny", [("seed", "three")])


def test_unknown_variant_lists_valid():
  with pytest.raises(ValueError, match="quickstart"):
    config_lib.load(f"{DATASETS}:nope")


def test_missing_file():
  with pytest.raises(config_lib.ConfigError, match="does not exist"):
    config_lib.load("experiments/missing.py")


def test_split_overrides_both_forms():
  rest, ov = config_lib.split_overrides(["--data_dir", "x", "--config.seed=3", "--config.mode", "hard"])
  assert rest == ["--data_dir", "x"] and ov == [("seed", "3"), ("mode", "hard")]


def test_save_json_roundtrip(tmp_path):
  cfg = config_lib.load(f"{DATASETS}:tiny")
  path = str(tmp_path / "c.json")
  config_lib.save_json(cfg, path)
  assert json.load(open(path))["variant"] == "tiny"
  assert config_lib.load_json(path).datasets.sim_human.name == "sim_human"
