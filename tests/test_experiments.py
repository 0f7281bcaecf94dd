"""The experiment drivers' bookkeeping (experiments/demos.py, experiments/video_horizon.py) and the config
plumbing they rely on (frame stride adopted from a video model, checked at the door)."""

import importlib.util
import json
import os
import sys
import xml.etree.ElementTree as ET

import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _driver(name):
  if os.path.join(ROOT, "experiments") not in sys.path:  # the drivers import their sibling `runner`
    sys.path.insert(0, os.path.join(ROOT, "experiments"))
  spec = importlib.util.spec_from_file_location(f"driver_{name}", os.path.join(ROOT, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run(rates_by_step):
  return dict(train_seconds=1, by_step={str(s): dict(mean=m, successes=round(m * 64), episodes=64, cells={})
                                        for s, m in rates_by_step.items()})


def test_demos_table_reports_final_success_and_the_demos_each_method_needs():
  demos = _driver("demos")
  results = {"baseline": {"4": _run({1000: 0.1, 2000: 0.3}), "16": _run({1000: 0.4, 2000: 0.6})},
             "vam": {"4": _run({1000: 0.2, 2000: 0.62}), "16": _run({2000: 0.7})}}
  assert demos.demos_to_reach(results, "baseline", 0.6) == 16
  assert demos.demos_to_reach(results, "vam", 0.6) == 4  # its final (step 2000) success, not its best step
  assert demos.demos_to_reach(results, "vam", 0.9) is None
  md = demos.table(results)
  # each cell: pooled success (counts; 95% Wilson interval)
  assert "| baseline | 0.30 (19/64; 0.20-0.42) | 0.60 (38/64; 0.47-0.71) |" in md
  assert "| vam | 0.62 (40/64; 0.50-0.73) | 0.70 (45/64; 0.58-0.80) |" in md
  assert "best pooled success 0.60" in md and "baseline 16" in md and "vam 4" in md
  root = ET.fromstring(demos.svg(results))  # well-formed, one line per method
  assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 2
  assert demos.svg({"vam": {"4": _run({1: 0.5})}}) == ""  # one N: nothing to draw


def test_video_horizon_table_reads_the_longest_horizon():
  vh = _driver("video_horizon")
  h = dict(steps_ahead=[4, 8], predicted_mean_psnr=[22.0, 21.0], predicted_psnr=[20.0, 19.0],
           copy_last_psnr=[21.5, 20.0], copy_last_latent_psnr=[21.8, 20.4], reconstruction_psnr=[33.0, 33.0],
           mean_latent_mse=[0.5, 0.6], copy_last_latent_mse=[0.6, 0.7])
  results = {"autoencoder": dict(steps=10, video={}),
             "stride4": dict(by_step={"1000": dict(by_horizon=h, mean_psnr_gain_at_longest=1.0)})}
  row = vh.table(results).splitlines()[-1]
  assert row.startswith("| stride4 | 1000 | +8 steps (0.8 s) | 21.00 | 19.00 | 20.00 | 20.40 | 33.00 | 0.600 / 0.700 |")
  assert row.endswith("+1.00 |")


def test_a_vam_adopts_its_video_models_frame_stride_and_bad_strides_are_named():
  from vam.train import train as train_lib
  config = ml_collections.ConfigDict(dict(data=dict(context_frames=2, future_frames=2, frame_stride=1,
                                                    embodiments=["arm6"])))
  train_lib._adopt_data_shape(config, dict(context_frames=2, future_frames=2, frame_stride=4, embodiments=["arm6"]),
                              "video run")
  assert config.data.frame_stride == 4
  older = ml_collections.ConfigDict(dict(data=dict(context_frames=2, future_frames=2, frame_stride=1)))
  train_lib._adopt_data_shape(older, dict(context_frames=2, future_frames=2), "an older video run")  # no stride saved
  assert older.data.frame_stride == 1
  from vam.input import windows
  for bad in (0, -2, 1.5, True):
    with pytest.raises(ValueError, match="config.data.frame_stride"):
      windows.frame_stride(ml_collections.ConfigDict(dict(frame_stride=bad)))


def _evaluation(step, successes, offline_rmse=None, by_tau_v=None):
  ev = dict(step=step, cells=[dict(embodiment="arm6", task="reach", success_rate=successes / 16, ci95=[0.0, 1.0],
                                   successes=successes, episodes=16)])
  if offline_rmse is not None:
    ev["offline"] = {"joints": dict(entries=10, rmse_normalised=offline_rmse, hold_rmse_normalised=1.0)}
  if by_tau_v:
    ev["offline_by_tau_v"] = {t: {"joints": dict(entries=10, rmse_normalised=e)} for t, e in by_tau_v.items()}
  return ev


def _report(path, evaluations):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(dict(evaluations=evaluations), f)


def test_demos_driver_refuses_to_mix_runs_made_another_way(tmp_path):
  """A resumed driver skips trained runs and evaluated steps: OUT/recipe.json keeps a folder to one recipe."""
  import argparse  # pylint: disable=g-import-not-at-top
  demos = _driver("demos")
  args = argparse.Namespace(out=str(tmp_path / "a"), data_dir="d", video_workdir="v", steps=3000,
                            checkpoint_every=3000, episodes=32, config_overrides=[])
  os.makedirs(args.out)
  demos._check_recipe(args)  # pylint: disable=protected-access
  assert json.load(open(os.path.join(args.out, "recipe.json")))["episodes"] == 32
  demos._check_recipe(args)  # pylint: disable=protected-access  # same settings: resumes
  with pytest.raises(SystemExit, match="--episodes=32 .*now 16"):
    demos._check_recipe(argparse.Namespace(**dict(vars(args), episodes=16)))  # pylint: disable=protected-access
  old = str(tmp_path / "old")  # runs by a driver that kept no recipe
  _report(os.path.join(old, "vam_4", "eval", "report.json"), [_evaluation(1000, 2)])
  with pytest.raises(SystemExit, match="no recipe.json"):
    demos._check_recipe(argparse.Namespace(**dict(vars(args), out=old)))  # pylint: disable=protected-access


def test_demos_results_are_rebuilt_from_the_run_folders(tmp_path):
  """Drivers started at once (different --demos / --methods) share OUT: results come from each run's folder, the
  newest evaluation of a step wins, and the VAM's tau_v curves (closed loop and offline) are gathered."""
  demos = _driver("demos")
  out = str(tmp_path)
  _report(os.path.join(out, "baseline_4", "eval", "report.json"),
          [_evaluation(1000, 2, 0.5), _evaluation(2000, 3, 0.4), _evaluation(2000, 5, 0.3)])
  with open(os.path.join(out, "baseline_4", "train_seconds.json"), "w") as f:
    json.dump(dict(train_seconds=12), f)
  _report(os.path.join(out, "vam_16", "eval", "report.json"),
          [_evaluation(3000, 4, 0.6, {"0.0": 0.5, "1.0": 0.7})])
  for t, wins in (("0", 8), ("1", 4)):
    _report(os.path.join(out, "vam_16", "eval_tau_v", t, "report.json"), [_evaluation(3000, wins)])
  os.makedirs(os.path.join(out, "stray_7"))  # not a method of the driver: ignored
  results = demos.collect(out)
  assert set(results) == {"baseline", "vam"}
  b = results["baseline"]["4"]
  assert b["train_seconds"] == 12 and demos.final(b)["successes"] == 5  # the newest evaluation of step 2000
  assert demos.final(b)["offline_rmse"] == pytest.approx(0.3) and demos.final(b)["hold_rmse"] == pytest.approx(1.0)
  v = results["vam"]["16"]
  assert {t: r["successes"] for t, r in v["closed_loop_by_tau_v"].items()} == {"0": 8, "1": 4}
  assert demos.final(v)["offline_rmse_by_tau_v"] == {"0": pytest.approx(0.5), "1": pytest.approx(0.7)}
  md = demos.table(results)
  assert "| vam, 16 | 0 | 0.50 (8/16) | 0.5000 |" in md and "| vam, 16 | 1 | 0.25 (4/16) | 0.7000 |" in md
  assert "| baseline, 4 | 0.12 / 0.31 (steps 1000, 2000) | 0.300 / 1.000 | 12 |" in md


def _split_evaluation(step, wins_by_split):
  return dict(step=step, cells=[dict(embodiment="arm6", task=task, mode="easy", split=split, successes=w,
                                     episodes=16, success_rate=w / 16, ci95=[0.0, 1.0])
                                for split, wins in wins_by_split.items() for task, w in zip(("reach", "push"), wins)])


def test_ablation_pretraining_never_sees_the_target_robot_and_results_rank_the_settings(tmp_path):
  ablation = _driver("ablation")
  assert ablation.pretrain_overrides("human_only", "arm6")[1] == "--config.data.only_embodiments=['human_hand']"
  assert ablation.pretrain_overrides("both", "arm6")[1] == "--config.data.only_embodiments=['human_hand', 'gantry']"
  assert ablation.pretrain_overrides("human_to_robot", "gantry")[1].endswith("['human_hand', 'arm6']")
  with pytest.raises(ValueError, match="scratch"):
    ablation.pretrain_overrides("scratch", "arm6")
  out = str(tmp_path)
  _report(os.path.join(out, "pretrain_both", "eval", "report.json"), [_split_evaluation(3000, {"train": (1, 0)})])
  _report(os.path.join(out, "both_4", "eval", "report.json"),
          [_split_evaluation(500, {"train": (4, 1)}), _split_evaluation(1000, {"train": (12, 4)})])
  _report(os.path.join(out, "both_4", "eval_heldout", "report.json"),
          [_split_evaluation(1000, {"unseen_positions": (8, 2), "unseen_scene": (6, 0)})])
  _report(os.path.join(out, "scratch_4", "eval", "report.json"), [_split_evaluation(1000, {"train": (10, 0)})])
  os.makedirs(os.path.join(out, "pretrain_nonsense"))  # not a setting: ignored
  results = ablation.collect(out)
  assert list(results) == ["scratch", "both"]  # in SETTINGS order
  both = results["both"]
  assert ablation.final(both["0"])["successes"] == 1 and ablation.final(both["4"])["successes"] == 16
  assert both["4"]["heldout"]["unseen_positions"]["mean"] == pytest.approx(10 / 32)
  lo, hi = both["4"]["heldout"]["unseen_scene"]["ci95"]
  assert lo < 6 / 32 < hi
  md = ablation.table(results)
  assert "| both | 0.03 (1/32;" in md and "N = 4, unseen positions" in md and "N = 4, unseen objects" not in md
  assert "N = 4, seen worlds, observed ordering (worst to best): scratch 0.31 < both 0.50" in md


def _oracle(true_future: float, context: float) -> dict:
  row = lambda x: dict(all=x, covered=x, beyond=x, executed=x, by_step=[x] * 16)
  return dict(future_steps=8, executed_steps=8, imagined_tau_v=1.0, entries=10, windows=64,
              oracle_ratio=true_future / context,
              rows={"true_future@0": row(true_future), "other_future@0": row(0.3), "context_only": row(context),
                    "imagined": row(context), "hold": row(0.5)})


def test_readout_results_pair_the_oracle_with_the_closed_loop_rollouts(tmp_path):
  """experiments/readout.py: each variant's future oracle beside its rollouts with the true future (foresight)
  and as it is; the demos driver gathers a VAM's foresight rollouts and oracle alike."""
  readout, demos = _driver("readout"), _driver("demos")
  out = str(tmp_path)
  os.makedirs(os.path.join(out, "grid8"))
  with open(os.path.join(out, "grid8", "oracle.json"), "w") as f:
    json.dump(_oracle(0.06, 0.12), f)
  _report(os.path.join(out, "grid8", "eval_foresight", "report.json"), [_evaluation(1500, 12)])
  _report(os.path.join(out, "grid8", "eval", "report.json"), [_evaluation(1500, 6)])
  os.makedirs(os.path.join(out, "not_a_variant"))
  results = readout.collect(out)
  assert set(results) == {"grid8"} and results["grid8"]["overrides"] == readout.VARIANTS["grid8"]
  assert results["grid8"]["foresight"]["successes"] == 12 and results["grid8"]["policy"]["successes"] == 6
  md = readout.table(results)
  assert "| grid8 | 0.0600 | 0.1200 | 0.3000 | 0.1200 (tau_v 1) | 0.500 | 0.75 (12/16) | 0.38 (6/16) |" in md
  assert "* a diagnostic" not in md
  # a privileged-future variant reads the true future joints in every column: marked, and never rolled out
  assert readout.privileged("grid8_privileged_future_state") and not readout.privileged("grid8")
  md = readout.table({"grid8_privileged_future_state": results["grid8"]})
  assert "| grid8_privileged_future_state * |" in md and "\\* a diagnostic fed the window's true future joints" in md
  vam = os.path.join(out, "demos", "vam_8")
  evaluation = dict(_evaluation(3000, 5), future_oracle=_oracle(0.1, 0.1))
  _report(os.path.join(vam, "eval", "report.json"), [evaluation])
  _report(os.path.join(vam, "eval_foresight", "report.json"), [_evaluation(3000, 14)])
  run = demos.collect(os.path.join(out, "demos"))["vam"]["8"]
  assert run["foresight"]["successes"] == 14 and demos.final(run)["future_oracle"]["ratio"] == pytest.approx(1.0)
  assert "| vam, 8 | 0.31 (5/16; 0.14-0.56) | 0.88 (14/16; 0.64-0.97) | 0.1000 / 0.1000 = 1.00 |" in demos.table({"vam": {"8": run}})


def test_compare_reads_evaluation_folders_and_reports_the_future_oracle(tmp_path):
  """`vam.eval.compare`: a run is a workdir (its eval/report.json) or an evaluation folder itself (a VAM's
  eval_foresight); a VAM's future oracle becomes a table of what the future is worth to its decoder."""
  from vam.eval import compare  # pylint: disable=g-import-not-at-top
  vam = str(tmp_path / "vam")
  cell = lambda wins: [dict(embodiment="arm6", task="reach", mode="easy", split="train", successes=wins, episodes=16,
                            success_rate=wins / 16, ci95=[0.0, 1.0])]
  _report(os.path.join(vam, "eval", "report.json"), [dict(step=4000, cells=cell(8), future_oracle=_oracle(0.06, 0.12))])
  _report(os.path.join(vam, "eval_foresight", "report.json"), [dict(step=4000, cells=cell(15))])
  c = compare.compare({"vam": vam, "vam_true_future": os.path.join(vam, "eval_foresight")})
  assert c["success"]["vam arm6"]["mean"] == 0.5 and c["success"]["vam_true_future arm6"]["mean"] == 15 / 16
  md = compare.markdown(c)
  assert "true future / context only over steps 0-7: 0.50" in md
  assert "| true_future@0 | 0.0600 | 0.0600 | 0.0600 |" in md and "| imagined@1 | 0.1200 |" in md
  with pytest.raises(FileNotFoundError, match="evaluate the run first"):
    compare.compare({"none": str(tmp_path / "missing")})


def test_readme_tables_are_written_from_their_json(tmp_path):
  """experiments/tables.py: the README's result tables match their committed JSON (--check fails otherwise), a
  changed JSON changes its table, and a README without a block is an error naming it."""
  tables = _driver("tables")
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  assert tables.main(["--check", os.path.join(ROOT, "README.md")]) == 0
  root = tmp_path / "repo"
  (root / "results").mkdir(parents=True)
  for name, (path, _) in tables.BLOCKS.items():
    with open(os.path.join(ROOT, path)) as f:
      doc = json.load(f)
    if name == "train_step":
      doc["results"]["baseline/current"]["examples_per_s"] *= 2  # a faster step must show in the table
    (root / path).write_text(json.dumps(doc))
  changed = tables.render(readme, root=str(root))
  assert changed != readme
  stale = tmp_path / "README.md"
  stale.write_text(changed)
  assert tables.main(["--check", str(stale)]) == 1
  with pytest.raises(ValueError, match="train_step table"):
    tables.render(readme.replace("<!-- train_step table -->", ""))
