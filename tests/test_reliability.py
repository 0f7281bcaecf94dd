"""Faults a run must survive (issue "Reliability campaign"): a failed write leaves the old file, folders are
swapped whole, concurrent report writers keep each other's evaluations, one writer per workdir, SIGTERM saves
and exits 0, a damaged newest checkpoint is set aside and the step before it resumes, evaluation skips
damaged or vanished steps."""

import contextlib
import errno
import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vam import atomic
from vam import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "quickstart.py") + ":tiny"


@contextlib.contextmanager
def vam_log():
  """The lines vam's own logger writes (it does not propagate to pytest's caplog)."""
  lines = []

  class Keep(logging.Handler):
    def emit(self, record):
      lines.append(record.getMessage())

  handler = Keep()
  logging.getLogger("vam").addHandler(handler)
  try:
    yield lines
  finally:
    logging.getLogger("vam").removeHandler(handler)


# ---- atomic writes ----------------------------------------------------------------------------------------
def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
  path = str(tmp_path / "report.json")
  atomic.write_json(path, dict(v=1))

  def full_disk(fd):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(atomic.os, "fsync", full_disk)
  with pytest.raises(OSError, match="No space left"):
    atomic.write_json(path, dict(v=2))
  assert json.load(open(path)) == dict(v=1)
  assert os.listdir(tmp_path) == ["report.json"]


@pytest.mark.parametrize("exchange", [True, False])
def test_replace_dir_swaps_whole_folders(tmp_path, monkeypatch, exchange):
  if not exchange:  # filesystems without renameat2's exchange: rename aside, then in
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
  final = tmp_path / "dataset"
  for version in (1, 2):
    new = tmp_path / f".new{version}"
    new.mkdir()
    (new / "data.txt").write_text(str(version))
    atomic.replace_dir(str(new), str(final))
    assert (final / "data.txt").read_text() == str(version) and not new.exists()
  assert sorted(os.listdir(tmp_path)) == ["dataset"]


def test_concurrent_report_writers_keep_every_evaluation(tmp_path):
  """Three processes add 12 evaluations each to one report at once: all 36 are there."""
  path = str(tmp_path / "report.json")
  code = ("import sys; from vam.eval import report\n"
          "for i in range(12):\n"
          "  report.add_evaluation(sys.argv[1], dict(step=int(sys.argv[2]) * 100 + i, cells=[]), 'w')\n")
  procs = [subprocess.Popen([sys.executable, "-c", code, path, str(k)], cwd=ROOT) for k in range(3)]
  assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
  steps = [e["step"] for e in json.load(open(path))["evaluations"]]
  assert steps == sorted(k * 100 + i for k in range(3) for i in range(12))


