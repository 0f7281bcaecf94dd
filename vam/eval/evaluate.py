"""One evaluation of one checkpoint, and `--watch` over a training run's checkpoints."""

import os
import time

from vam import checkpoints
from vam import embodiment as embodiment_lib
from vam import log as log_lib
from vam.eval import agents, closed_loop, offline, report, restore, video
from vam.models import registry

logging = log_lib.get("vam.eval")
AGENTS = ("policy", "foresight", "expert", "random")


def default_out(workdir: str, agent: str = "policy") -> str:
  """Where an evaluation of `agent` goes unless --out says: W/eval for the policy, W/eval_<agent> otherwise (a
  report keeps one evaluation per step, so the agents' reports must not share a file)."""
  return os.path.abspath(os.path.join(workdir, "eval" if agent == "policy" else f"eval_{agent}"))


def _pick_videos(result: dict, count: int) -> list[int]:
  """Up to `count` episode indices, a success and a failure first when there are both."""
  wins = [i for i, s in enumerate(result["success"]) if s]
  losses = [i for i, s in enumerate(result["success"]) if not s]
  picked = ([wins[0]] if wins else []) + ([losses[0]] if losses else [])
  rest = [i for i in range(len(result["success"])) if i not in picked]
  return (picked + rest)[:count]


def evaluate(workdir: str, step: int | None = None, out: str | None = None, overrides=(), agent: str = "policy",
             runners: dict | None = None) -> dict:
  """Evaluates one checkpoint; adds it to `out/report.json` (+ HTML, videos, TensorBoard). Returns the report."""
  t0 = time.perf_counter()
  if agent not in AGENTS:
    raise ValueError(f"--agent={agent!r}; valid: {list(AGENTS)}")
  restored = restore.load(workdir, step, overrides)
  ec, cfg = restored.config.eval, restored.config
  if agent == "foresight" and cfg.model.name != "vam":
    raise ValueError(f"--agent=foresight: {workdir} holds a {cfg.model.name!r} model; foresight rollouts give a "
                     "video-action model's decoder the true future (config.model.name='vam')")
  if cfg.model.get("future_state_privileged", False):
    raise ValueError(f"{workdir}: config.model.future_state_privileged=True feeds the decoder the true future joints, "
                     "a diagnostic with no inference path and nothing to roll out: score it with the future oracle "
                     "(vam.eval.offline.future_oracle; experiments/readout.py)")
  out = os.path.abspath(out or default_out(workdir, agent))
  os.makedirs(out, exist_ok=True)
  if cfg.model.name in registry.VIDEO_MODELS:  # evaluated offline on held-out clips (vam/eval/video.py)
    if agent != "policy":
      raise ValueError(f"--agent={agent!r}: {workdir} holds a {cfg.model.name!r} model; agents are for policies")
    evaluation = dict(step=restored.step, config=ec.to_dict(), data_dir=cfg.data_dir,
                      **video.evaluate(restored, cfg.data_dir, out, ec))
    evaluation["eval_seconds"] = time.perf_counter() - t0
    rep = _write(out, restored, evaluation)
    logging.info("step %d evaluated in %.0f s: %s", restored.step, evaluation["eval_seconds"],
                 {k: round(v, 4) for k, v in evaluation["video"].items() if isinstance(v, float)})
    return rep
  not_simulated = [e for e in ec.embodiments if embodiment_lib.spec(e).kind != "robot"]
  if not_simulated:  # e.g. the end-effector robots of converted RLDS datasets: offline metrics only
    raise ValueError(f"config.eval.embodiments={list(ec.embodiments)}: {not_simulated} have no simulator to roll "
                     "out in; evaluate them offline (vam.eval.offline) and list simulated robots here")
  cells_spec = [(t, m, s) for t in ec.tasks for m in ec.modes for s in ec.splits]
  runners = {} if runners is None else runners
  cells, videos = [], []
  for e_index, emb in enumerate(ec.embodiments):
    key = (emb, ec.num_envs, restored.image_size, cfg.data.camera, ec.backend, ec.physics, ec.push_layout)
    if key not in runners:
      runners[key] = closed_loop.Runner(*key)
    runner = runners[key]
    if agent == "policy":
      a = agents.from_eval_config(restored, emb, ec)
    elif agent == "foresight":
      if ec.temporal_ensemble:  # the policy row would execute chunks another way than the foresight row
        raise ValueError("--agent foresight executes each chunk's first config.eval.replan_every actions; "
                         "config.eval.temporal_ensemble=True is for the policy agent only: set it False to compare")
      a = agents.foresight(restored, runner.env, emb, ec.replan_every, ec.sample_steps, ec.control, ec.noise_scale,
                           ec.foresight_tau_v)
    else:
      a = agents.expert(runner.env) if agent == "expert" else agents.random(runner.env, ec.replan_every)
    t = time.perf_counter()
    results = runner.run(a, restored.params, cells_spec, ec.episodes, ec.seed, e_index,
                         record=ec.videos_per_task > 0)
    n_eps = sum(len(r["success"]) for r in results)
    logging.info("%s: %d episodes in %.0f s", emb, n_eps, time.perf_counter() - t)
    for r in results:
      cells.append(report.cell_summary(emb, r))
    for task in ec.tasks:  # videos from the first (mode, split) of each task
      r = next(r for r in results if r["task"] == task)
      for i in _pick_videos(r, ec.videos_per_task):
        ok = r["success"][i]
        name = f"step{restored.step}_{emb}_{task}_{r['mode']}_{r['split']}_seed{r['seeds'][i]}_{'success' if ok else 'failure'}.mp4"
        path = report.write_video(r["frames"][i], os.path.join(out, "videos", name), ok, r["instructions"][i])
        videos.append(dict(path=path, label=f"{emb} {task} ({r['mode']}/{r['split']}): "
                                             f"{'success' if ok else 'failure'}: {r['instructions'][i]}"))
  offline_metrics, by_tau_v, state_estimate, oracle = {}, {}, {}, {}
  if ec.offline_windows > 0 and agent == "policy":
    offline_metrics = offline.action_error(restored, cfg.data_dir, ec.offline_windows, ec.offline_batch, ec.seed,
                                           ec.sample_steps, noise_scale=ec.noise_scale)
    state_estimate = offline.state_estimate_error(restored, cfg.data_dir, ec.offline_windows, ec.offline_batch,
                                                  ec.seed)
    if cfg.model.name == "vam":
      by_tau_v = offline.action_error_by_tau_v(restored, cfg.data_dir, ec.tau_v_values, ec.offline_windows,
                                               ec.offline_batch, ec.seed, ec.sample_steps, ec.noise_scale)
      oracle = offline.future_oracle(restored, cfg.data_dir, ec.offline_windows, ec.offline_batch, ec.seed,
                                     ec.sample_steps, ec.oracle_tau_v, ec.noise_scale, ec.replan_every)
  evaluation = dict(step=restored.step, agent=agent, config=ec.to_dict(), data_dir=cfg.data_dir, cells=cells,
                    means=report.means(cells), offline=offline_metrics, videos=videos,
                    eval_seconds=time.perf_counter() - t0)
  if state_estimate:
    evaluation["state_estimate"] = state_estimate
  if oracle:
    evaluation["future_oracle"] = oracle
  if by_tau_v:
    evaluation["offline_by_tau_v"] = by_tau_v
    evaluation["model"] = dict(layer=cfg.model.layer, tau_v=cfg.model.tau_v)
  rep = _write(out, restored, evaluation)
  logging.info("step %d evaluated in %.0f s: mean success %.3f over %d episodes", restored.step,
               evaluation["eval_seconds"], evaluation["means"]["overall"], sum(c["episodes"] for c in cells))
  return rep


