"""The evaluation harness: a separate process restores params + assets, rolls out, reports; it is validated
with the scripted expert (high) and a random agent (low); --watch; bad checkpoints give clear errors."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from vam import checkpoints
from vam import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "quickstart.py") + ":tiny"
# A small evaluation: one robot, two tasks, seen worlds, 2 episodes per cell, one batch.
SMALL_EVAL = ["--config.eval.embodiments=['arm6']", "--config.eval.tasks=['reach', 'push']",
              "--config.eval.modes=['easy']", "--config.eval.splits=['train']", "--config.eval.episodes=2",
              "--config.eval.num_envs=4", "--config.eval.offline_windows=16", "--config.eval.offline_batch=8",
              "--config.eval.videos_per_task=1"]


def _train(data_dir, workdir, stop_after=None, **overrides):
  from vam.train import train as train_lib  # the tests may import training; the harness may not
  base = dict(data_dir=data_dir, total_steps="4", log_every="2", checkpoint_every="2")
  base.update({k: str(v) for k, v in overrides.items()})
  train_lib.train(config_lib.load(CONFIG, list(base.items())), workdir, stop_after=stop_after)


def _eval_cli(*args, timeout=900):
  return subprocess.run([sys.executable, "-m", "vam.eval", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
  w = str(tmp_path_factory.mktemp("trained"))
  _train(tiny_data_dir, w)
  return w


def test_harness_does_not_import_training():
  code = ("import sys, vam.eval.evaluate, vam.eval.__main__, vam.eval.restore; "
          "bad = [m for m in sys.modules if m.startswith('vam.train')]; assert not bad, bad")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_expert_scores_high_and_random_low():
  from vam.eval import agents, closed_loop
  runner = closed_loop.Runner("arm6", num_envs=8, image_size=64, camera="front")
  cells = [("reach", "easy", "train"), ("push", "easy", "train")]
  expert = runner.run(agents.expert(runner.env), {}, cells, episodes=4, seed=0, embodiment_index=1)
  rand = runner.run(agents.random(runner.env, 4), {}, cells, episodes=4, seed=0, embodiment_index=1)
  rate = lambda res: sum(sum(r["success"]) for r in res) / sum(len(r["success"]) for r in res)
  assert rate(expert) >= 0.75, expert
  assert rate(rand) <= 0.25, rand
  assert expert[0]["seeds"] == rand[0]["seeds"]  # fixed seeds: the same worlds for every agent


@pytest.mark.slow
def test_rollout_shows_an_agent_frames_its_stride_apart():
  """An agent trained on windows `frame_stride` steps apart sees, at each plan, frames t - (H_o - 1 - j) * s
  (the reset frame standing in before the episode's start) -- the same spacing as its training windows."""
  import dataclasses
  import jax
  import jax.numpy as jnp
  import numpy as np
  from vam.eval import agents, closed_loop
  runner = closed_loop.Runner("arm6", num_envs=2, image_size=64, camera="front")
  base, seen = agents.random(runner.env, replan_every=2), []

  def plan(params, carry, state, frames, instruction, rng):
    jax.debug.callback(lambda f: seen.append(np.asarray(f)), frames, ordered=True)
    return base.plan(params, carry, state, frames, instruction, rng)

  agent = dataclasses.replace(base, plan=plan, context_frames=3, frame_stride=3)
  state = runner.reset("easy", "train", jnp.stack([jax.random.PRNGKey(i) for i in range(2)]), jnp.zeros(2, jnp.int32))
  instruction = jnp.zeros((2, 96), jnp.uint8)
  _, frames, _, _ = closed_loop.rollout(runner.env, agent, 10, True, {}, state, instruction, jax.random.PRNGKey(0))
  frames = np.asarray(frames)  # (T + 1, B, H, W, 3): the reset frame, then after each step
  assert len(seen) == 5 and not np.array_equal(frames[0], frames[-1])
  for i, got in enumerate(seen):
    t = 2 * i  # the plan at step t sees frames t - 6, t - 3, t
    want = np.stack([frames[max(t - 3 * (2 - j), 0)] for j in range(3)], axis=1)
    np.testing.assert_array_equal(got, want, err_msg=f"plan {i}")


@pytest.mark.slow
def test_foresight_frames_are_the_experts_future():
  """The foresight agent's future (`agents.expert_future`): the scripted expert rolled forward on copies of the
  worlds renders exactly the frames the expert's own rollout shows that many steps later, and carries the
  expert's memory from the step it is asked for; the worlds it started from are not advanced."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from vam.eval import agents, closed_loop
  from vam.sim import experts
  runner = closed_loop.Runner("arm6", num_envs=2, image_size=64, camera="front")
  state = runner.reset("easy", "train", jnp.stack([jax.random.PRNGKey(i) for i in range(2)]),
                       jnp.asarray([0, 1], jnp.int32))  # a reach and a push
  instruction = jnp.zeros((2, 96), jnp.uint8)
  expert = agents.expert(runner.env)
  _, frames, _, _ = closed_loop.rollout(runner.env, expert, 8, True, {}, state, instruction, jax.random.PRNGKey(0))
  frames = np.asarray(frames)  # (T + 1, B, H, W, 3): the reset frame, then after each step
  es0 = jax.vmap(lambda _: experts.init())(state.step)
  future, kept = jax.jit(lambda s, es: agents.expert_future(runner.env, s, es, (4, 8), 6))(state, es0)
  np.testing.assert_array_equal(np.asarray(future), np.stack([frames[4], frames[8]], axis=1))
  es = es0  # the expert's memory after 6 of its own steps
  s = state
  for _ in range(6):
    action, es = jax.vmap(lambda st, e: experts.act(runner.env, st, e))(s, es)
    s = jax.vmap(runner.env.step)(s, action)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), kept, es))
  np.testing.assert_array_equal(np.asarray(runner.env.render(state)[:, 0]), frames[0])  # the start is untouched


@pytest.mark.slow
def test_eval_restores_in_a_separate_process_and_writes_the_report(trained, tmp_path):
  out = str(tmp_path / "eval")
  proc = _eval_cli("--workdir", trained, "--out", out, *SMALL_EVAL)
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = proc.stdout.strip().splitlines()[-1]
  assert last == f"report: {out}/report.json"
  rep = json.load(open(os.path.join(out, "report.json")))
  assert rep["format"] == "vam-eval-report-v1" and rep["workdir"] == os.path.abspath(trained)
  (ev,) = rep["evaluations"]
  assert ev["step"] == 4 and ev["agent"] == "policy" and ev["config"]["episodes"] == 2
  assert {(c["embodiment"], c["task"], c["mode"], c["split"]) for c in ev["cells"]} == {
      ("arm6", "reach", "easy", "train"), ("arm6", "push", "easy", "train")}
  for c in ev["cells"]:
    assert c["episodes"] == 2 and len(c["seeds"]) == 2 and 0 <= c["ci95"][0] <= c["success_rate"] <= c["ci95"][1] <= 1
  assert 0 <= ev["means"]["overall"] <= 1 and set(ev["means"]["by_task"]) == {"reach", "push"}
  offline = ev["offline"]["arm6_joints"]
  assert offline["entries"] > 0 and offline["rmse_native"] > 0
  assert offline["hold_rmse_native"] > 0 and offline["last_rmse_native"] > 0  # the references beside it
  # The tiny baseline's privileged-state probe: how far from the true target and object it puts them.
  assert set(ev["state_estimate"]) == {"target", "object"}
  assert all(v["error_m"] > 0 and v["mean_error_m"] > 0 and v["windows"] == 16 for v in ev["state_estimate"].values())
  assert "held-out state estimate" in proc.stdout
  assert len(ev["videos"]) == 2 and all(os.path.getsize(v["path"]) > 1000 for v in ev["videos"])
  assert all(("success" in v["label"]) != ("failure" in v["label"]) for v in ev["videos"])
  assert "<table>" in open(os.path.join(out, "report.html")).read()
  assert os.listdir(os.path.join(out, "tensorboard"))


@pytest.mark.slow
def test_watch_evaluates_new_checkpoints_and_skips_partial_ones(tiny_data_dir, tmp_path):
  w, out = str(tmp_path / "w"), str(tmp_path / "eval")
  _train(tiny_data_dir, w, stop_after=2)
  os.makedirs(os.path.join(w, "checkpoints", "3.orbax-checkpoint-tmp"))  # a save still being written
  watcher = subprocess.Popen([sys.executable, "-m", "vam.eval", "--workdir", w, "--out", out, "--watch",
                              "--poll_seconds=1", "--watch_timeout=600", *SMALL_EVAL,
                              "--config.eval.offline_windows=0", "--config.eval.videos_per_task=0"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 600
    while time.time() < deadline and not os.path.exists(os.path.join(out, "report.json")):
      time.sleep(1)
    shutil.rmtree(os.path.join(w, "checkpoints", "3.orbax-checkpoint-tmp"))
    _train(tiny_data_dir, w)  # resumes and writes step 4, the last one: the watcher evaluates it and stops
    stdout, stderr = watcher.communicate(timeout=600)
  finally:
    watcher.kill()
  assert watcher.returncode == 0, stderr[-3000:]
  evaluations = json.load(open(os.path.join(out, "report.json")))["evaluations"]
  assert [e["step"] for e in evaluations] == [2, 4]
  import xml.etree.ElementTree as ET  # pylint: disable=g-import-not-at-top
  root = ET.parse(os.path.join(out, "success_vs_step.svg")).getroot()  # written once two steps are in
  series = {(c["embodiment"], c["task"]) for c in evaluations[-1]["cells"]}
  assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == len(series) > 0


def test_success_curves_pool_modes_and_splits_per_embodiment_and_task():
  from vam.eval import report
  cell = lambda e, t, m, wins, n: dict(embodiment=e, task=t, mode=m, split="train", successes=wins, episodes=n)
  evaluations = [dict(step=20, cells=[cell("arm6", "push", "easy", 3, 4), cell("arm6", "push", "hard", 1, 4),
                                      cell("gantry", "push", "easy", 0, 4)]),
                 dict(step=10, cells=[cell("arm6", "push", "easy", 0, 4), cell("arm6", "push", "hard", 0, 4),
                                      cell("gantry", "push", "easy", 2, 4)])]
  curves = report.success_curves(evaluations)
  assert curves == {("arm6", "push"): [(10, 0.0, 8), (20, 0.5, 8)], ("gantry", "push"): [(10, 0.5, 4), (20, 0.0, 4)]}
  assert report.success_curves_svg(evaluations[:1]) is None  # one step: no curve to draw
  import xml.etree.ElementTree as ET  # pylint: disable=g-import-not-at-top
  evaluations[0]["cells"].append(cell("gantry", "a<b&c", "easy", 1, 2))  # names are escaped
  evaluations[1]["cells"].append(cell("gantry", "a<b&c", "easy", 1, 0))  # no episodes: no point
  root = ET.fromstring(report.success_curves_svg(evaluations))
  assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 3
  assert report.success_curves(evaluations)[("gantry", "a<b&c")] == [(20, 0.5, 2)]


def test_workdir_without_checkpoints(tmp_path):
  proc = _eval_cli("--workdir", str(tmp_path))
  assert proc.returncode != 0 and "has no checkpoints" in proc.stderr.splitlines()[-1]


@pytest.mark.slow
def test_bad_checkpoints_give_clear_errors(trained, tmp_path):
  from vam.eval import restore
  with pytest.raises(checkpoints.CheckpointError, match=r"no finished checkpoint of step 7; finished steps: \[2, 4\]"):
    restore.load(trained, 7)
  broken = str(tmp_path / "broken")
  shutil.copytree(trained, broken)
  assets = os.path.join(broken, "checkpoints", "4", "assets", "metadata")
  meta = json.load(open(assets))
  meta["format"] = "vam-checkpoint-v1"  # written before actions became relative: refused, and why
  json.dump(meta, open(assets, "w"))
  with pytest.raises(checkpoints.CheckpointError, match="format 'vam-checkpoint-v1' .absolute joint-target.*retrain"):
    restore.load(broken, 4)
  with pytest.raises(checkpoints.CheckpointError, match="format 'vam-checkpoint-v1'"):
    checkpoints.restore_params(broken, 4)  # the one restore that fine-tuning and frozen parts use, too
  shutil.rmtree(os.path.join(broken, "checkpoints", "4", "assets"))
  with pytest.raises(checkpoints.CheckpointError, match="has no 'assets' item"):
    restore.load(broken, 4)
  with pytest.raises(config_lib.ConfigError, match="unknown config key 'eval.episode'"):
    restore.load(trained, 4, [("eval.episode", "3")])


def test_side_by_side_videos_keep_the_predictions_brightness(tmp_path, monkeypatch):
  """The report's side-by-side videos show a reconstruction (floats already in [0, 1]) as bright as the real
  frame it reconstructs: a second [-1, 1] -> [0, 1] map once washed every predicted frame out to [0.5, 1]."""
  import numpy as np
  from vam.eval import report, video
  from vam.input import windows
  captured = {}

  def capture(frames, lines_of, path, fps):
    captured["f"] = frames
    return path

  monkeypatch.setattr(report, "captioned_mp4", capture)
  rng = np.random.default_rng(0)
  real = rng.integers(0, 256, (1, 2, 8, 8, 3), dtype=np.uint8)
  host = dict(images=real, instruction=np.stack([windows.encode_instruction("push the red block")]))
  video._side_by_side(host, [("real", real), ("reconstructed", video._unit(real))], "autoencoder", 0, str(tmp_path), 1)
  frames = captured["f"]  # (T, H, 2W, 3): [real | reconstructed]
  assert frames.shape == (2, 8, 16, 3)
  np.testing.assert_array_equal(frames[..., 8:, :], frames[..., :8, :])
  # A video model's: the context frames repeated across the panels, then [real | mean | copy last].
  host["images"] = rng.integers(0, 256, (1, 2, 8, 8, 3), dtype=np.uint8)
  made = video._side_by_side(host, [("real", real), ("mean", video._unit(real)), ("copy last", real)], "video_dit",
                             0, str(tmp_path), 1)
  frames = captured["f"]
  assert frames.shape == (4, 8, 24, 3) and "real | mean | copy last" in made[0]["label"]
  np.testing.assert_array_equal(frames[0, :, 16:], host["images"][0, 0])
  np.testing.assert_array_equal(frames[2:, :, 8:16], real[0])


def _push_trace(pusher_xy, pusher_z, block_xy, target=(0.2, 0.0)):
  """A synthetic push trace for `traces.measures`: (success (T, 1), grasp (T + 1, 1, 3), privileged)."""
  import numpy as np
  from vam.sim import tasks
  t = len(pusher_xy)
  grasp = np.concatenate([np.asarray(pusher_xy, float), np.asarray(pusher_z, float)[:, None]], -1)[:, None]
  priv = np.zeros((t, 1, tasks.PRIVILEGED_DIM))
  priv[:, 0, 0:2] = target
  priv[:, 0, 3:5] = block_xy
  priv[:, 0, 5] = 0.02
  return np.zeros((t - 1, 1), bool), grasp, priv


def test_trace_measures_tell_a_clean_push_from_a_pusher_sliding_past():
  import numpy as np
  from vam.eval import traces
  xs = np.linspace(0.0, 0.1, 11)
  # Behind the block (3.6 cm), 1 cm off the block -> target line (y = 0), at pushing height.
  clean = _push_trace(np.stack([xs - 0.036, np.full(11, 0.01)], -1), np.full(11, 0.025), np.stack([xs, 0 * xs], -1))
  row = traces.measures("push", *clean)[0]
  assert row["pushing_steps"] == 11
  assert abs(row["lateral_offset"] - 0.01) < 1e-6 and abs(row["push_height"] - 0.025) < 1e-6
  assert row["pusher_ahead"] == 0.0 and abs(row["object_moved"] - 0.1) < 1e-6
  # The pusher passes the block that stays put: half of its near, low steps are on the target's side.
  past = _push_trace(np.stack([np.linspace(-0.05, 0.05, 11), np.zeros(11)], -1), np.full(11, 0.03),
                     np.zeros((11, 2)))
  row = traces.measures("push", *past)[0]
  assert 0.3 < row["pusher_ahead"] < 0.7 and row["object_moved"] == 0.0
  # Too high to touch the block: no pushing steps, no push measures.
  high = _push_trace(np.stack([xs - 0.036, 0 * xs], -1), np.full(11, 0.12), np.zeros((11, 2)))
  row = traces.measures("push", *high)[0]
  assert row["pushing_steps"] == 0 and row["lateral_offset"] is None
  assert traces.summary([row])["lateral_offset"] is None


def test_trace_svg_is_well_formed_with_a_panel_per_episode():
  import xml.etree.ElementTree as ET
  import numpy as np
  from vam.eval import traces
  xs = np.linspace(0.0, 0.1, 11)
  success, grasp, priv = _push_trace(np.stack([xs - 0.036, 0 * xs], -1), np.full(11, 0.025),
                                     np.stack([xs, 0 * xs], -1))
  tr = {a: dict(success=np.repeat(success, 3, 1), grasp=np.repeat(grasp, 3, 1), privileged=np.repeat(priv, 3, 1))
        for a in ("expert", "policy")}
  root = ET.fromstring(traces.svg("push", tr, ("expert", "policy"), columns=2))
  ns = "{http://www.w3.org/2000/svg}"
  assert len(root.findall(f"{ns}text")) == 3
  assert len(root.findall(f"{ns}polyline")) == 3 * 2 * 2  # episodes x agents x (gripper, object)


@pytest.mark.slow
def test_traces_cli_replays_the_evaluation_cells_worlds(trained, tmp_path):
  """`python -m vam.eval.traces` on a trained checkpoint: the expert's trace succeeds where the harness's expert
  does, and the files carry one row per episode. The policy plans every step, temporally ensembled, at a lower
  sampling temperature (eval-config keys, as `python -m vam.eval` takes them)."""
  from vam.eval import traces
  out = str(tmp_path / "tr")
  assert traces.main(["--workdir", trained, "--task", "reach", "--episodes", "2", "--out", out,
                      "--config.eval.replan_every=1", "--config.eval.temporal_ensemble=True",
                      "--config.eval.noise_scale=0.5"]) == 0
  with open(os.path.join(out, "traces_arm6_reach.json")) as f:
    result = json.load(f)
  assert len(result["policy"]["episodes"]) == len(result["seeds"]) == 2
  assert result["expert"]["summary"]["success"] == 1.0
  assert result["expert"]["summary"]["final_error"] < 0.04
  assert os.path.getsize(os.path.join(out, "traces_arm6_reach.svg")) > 0


def test_temporal_ensemble_averages_what_each_live_plan_commands_now():
  """ACT's temporal ensembling: plan j (made j steps ago) contributes its entry j; plans that agree give their
  common command, the first step has only the newest plan, and plans older than the horizon drop out."""
  import jax.numpy as jnp
  import numpy as np
  from vam.eval import agents
  b, h, c = 2, 4, 3
  carry = dict(plans=jnp.zeros((b, h, h, c)), valid=jnp.zeros((b, h), bool))
  # Plans that agree: the plan made at step t commands 10 * (t + k) for step t + k.
  for t in range(6):
    chunk = jnp.broadcast_to(10.0 * (t + jnp.arange(h))[None, :, None], (b, h, c))
    carry, now = agents.ensemble_step(carry, chunk, 0.5)
    assert now.shape == (b, 1, c)
    np.testing.assert_allclose(now, 10.0 * t, rtol=1e-6)
  assert bool(carry["valid"].all())
  # Disagreeing plans (plan made at step t commands t everywhere): weights exp(0.5 * age) over the h live plans.
  carry = dict(plans=jnp.zeros((b, h, h, c)), valid=jnp.zeros((b, h), bool))
  for t in range(6):
    carry, now = agents.ensemble_step(carry, jnp.full((b, h, c), float(t)), 0.5)
  ages = np.arange(h)
  w = np.exp(0.5 * ages)
  np.testing.assert_allclose(now[0, 0, 0], np.sum(w * (5 - ages)) / w.sum(), rtol=1e-6)