# ---- one writer per workdir -------------------------------------------------------------------------------
def test_workdir_lock_refuses_a_second_holder_and_takes_over_a_stale_one(tmp_path):
  from vam.train import lifecycle  # pylint: disable=g-import-not-at-top
  w = str(tmp_path / "w")
  with lifecycle.WorkdirLock(w):
    code = ("import sys; from vam.train import lifecycle\n"
            "try:\n  lifecycle.WorkdirLock(sys.argv[1]).acquire()\n"
            "except lifecycle.WorkdirLockedError as e:\n  print(e); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code, w], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"workdir {w} is in use by a running vam.train (host " in proc.stdout
    assert f"pid {os.getpid()}," in proc.stdout
  # A dead holder's file (its pid gone, no lock held) is taken over, with a warning naming it.
  with open(os.path.join(w, lifecycle.LOCK_FILE), "w") as f:
    json.dump(dict(host="node7", pid=999999, since="2026-01-01T00:00:00"), f)
  with vam_log() as lines, lifecycle.WorkdirLock(w):
    pass
  assert any("taking over the lock left by a process that is no longer running (host node7, pid 999999" in l
             for l in lines)
  with vam_log() as lines, lifecycle.WorkdirLock(w):  # a clean release leaves nothing to take over
    pass
  assert not lines


# ---- SIGTERM, a second writer, resume ---------------------------------------------------------------------
def _train_cmd(data_dir, workdir, *extra):
  return [sys.executable, "-m", "vam.train", "--config", CONFIG, "--workdir", workdir, f"--config.data_dir={data_dir}",
          "--config.log_every=1", *extra]


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_a_second_writer_is_refused(tiny_data_dir, tmp_path):
  w = str(tmp_path / "run")
  first = subprocess.Popen(_train_cmd(tiny_data_dir, w, "--config.total_steps=100000",
                                      "--config.checkpoint_every=100000"), cwd=ROOT, stderr=subprocess.PIPE,
                           text=True)
  log = []
  deadline = time.time() + 600
  while time.time() < deadline:  # wait until it trains
    line = first.stderr.readline()
    log.append(line)
    if "step 3/100000" in line:
      break
    assert first.poll() is None, "".join(log)[-3000:]
  second = subprocess.run(_train_cmd(tiny_data_dir, w, "--config.total_steps=4"), cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
  assert second.returncode != 0
  assert f"is in use by a running vam.train (host " in second.stderr and f"pid {first.pid}," in second.stderr
  first.send_signal(signal.SIGTERM)
  rest = first.communicate(timeout=300)[1]
  assert first.returncode == 0, rest[-3000:]
  saved = [l for l in rest.splitlines() if "SIGTERM: saved step" in l]
  assert saved, rest[-3000:]
  step = int(re.search(r"saved step (\d+) and stopping", saved[0]).group(1))
  assert step >= 3 and os.listdir(os.path.join(w, "checkpoints")) == [str(step)]
  # The same command resumes from it (and the lock of the stopped run was released).
  again = subprocess.run(_train_cmd(tiny_data_dir, w, f"--config.total_steps={step + 2}",
                                    "--config.checkpoint_every=100000"), cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"resumed from {w}/checkpoints/{step}" in again.stderr
  assert str(step + 2) in os.listdir(os.path.join(w, "checkpoints"))


# ---- checksums -------------------------------------------------------------------------------------------
def test_checksums_ignore_sharding_and_catch_any_flipped_bit_or_moved_value():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vam import checkpoints  # pylint: disable=g-import-not-at-top
  x = np.random.RandomState(0).randn(16, 6).astype(np.float32)
  tree = dict(w=x, half=x.astype(jnp.bfloat16), count=np.arange(5, dtype=np.int32), key=jax.random.key(3))
  sums = checkpoints.checksums(tree)
  assert sorted(sums) == ["count", "half", "key", "w"] and len(set(sums.values())) == 4
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("a", "b"))
  sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("a", "b")))
  assert checkpoints.checksums(dict(tree, w=sharded)) == sums  # computed in place, shard by shard
  bits = x.view(np.uint32)
  for index, bit in [((0, 0), 0), ((7, 3), 17), ((15, 5), 31), ((3, 2), 9)]:
    flipped = bits.copy()
    flipped[index] ^= np.uint32(1 << bit)
    assert checkpoints.checksums(dict(tree, w=flipped.view(np.float32)))["w"] != sums["w"], (index, bit)
  swapped = x.copy()
  swapped[[0, 1]] = swapped[[1, 0]]
  assert checkpoints.checksums(dict(tree, w=swapped))["w"] != sums["w"]


# ---- damaged checkpoints ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_steps(tiny_data_dir, tmp_path_factory):
  """A tiny run with checkpoints at steps 2 and 4."""
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  w = str(tmp_path_factory.mktemp("two_steps"))
  overrides = dict(data_dir=tiny_data_dir, total_steps="4", log_every="2", checkpoint_every="2")
  train_lib.train(config_lib.load(CONFIG, list(overrides.items())), w)
  return w


def _truncate(folder):
  """Every file of an item cut to half its size, as a copy or a write that stopped midway leaves it."""
  for victim in [f for f in glob.glob(os.path.join(folder, "**", "*"), recursive=True) if os.path.isfile(f)]:
    with open(victim, "r+b") as f:
      f.truncate(os.path.getsize(victim) // 2)


def _delete_manifest(folder):
  victim = sorted(glob.glob(os.path.join(folder, "**", "manifest.ocdbt"), recursive=True))[0]
  os.remove(victim)
  return victim


def _garble_assets(folder):
  victim = [f for f in glob.glob(os.path.join(folder, "**", "*"), recursive=True) if os.path.isfile(f)][0]
  with open(victim, "w") as f:
    f.write("{not json")
  return victim


def _flip_bit(folder):
  """One bit flipped in one of an item's data files, at the first of a few places where it changes the values
  read back (measured: flips at some offsets of some files leave every restored value equal); it reads back
  without an error (tensorstore keeps no checksum of its chunks), so only the step's saved checksums catch it."""
  from vam import checkpoints  # pylint: disable=g-import-not-at-top
  read = lambda: checkpoints.fingerprint(checkpoints.ocp.StandardCheckpointer().restore(folder))
  before = read()
  for victim in sorted(glob.glob(os.path.join(folder, "ocdbt.process_0", "d", "*")), key=os.path.getsize,
                       reverse=True):
    original = open(victim, "rb").read()
    for where in (0.5, 0.3, 0.7, 0.2, 0.8):
      data = bytearray(original)
      data[int(len(data) * where)] ^= 0x10
      with open(victim, "wb") as f:
        f.write(bytes(data))
      try:
        if read() != before:
          return victim
      except Exception:  # pylint: disable=broad-except  (a flip that breaks decompression: not silent)
        pass
    with open(victim, "wb") as f:
      f.write(original)
  raise AssertionError(f"no flipped bit in {folder} changed the values read back")


DAMAGE = {"truncated state": ("state", _truncate), "deleted manifest": ("ema_params", _delete_manifest),
          "unreadable assets": ("assets", _garble_assets), "flipped bit in state": ("state", _flip_bit)}


def _snapshot(folder):
  return {os.path.relpath(f, folder): open(f, "rb").read()
          for f in glob.glob(os.path.join(folder, "**", "*"), recursive=True) if os.path.isfile(f)}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_training_resumes_from_the_newest_intact_step_and_keeps_the_damaged_one(two_steps, tiny_data_dir, tmp_path,
                                                                               damage):
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  w = str(tmp_path / "run")
  shutil.copytree(two_steps, w)
  item, damage_fn = DAMAGE[damage]
  damage_fn(os.path.join(w, "checkpoints", "4", item))
  before = _snapshot(os.path.join(w, "checkpoints", "4"))
  overrides = dict(data_dir=tiny_data_dir, total_steps="6", log_every="2", checkpoint_every="2")
  with vam_log() as lines:
    train_lib.train(config_lib.load(CONFIG, list(overrides.items())), w)
  warning = [l for l in lines if "is damaged" in l]
  assert warning and f"{w}/checkpoints/4" in warning[0] and "moved to" in warning[0], lines
  assert f"resumed from {w}/checkpoints/2" in lines
  assert _snapshot(os.path.join(w, "checkpoints_damaged", "4")) == before  # untouched, not deleted
  assert sorted(int(s) for s in os.listdir(os.path.join(w, "checkpoints"))) == [2, 4, 6]  # 4 retrained


def test_evaluation_skips_damaged_and_vanished_steps(two_steps, tmp_path, monkeypatch):
  from vam import checkpoints  # pylint: disable=g-import-not-at-top
  from vam.eval import evaluate  # pylint: disable=g-import-not-at-top
  w = str(tmp_path / "run")
  shutil.copytree(two_steps, w)
  _flip_bit(os.path.join(w, "checkpoints", "4", "ema_params"))  # the one restore checks the values
  with pytest.raises(checkpoints.DamagedCheckpointError, match=r"checkpoints/4 is damaged: the values of \S+ "
                                                               r"differ from the checksum saved with them"):
    checkpoints.restore_params(w, 4)
  _truncate(os.path.join(w, "checkpoints", "4", "ema_params"))
  small = [("eval.embodiments", "['arm6']"), ("eval.tasks", "['reach']"), ("eval.modes", "['easy']"),
           ("eval.splits", "['train']"), ("eval.episodes", "1"), ("eval.num_envs", "1"),
           ("eval.offline_windows", "0"), ("eval.videos_per_task", "0")]
  with pytest.raises(checkpoints.DamagedCheckpointError, match=f"checkpoint {w}/checkpoints/4 is damaged"):
    evaluate.evaluate(w, 4, str(tmp_path / "eval"), small)
  with vam_log() as lines:
    rep = evaluate.watch(w, str(tmp_path / "watch"), small, poll_seconds=0.1, timeout_seconds=5)
  assert [e["step"] for e in rep["evaluations"]] == [2]
  assert any("skipping checkpoint 4" in l and "is damaged" in l for l in lines), lines
  assert os.path.isdir(os.path.join(w, "checkpoints", "4"))  # evaluation never moves or deletes anything
  # A step deleted (checkpoint retention) while it is being read: skipped by name, the watch goes on.
  shutil.rmtree(os.path.join(w, "checkpoints", "4"))
  shutil.copytree(os.path.join(two_steps, "checkpoints", "4"), os.path.join(w, "checkpoints", "4"))
  real_restore = checkpoints.ocp.CheckpointManager.restore

  def restore_after_retention(self, step, *args, **kw):
    if step == 2 and os.path.isdir(os.path.join(w, "checkpoints", "2")):
      shutil.rmtree(os.path.join(w, "checkpoints", "2"))
    return real_restore(self, step, *args, **kw)

  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "restore", restore_after_retention)
  with vam_log() as lines:
    rep = evaluate.watch(w, str(tmp_path / "watch2"), small, poll_seconds=0.1, timeout_seconds=5)
  assert [e["step"] for e in rep["evaluations"]] == [4]
  assert any("skipping checkpoint 2" in l and "deleted while being read" in l for l in lines), lines


# ---- wrong input at the door ------------------------------------------------------------------------------
def test_config_fuzz_ends_in_a_valid_config_or_an_error_naming_the_key():
  """300 random override sets (benchmarks/reliability.py's table: wrong types, out-of-range values, typos) on
  the tiny quickstart config: parsing and validation either accept them (and the values are in range) or
  raise a ConfigError naming the key. The full command-line campaign: `python -m benchmarks.reliability`."""
  import random  # pylint: disable=g-import-not-at-top
  from benchmarks import reliability  # pylint: disable=g-import-not-at-top
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  rng = random.Random(0)
  accepted = refused = 0
  for _ in range(300):
    chosen = rng.sample(sorted(reliability.FUZZ_KEYS), rng.randint(1, 3))
    overrides = [(k, rng.choice(reliability.FUZZ_KEYS[k])) for k in chosen]
    if rng.random() < 0.15:
      overrides.append((rng.choice(reliability.TYPOS), "1"))
    try:
      config = config_lib.load(CONFIG, overrides)
      train_lib.validate(config)
    except config_lib.ConfigError as e:
      refused += 1
      assert any(k.split(".")[-1] in str(e) for k, _ in overrides), (overrides, str(e))
      assert "\n" not in str(e).strip()
      continue
    accepted += 1
    for key in train_lib.AT_LEAST_ONE:
      node = config
      for part in key.split("."):
        node = node[part]
      assert node >= 1, (key, overrides)
  assert accepted > 20 and refused > 100, (accepted, refused)


# ---- damaged data -------------------------------------------------------------------------------------------
def test_a_truncated_shard_or_missing_statistics_is_an_error_naming_the_file(tiny_data_dir, tmp_path):
  from vam.input import sources  # pylint: disable=g-import-not-at-top
  data = str(tmp_path / "data")
  shutil.copytree(tiny_data_dir, data)
  dataset = os.path.join(data, "sim_robot", "1.0.0")
  (shard,) = glob.glob(os.path.join(dataset, "*-train.array_record*"))
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) // 2)
  size = os.path.getsize(shard)
  with pytest.raises(ValueError, match=r"sim_robot/1.0.0 split train episode \d+: the record cannot be read "
                                       r"\(truncated or corrupt file\? sim_robot-train.array_record-00000-of-00001\)"):
    sources.EpisodeSource(dataset, "train", "front")
  assert os.path.getsize(shard) == size  # read only, nothing rewritten
  assert len(sources.EpisodeSource(dataset, "val", "front")) > 0  # the intact split still reads
  os.remove(os.path.join(dataset, "normalization.json"))
  with pytest.raises(FileNotFoundError, match=f"no normalisation statistics at {dataset}/normalization.json"):
    sources.EpisodeSource(dataset, "val", "front")