def _write(out: str, restored, evaluation: dict) -> dict:
  rep = report.add_evaluation(os.path.join(out, "report.json"), evaluation, restored.workdir)
  report.write_html(rep, os.path.join(out, "report.html"))
  report.write_curves_svg(rep, os.path.join(out, "success_vs_step.svg"))  # a standalone figure of the above
  _tensorboard(out, evaluation)
  return rep


def _tensorboard(out: str, evaluation: dict) -> None:
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  with SummaryWriter(os.path.join(out, "tensorboard")) as w:
    step = evaluation["step"]
    if "video" in evaluation:
      for k, v in evaluation["video"].items():
        if isinstance(v, float):
          w.add_scalar(f"video/{k}", v, step)
      for t, v in evaluation["video"].get("loss_by_tau", {}).items():
        w.add_scalar(f"video/val_loss_tau_{t}", v, step)
      return
    w.add_scalar("success/mean", evaluation["means"]["overall"], step)
    for axis in ("embodiment", "task", "mode", "split"):
      for k, v in evaluation["means"][f"by_{axis}"].items():
        w.add_scalar(f"success/{axis}/{k}", v, step)
    for slot, v in evaluation["offline"].items():
      w.add_scalar(f"offline_rmse/{slot}", v["rmse_normalised"], step)


def watch(workdir: str, out: str | None, overrides=(), agent: str = "policy", poll_seconds: float = 10.0,
          timeout_seconds: float | None = None) -> dict | None:
  """Evaluates every finished checkpoint once, newest last, as training writes them.

  Stops after evaluating the run's final step (`config.total_steps`), or after `timeout_seconds` without a
  new checkpoint. A checkpoint that cannot be read (e.g. damaged) is reported and skipped.
  """
  done, rep, runners, last_new = set(), None, {}, time.perf_counter()
  out = os.path.abspath(out or default_out(workdir, agent))
  existing = report.load(os.path.join(out, "report.json"))
  done |= {e["step"] for e in existing["evaluations"]}
  while True:
    try:
      steps = restore.finished_steps(workdir)
    except checkpoints.CheckpointError:
      steps = []  # training has not written its first checkpoint yet
    for step in [s for s in steps if s not in done]:
      try:
        rep = evaluate(workdir, step, out, overrides, agent, runners)
      except checkpoints.CheckpointError as e:
        logging.warning("skipping checkpoint %d: %s", step, e)
      done.add(step)
      last_new = time.perf_counter()
    final = _total_steps(workdir, steps)
    if final is not None and final in done:
      return rep
    if timeout_seconds is not None and time.perf_counter() - last_new > timeout_seconds:
      logging.info("no new checkpoint for %.0f s: stopping", timeout_seconds)
      return rep
    time.sleep(poll_seconds)


def _total_steps(workdir: str, steps) -> int | None:
  if not steps:
    return None
  try:
    mngr = checkpoints.manager(workdir, read_only=True)
    return int(checkpoints.read_assets(mngr, max(steps))["config"]["total_steps"])
  except (checkpoints.CheckpointError, KeyError, ValueError):
    return None
