"""The diagnostic ladder on a dataset (README "Diagnostic ladder"), one JSON:

  a. replay: recorded demos replayed open loop through the policies' action path (both robots, joint and
     end-effector control), success where the expert succeeded;
  b. privileged state: the flow-matching decoder conditioned on the true task state (experiments/state_policy.py)
     trained and evaluated in closed loop (joint and end-effector control);
  c. overfit: steps the quickstart baseline needs to fit one fixed batch of 32 windows (sampled chunks within
     0.1 normalised RMSE of their targets), at the quickstart learning rate and at 3e-4;
  d. offline: the held-out action error of trained policies (`--policies`) next to "hold still" and "repeat the
     last action" (from their newest evaluation reports).

    python -m benchmarks.ladder --data_dir out/demo/data --out benchmarks/results/ladder.json \
        [--policies out/demo/vam out/demo/baseline] [--skip_state]
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def replay_rung(data_dir: str) -> dict:
  from vam.eval import replay  # pylint: disable=g-import-not-at-top
  out = {}
  for robot in ("arm6", "gantry"):
    for control in ("joints", "eef"):
      r = replay.replay(data_dir, robot, control, replan_every=8, max_episodes=64)
      out[f"{robot}/{control}"] = dict(success=r["success"], episodes=r["episodes"],
                                       by_task={k: v["success"] for k, v in r["by_task"].items()})
  return out


def state_rung(data_dir: str, workdir: str) -> dict:
  """Trains the privileged-state policy in a separate process, evaluates it with both controls."""
  def run(*args):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
      raise SystemExit(f"{' '.join(args[:3])} failed:\n{proc.stderr[-3000:]}")
  t0 = time.time()
  run("-m", "vam.train", "--config", "experiments/state_policy.py", "--workdir", workdir,
      f"--config.data_dir={data_dir}")
  seconds = time.time() - t0
  out = dict(train_seconds=round(seconds))
  for control in ("joints", "eef"):
    where = os.path.join(workdir, f"eval_{control}")
    run("-m", "vam.eval", "--workdir", workdir, "--out", where, f"--config.eval.control={control}")
    ev = json.load(open(os.path.join(where, "report.json")))["evaluations"][-1]
    out[control] = {f"{c['embodiment']}/{c['task']}": dict(rate=c["success_rate"], ci95=c["ci95"],
                                                           episodes=c["episodes"]) for c in ev["cells"]}
    if control == "joints":
      out["offline"] = offline_of(ev)
  return out


def offline_of(evaluation: dict) -> dict:
  return {k: {m: round(v[m], 4) for m in ("rmse_native", "hold_rmse_native", "last_rmse_native")}
          for k, v in evaluation.get("offline", {}).items() if k.endswith("_joints") and "hold_rmse_native" in v}


def overfit_rung(data_dir: str, lrs=(3e-3, 3e-4), max_steps: int = 600, threshold: float = 0.1) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vam import config as config_lib  # pylint: disable=g-import-not-at-top
  from vam.models import registry  # pylint: disable=g-import-not-at-top
  from vam.train import optim, train as train_lib  # pylint: disable=g-import-not-at-top
  out = {}
  for lr in lrs:
    cfg = config_lib.load(os.path.join(ROOT, "experiments", "quickstart.py"), [
        ("data_dir", data_dir), ("total_steps", str(max_steps)), ("optimizer.lr", str(lr)),
        ("optimizer.warmup_steps", "10"), ("optimizer.schedule", "constant"), ("model.proprio_dropout", "0.0"),
        ("data.mixture", "{'sim_robot': 1.0, 'sim_human': 0.0}")])
    space, _, loader = train_lib.make_inputs(cfg)
    host = next(iter(loader.dataset(32, seed=0, prefetch_buffer=0)))
    batch = {k: jnp.asarray(host[k]) for k in registry.input_keys(cfg)}
    make_model = registry.factory(cfg, space.dim, len(space.embodiments), int(host["images"].shape[2]))
    binder = registry.Binder(make_model)
    tx, schedule = optim.make(cfg.optimizer, max_steps)
    state, ema = jax.jit(train_lib.init_fn(make_model, tx))(jax.random.PRNGKey(0))
    step = jax.jit(train_lib.make_train_step(binder, tx, schedule, ema_decay=0.0))
    sample = jax.jit(lambda params: binder(params).sample(batch, jax.random.PRNGKey(1)))
    mask, target = np.asarray(batch["action_mask"]), np.asarray(batch["actions"])
    curve, fitted = [], None
    for i in range(1, max_steps + 1):
      state, ema, _ = step(state, ema, batch)
      if i % 50 == 0:
        rmse = float(np.sqrt(np.mean(np.square(np.asarray(sample(state["params"])) - target)[mask])))
        curve.append((i, round(rmse, 4)))
        if rmse < threshold:
          fitted = i
          break
    out[f"lr {lr:g}"] = dict(steps_to_fit=fitted, rmse_by_step=curve)
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir", default="out/demo/data")
  p.add_argument("--out", default="benchmarks/results/ladder.json")
  p.add_argument("--workdir", default="out/ladder/state", help="where the privileged-state policy trains")
  p.add_argument("--policies", nargs="*", default=[], help="trained and evaluated policy workdirs (rung d)")
  p.add_argument("--skip_state", action="store_true")
  args = p.parse_args(argv)
  from benchmarks import report  # pylint: disable=g-import-not-at-top
  results = dict(replay=replay_rung(args.data_dir))
  if not args.skip_state:
    results["privileged_state"] = state_rung(args.data_dir, args.workdir)
  results["overfit"] = overfit_rung(args.data_dir)
  results["offline"] = {}
  for w in args.policies:
    path = os.path.join(w, "eval", "report.json")
    if os.path.exists(path):
      results["offline"][w] = offline_of(json.load(open(path))["evaluations"][-1])
  report.write(args.out, "ladder", dict(data_dir=args.data_dir), results, {})
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