def test_skip_bad_episodes_replaces_an_unreadable_episode_and_counts_it(tiny_data_dir, tmp_path, monkeypatch):
  """config.data.skip_bad_episodes: a record that does not read and an episode that does not decode (NaN
  actions, a step of the wrong shape) are skipped with a warning, counted, and training goes on."""
  from vam import embodiment as embodiment_lib  # pylint: disable=g-import-not-at-top
  from vam.input import pipeline, sources, windows  # pylint: disable=g-import-not-at-top
  from vam.train import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  entries = [pipeline.DatasetEntry("sim_robot", f"{tiny_data_dir}/sim_robot/1.0.0", 1.0)]
  spec = windows.WindowSpec(context_frames=1, future_frames=0, action_horizon=4, proprio_dim=17)
  real_episode = sources.EpisodeSource.episode

  def nan_in_episode_1(self, i):
    if int(i) == 1:
      raise sources.DamagedEpisodeError(f"dataset {self.dir} split {self.split} episode 1: non-finite values in "
                                        "action")
    return real_episode(self, i)

  monkeypatch.setattr(sources.EpisodeSource, "episode", nan_in_episode_1)
  strict = pipeline.InputPipeline(entries, spec, embodiment_lib.ActionSpace()).sources[0]
  (at,) = np.nonzero(strict.index[:, 0] == 1)[0][:1]
  with pytest.raises(sources.DamagedEpisodeError, match="episode 1: non-finite values in action"):
    strict[int(at)]
  lenient = pipeline.InputPipeline(entries, spec, embodiment_lib.ActionSpace(), skip_bad=True).sources[0]
  with vam_log() as lines:
    windows_of_1 = [lenient[int(j)] for j in np.nonzero(lenient.index[:, 0] == 1)[0]]
    others = [lenient[int(j)] for j in np.nonzero(lenient.index[:, 0] == 0)[0][:3]]
  assert all(w["skipped"] == 1 and w["provenance"][1] == 2 for w in windows_of_1)  # the next episode's windows
  assert all(w["skipped"] == 0 for w in others)
  assert sum("episode 1: non-finite values in action: skipped" in l for l in lines) == 1, lines  # warned once
  monkeypatch.setattr(sources.EpisodeSource, "episode", real_episode)

  # A corrupt byte in a shard: the record holding it is unreadable (riegeli's chunk hash), the others read;
  # training runs on them and its metrics count the one skipped.
  data = str(tmp_path / "data")
  shutil.copytree(tiny_data_dir, data)
  (shard,) = glob.glob(os.path.join(data, "sim_robot", "1.0.0", "*-train.array_record*"))
  content = bytearray(open(shard, "rb").read())
  content[int(len(content) * 0.3)] ^= 0xFF
  with open(shard, "wb") as f:
    f.write(bytes(content))
  w = str(tmp_path / "run")
  overrides = dict(data_dir=data, total_steps="2", log_every="1", checkpoint_every="2",
                   **{"data.skip_bad_episodes": "True"})
  train_lib.train(config_lib.load(CONFIG, list(overrides.items())), w)
  rows = metrics_lib.read(os.path.join(w, "metrics.jsonl"))
  total = len(sources.EpisodeSource(f"{tiny_data_dir}/sim_robot/1.0.0", "train"))
  assert len(rows) == 2 and 0 < rows[-1]["unreadable_episodes"] < total and rows[-1]["skipped_windows"] == 0


def test_a_save_that_fails_for_lack_of_space_stops_clearly_and_keeps_the_previous_step(two_steps, tiny_data_dir,
                                                                                   tmp_path, monkeypatch):
  from vam import checkpoints  # pylint: disable=g-import-not-at-top
  from vam.train import train as train_lib  # pylint: disable=g-import-not-at-top
  w = str(tmp_path / "run")
  shutil.copytree(two_steps, w)
  before = _snapshot(os.path.join(w, "checkpoints", "4"))

  def disk_full(self, step, *args, **kw):
    raise OSError(errno.ENOSPC, "No space left on device", os.path.join(str(self.directory), str(step)))

  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "save", disk_full)
  overrides = dict(data_dir=tiny_data_dir, total_steps="6", log_every="2", checkpoint_every="2")
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"checkpoint save in .* failed \(at step 6\): No space left on device \(errno 28\); the "
                           r"newest finished checkpoint, step 4, is intact"):
    train_lib.train(config_lib.load(CONFIG, list(overrides.items())), w)
  assert _snapshot(os.path.join(w, "checkpoints", "4")) == before
  assert sorted(os.listdir(os.path.join(w, "checkpoints"))) == ["2", "4"]
  with open(os.path.join(w, ".vam-train.lock")) as f:  # the lock was released on the way out
    assert f.read() == ""
