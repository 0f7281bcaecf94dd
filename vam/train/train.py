"""The training loop: datasets on disk -> a sharded, checkpointed, resumable model (a policy, the video
autoencoder or the video model: `config.model.name`, vam/models/registry.py).

    python -m vam.train --config experiments/quickstart.py --workdir W [--config.key=value ...]

Read top to bottom: inputs, the model and its pure train step (abstract init -> shardings -> jitted
init; the step compiled ahead of time, so its FLOPs and memory are known before step 1), then
`train()`: mesh, checkpoints (resume from the newest one, after checking it fits this config), and
the loop with metrics, a NaN/Inf guard and periodic asynchronous checkpoints. Workdir layout:

    W/config.json        the resolved config of the latest start
    W/metrics.jsonl      one row per log step (step, losses, lr, grad norm, step time, examples/s, MFU)
    W/tensorboard/       the same scalars as TensorBoard events
    W/checkpoints/<step> the items of vam/checkpoints.py
"""

import contextlib
import dataclasses
import json
import os
import time
from typing import Any, Callable

import grain
import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from vam import checkpoints
from vam import config as config_lib
from vam import embodiment as embodiment_lib
from vam import log as log_lib
from vam import mapping as mapping_lib
from vam.input import pipeline, windows
from vam.models import layers, partitioning, registry
from vam.train import metrics as metrics_lib
from vam.train import lifecycle, optim, sharding


logging = log_lib.get("vam.train")


class NonFiniteLossError(FloatingPointError):
  pass


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------
def make_inputs(config, latents: str | None = None):
  """The action space, window spec and the opened (validated) datasets of `config.data`; `latents`: the
  autoencoder fingerprint whose precomputed latents the windows carry."""
  d = config.data
  space = embodiment_lib.ActionSpace(tuple(d.embodiments))
  spec = windows.WindowSpec(context_frames=d.context_frames, future_frames=d.future_frames,
                            action_horizon=d.action_horizon, proprio_dim=d.proprio_dim,
                            temporal_factor=registry.temporal_factor(config), pad=d.get("pad", "repeat"),
                            frame_stride=windows.frame_stride(d))
  entries = pipeline.entries_from_config(config.data_dir, d)
  loader = pipeline.InputPipeline(entries, spec, space, split=d.split, camera=d.camera, norm_mode=d.norm_mode,
                                  cache_mb=d.cache_mb, latents=latents,
                                  mapping=mapping_lib.Mapping.from_config(d.get("mapping")),
                                  only_embodiments=tuple(d.get("only_embodiments", ())),
                                  max_episodes=d.get("max_episodes", 0), balance=d.get("balance", "task"),
                                  norm_per_step=d.get("norm_per_step", False),
                                  max_restarts=d.get("max_restarts", -1), proprio_eef=d.get("proprio_eef", False),
                                  task_weights=d.get("task_weights"), demos_per_task=d.get("demos_per_task", 0),
                                  skip_bad=d.get("skip_bad_episodes", False))
  if loader.without_privileged and (config.model.get("privileged_aux", 0) > 0 or config.model.name == "state_policy"):
    raise ValueError(f"config.model needs the simulator's privileged state (privileged_aux="
                     f"{config.model.get('privileged_aux', 0)}, model {config.model.name!r}), which "
                     f"{loader.without_privileged} lack (real data): set config.model.privileged_aux=0 or drop them "
                     "from config.data.mixture")
  if loader.video_only and config.model.name not in registry.VIDEO_MODELS:
    raise ValueError(f"config.data.mixture samples {loader.video_only}, which have no actions (video-only): "
                     f"model {config.model.name!r} cannot learn from them; give them weight 0 or train a video "
                     f"model ({list(registry.VIDEO_MODELS)})")
  return space, loader.spec, loader


def make_assets(config, space, loader, example: dict, pretrained: "Pretrained") -> dict:
  """What a checkpoint needs besides arrays: enough to rebuild the model and its (de)normalisation."""
  return dict(format=checkpoints.FORMAT, config=json.loads(config.to_json_best_effort()),
              normalization=loader.normalizer.to_dict(), statistics=loader.stats, action_space=space.layout(),
              image_size=int(example["images"].shape[1]),
              datasets={e.name: e.path for e in loader.entries},
              autoencoder_fingerprint=pretrained.autoencoder_fingerprint, pretrained=pretrained.sources)


# ---------------------------------------------------------------------------------------------------------
# Pretrained models a run starts from: the frozen autoencoder of a video model, a model to fine-tune
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Pretrained:
  params: dict  # {prefix in the model's params ('' = root): EMA params of a finished checkpoint}
  sources: dict  # {prefix: "workdir@step"} (recorded in the assets)
  autoencoder_fingerprint: str | None  # hash of the autoencoder params the model will hold


FINETUNE_KEEPS = ("dit.lora_rank", "dit.lora_alpha", "dit.remat", "sample_steps")  # taken from this config


def resolve_pretrained(config) -> Pretrained:
  """Loads the checkpoints `config` starts from and completes `config.model` from them (in place):

  - `config.init_from` (a workdir, optionally `config.init_from_step`): every parameter of that model is
    loaded; its `model` config is adopted except FINETUNE_KEEPS (e.g. the LoRA rank of a fine-tune).
  - otherwise a video model loads its frozen autoencoder from `config.model.autoencoder_workdir` and adopts
    that run's `model.autoencoder` sizes, and a video-action model loads its frozen video model from
    `config.model.video_workdir`, adopting that run's model (`model.video`), its H_o / H_f and embodiments."""
  params, sources, fp = {}, {}, None
  init_from = config.get("init_from", "")
  if init_from:
    p, assets, step = checkpoints.restore_params(init_from, config.get("init_from_step") or None)
    saved = ml_collections.ConfigDict(assets["config"]["model"])
    if saved.name != config.model.name:
      raise ValueError(f"config.init_from={init_from!r} holds a {saved.name!r} model, this config trains "
                       f"{config.model.name!r}")
    with config.unlocked():
      for key in FINETUNE_KEEPS:
        section, _, leaf = key.rpartition(".")
        if section and (section not in config.model or section not in saved):
          continue  # e.g. `dit.*` for a model without a DiT of its own
        node_from, node_to = (config.model[section], saved[section]) if section else (config.model, saved)
        if leaf in node_from:
          with node_to.ignore_type():  # e.g. remat: a bool in older runs, a policy name now
            node_to[leaf] = node_from[leaf]
      config.model = saved
    _adopt_data_shape(config, assets["config"]["data"], init_from)
    params[""], sources[""] = p, f"{os.path.abspath(init_from)}@{step}"
    # The frozen autoencoder: a video model's own, or a VAM's inside its video model (stored latents are
    # keyed by its fingerprint).
    autoencoder = p.get("autoencoder", p.get("video", {}).get("autoencoder") if isinstance(p.get("video"), dict)
                        else None)
    if autoencoder is not None:
      fp = checkpoints.fingerprint(autoencoder)
  elif config.model.name == "vam":
    p, saved, source = _frozen_part(config, "video_workdir", "video_step", "video_dit",
                                    "experiments/video_pretrain.py")
    with config.unlocked():
      config.model.video = saved["model"]
    _adopt_data_shape(config, saved["data"], config.model.video_workdir)
    params["video"], sources["video"] = p, source
    fp = checkpoints.fingerprint(p["autoencoder"])
  elif config.model.name == "video_dit":
    p, saved, source = _frozen_part(config, "autoencoder_workdir", "autoencoder_step", "autoencoder",
                                    "experiments/autoencoder.py")
    if dict(config.model.autoencoder) != saved["model"]["autoencoder"]:
      logging.info("config.model.autoencoder set from %s: %s", source, saved["model"]["autoencoder"])
      with config.unlocked():
        config.model.autoencoder = saved["model"]["autoencoder"]
    params["autoencoder"], sources["autoencoder"] = p, source
    fp = checkpoints.fingerprint(p)
  return Pretrained(params, sources, fp)


def _frozen_part(config, workdir_key: str, step_key: str, expected: str, trained_by: str):
  """EMA params, saved config and "workdir@step" of the finished run `config.model.<workdir_key>` that a
  model holds frozen (checked to hold an `expected` model)."""
  workdir = config.model.get(workdir_key, "")
  if not workdir:
    raise ValueError(f"config.model.{workdir_key} is empty: a {config.model.name!r} model needs a trained "
                     f"{expected!r} model (python -m vam.train --config {trained_by} --workdir W)")
  p, assets, step = checkpoints.restore_params(workdir, config.model.get(step_key) or None)
  saved = assets["config"]
  if saved["model"].get("name") != expected:
    raise ValueError(f"config.model.{workdir_key}={workdir!r} holds a {saved['model'].get('name')!r} model, "
                     f"not {expected!r}")
  return p, saved, f"{os.path.abspath(workdir)}@{step}"


# Fixed by a pretrained model: its frames (H_o, H_f) and their spacing in time, and its embodiment ids.
DATA_SHAPE_KEYS = ("context_frames", "future_frames", "frame_stride", "embodiments")


def _adopt_data_shape(config, saved_data: dict, source: str) -> None:
  """A pretrained model fixes its frames (H_o, H_f, their stride) and embodiment ids: take them from its run's
  config."""
  with config.unlocked():
    for key in DATA_SHAPE_KEYS:
      if key in saved_data and config.data.get(key) != saved_data[key]:
        logging.info("config.data.%s set to %s from %s", key, saved_data[key], source)
        config.data[key] = saved_data[key]


def _merge(target, source, where: str):
  """`source` leaves placed into `target` (same paths and shapes; target's sharding); others stay."""
  if isinstance(source, dict):
    if not isinstance(target, dict):
      raise ValueError(f"pretrained parameter {where} is a group, the model's is an array")
    keys = {str(k): k for k in target}
    out = dict(target)
    for k, v in source.items():
      if str(k) not in keys:
        raise ValueError(f"pretrained parameter {where}/{k} has no counterpart in the model")
      out[keys[str(k)]] = _merge(target[keys[str(k)]], v, f"{where}/{k}")
    return out
  if tuple(target.shape) != tuple(source.shape):
    raise ValueError(f"pretrained parameter {where}: shape {tuple(source.shape)}, the model's is "
                     f"{tuple(target.shape)}")
  return jax.device_put(jnp.asarray(source, target.dtype), target.sharding)


def apply_pretrained(state, ema, pretrained: Pretrained):
  params = state["params"]
  for prefix, p in pretrained.params.items():
    if prefix:
      params = dict(params, **{prefix: _merge(params[prefix], p, prefix)})
    else:
      params = _merge(params, p, "")
  ema = jax.tree.map(lambda e, p: jax.device_put(p, e.sharding), ema, params)
  return dict(state, params=params), ema


def calibrate_latents(config, prog, state, ema, loader, host_batch: int, batches: int = 4):
  """A fresh video model's per-channel latent mean/std, measured on `batches` global training batches
  (identical on every host) and frozen into its params."""
  stats = jax.jit(lambda params, batch: prog.binder(params).calibrate(batch))
  it = iter(loader.dataset(host_batch, seed=config.seed + 1, prefetch_buffer=0))
  means, sqs, residual_sqs = [], [], []
  for _ in range(batches):
    host = next(it)
    batch = pipeline.to_global({k: host[k] for k in prog.input_keys}, prog.data_sharding)
    mean, std, residual = stats(state["params"], batch)
    means.append(mean)
    sqs.append(jnp.square(std) + jnp.square(mean))
    residual_sqs.append(jnp.square(residual))
  mean = jnp.mean(jnp.stack(means), axis=0)
  std = jnp.sqrt(jnp.maximum(jnp.mean(jnp.stack(sqs), axis=0) - jnp.square(mean), 1e-6))
  residual = jnp.sqrt(jnp.mean(jnp.stack(residual_sqs), axis=0))
  fmt = lambda x: "[" + ", ".join(f"{v:.3f}" for v in np.asarray(x)) + "]"
  logging.info("latent mean %s, std %s, residual rms %s (per channel, %d batches)", fmt(mean), fmt(std),
               fmt(residual), batches)
  values = dict(latent_mean=mean, latent_std=std, residual_std=residual)
  place = lambda tree: dict(tree, **{k: jax.device_put(v, tree[k].sharding) for k, v in values.items()})
  return dict(state, params=place(state["params"])), place(ema)


# Keys whose value must be an integer >= 1 / >= 0, and floats that must lie in a range: checked before any
# data or device work, so a wrong value is one error naming the key, not a failure deep inside JAX.
AT_LEAST_ONE = ("total_steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "grad_accum_steps",
                "data.context_frames", "data.action_horizon", "data.frame_stride", "data.proprio_dim")
AT_LEAST_ZERO = ("seed", "keep_every", "data.future_frames", "data.workers", "data.prefetch", "data.demos_per_task",
                 "data.max_episodes", "data.cache_mb", "optimizer.warmup_steps")
IN_RANGE = {"optimizer.lr": (0.0, None), "optimizer.ema_decay": (0.0, 1.0), "optimizer.b1": (0.0, 1.0),
            "optimizer.b2": (0.0, 1.0), "optimizer.weight_decay": (0.0, None), "optimizer.grad_clip": (0.0, None),
            "optimizer.final_lr_fraction": (0.0, 1.0)}


def validate(config) -> None:
  """Range checks of the training config's numbers (types are checked when overrides are parsed)."""
  def get(dotted):
    node = config
    for part in dotted.split("."):
      if part not in node:
        return None
      node = node[part]
    return node

  for keys, low in ((AT_LEAST_ONE, 1), (AT_LEAST_ZERO, 0)):
    for key in keys:
      value = get(key)
      if value is None:
        continue
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise config_lib.ConfigError(f"config.{key}={value!r} must be an integer >= {low}")
  for key, (low, high) in IN_RANGE.items():
    value = get(key)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < low or (
        high is not None and value > high) or (key == "optimizer.lr" and value <= 0):
      bounds = f"in [{low}, {high}]" if high is not None else (f"> {low}" if key == "optimizer.lr" else f">= {low}")
      raise config_lib.ConfigError(f"config.{key}={value!r} must be a finite number {bounds}")


def check_batch_size(config, mesh) -> int:
  """Per-host batch size; the global one must split evenly over hosts and over the data axes (per micro-batch
  with gradient accumulation)."""
  data_parallel = int(np.prod([mesh.shape[a] for a in sharding.DATA_AXES if a in mesh.shape]))
  accum = config.get("grad_accum_steps", 1)
  if accum < 1:
    raise ValueError(f"config.grad_accum_steps={accum} must be >= 1")
  for n, what in ((jax.process_count(), "processes"), (data_parallel * accum, "devices on the data axes "
                                                       f"x {accum} micro-batches (config.grad_accum_steps)")):
    if config.batch_size % n:
      raise ValueError(f"config.batch_size={config.batch_size} is not divisible by the {n} {what} "
                       f"(mesh {dict(mesh.shape)})")
  return config.batch_size // jax.process_count()


# ---------------------------------------------------------------------------------------------------------
# Model and train state: {step, params, opt_state, rng} + EMA params, all plain pytrees of arrays
# ---------------------------------------------------------------------------------------------------------
def init_fn(make_model, tx):
  def init(rng):
    k_model, k_train = jax.random.split(rng)
    params = nnx.state(make_model(rngs=nnx.Rngs(k_model)), nnx.Param).to_pure_dict()
    state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=k_train)
    return state, jax.tree.map(jnp.copy, params)
  return init


def state_shardings(abstract_state, abstract_ema, mesh):
  """Params and optimizer moments by the partitioning rules; step and rng replicated."""
  replicated = NamedSharding(mesh, P())
  state = dict(step=replicated, rng=replicated, params=sharding.param_shardings(abstract_state["params"], mesh),
               opt_state=sharding.param_shardings(abstract_state["opt_state"], mesh))
  return state, sharding.param_shardings(abstract_ema, mesh)


def make_train_step(bind, tx, lr_schedule, ema_decay: float, mask=None, accum_steps: int = 1):
  """Pure step: (state, ema, batch) -> (state, ema, metrics). The rng of a step is fold_in(rng, step).
  `mask` (pytree of bools like the params): parameters outside it get no gradient (frozen).
  `accum_steps` > 1: the batch is split into that many micro-batches, run one after another (lax.scan) with
  their gradients averaged before one optimizer update -- the memory of a micro-batch, the update of the
  whole batch. Micro-batch j holds rows j, j + accum_steps, ..., so every device keeps its own rows.
  A loss that is a masked mean reports its denominator as the metric `valid_entries`; micro-batches are then
  weighted by it (a masked mean over the whole batch is the valid-count-weighted mean of the micro-batches'),
  so micro-batches with more valid entries count more, exactly as in one big batch. Losses without it
  (plain means over equal-sized micro-batches) are weighted equally, which is exact for them too."""

  def loss_fn(params, batch, rng):
    if mask is not None:  # frozen parameters: constants to autodiff, so their gradients are never computed
      params = jax.tree.map(lambda p, m: p if m else jax.lax.stop_gradient(p), params, mask)
    return bind(params).loss(batch, rng)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulated(params, batch, rng):
    split = lambda x: jnp.swapaxes(x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:]), 0, 1)
    micro = jax.tree.map(lambda x: partitioning.constrain(split(x), (None, "batch")), batch)

    def body(carry, xs):
      total, weights = carry
      index, mb = xs
      (loss, aux), grads = grad_fn(params, mb, jax.random.fold_in(rng, index))
      w = aux.get("valid_entries", jnp.float32(1.0)).astype(jnp.float32)
      scaled = jax.tree.map(lambda x: w * x, ((loss, aux), grads))
      return (jax.tree.map(jnp.add, total, scaled), weights + w), None

    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32),
                         jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng))
    (total, weights), _ = jax.lax.scan(body, (zeros, jnp.float32(0.0)), (jnp.arange(accum_steps), micro))
    (loss, aux), grads = jax.tree.map(lambda x: x / jnp.maximum(weights, 1e-12), total)
    if "valid_entries" in aux:
      aux = dict(aux, valid_entries=weights)  # the whole batch's count
    return (loss, aux), grads

  def train_step(state, ema, batch):
    step = state["step"]
    rng = jax.random.fold_in(state["rng"], step)
    if accum_steps == 1:
      (loss, aux), grads = grad_fn(state["params"], batch, rng)
    else:
      (loss, aux), grads = accumulated(state["params"], batch, rng)
    with jax.named_scope("optimizer"):  # (benchmarks/profile.py attributes time and FLOPs by these scopes)
      updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
      params = optax.apply_updates(state["params"], updates)
      ema = optim.ema_update(ema, params, step, ema_decay, mask)
    metrics = dict(aux, loss=loss, grad_norm=optax.global_norm(grads), param_norm=optax.global_norm(params),
                   lr=lr_schedule(step))
    return dict(step=step + 1, params=params, opt_state=opt_state, rng=state["rng"]), ema, metrics

  return train_step


@dataclasses.dataclass
class Program:
  """The jitted pieces of one config on one mesh (shared by the loop and the benchmarks)."""
  init: Callable  # rng -> (state, ema), placed on their shardings
  step: Any  # compiled (state, ema, batch) -> (state, ema, metrics); state and ema are donated
  step_fn: Callable  # the same step as a Python function (what was jitted; benchmarks/profile.py traces it)
  abstract_state: Any
  abstract_ema: Any
  state_shardings: Any
  ema_shardings: Any
  data_sharding: NamedSharding
  abstract_batch: dict
  flops_per_step: float  # all devices together, from XLA's cost analysis
  num_params: int
  num_trainable: int
  memory: str  # XLA's memory analysis of the step, per device
  image_size: int
  input_keys: tuple[str, ...]
  binder: registry.Binder  # pure params -> the model (host-side helpers reuse it)


def compiler_options(config) -> dict | None:
  """The XLA options `config.compiler_options` (DebugOptions fields, e.g. xla_cpu_experimental_ynn_fusion_type)
  for a compile on this backend: on CPU only (they name CPU options), None when there are none."""
  options = dict(config.get("compiler_options", None) or {})
  if not options or jax.default_backend() != "cpu":
    return None
  return {k: str(v) for k, v in options.items()}


def one_off_compiler_options() -> dict | None:
  """XLA options for programs that run once per process (the parameter init): on CPU, XLA's lowest backend
  optimisation level halves their compile (the tiny baseline's init: ~10 -> ~5 s; most of it is the random
  initialisers), and their run time does not matter. None elsewhere (not measured there)."""
  return {"xla_backend_optimization_level": "0"} if jax.default_backend() == "cpu" else None


def build_program(config, space, image_size: int, example_window: dict, mesh) -> Program:
  make_model = registry.factory(config, space.dim, len(space.embodiments), image_size)
  binder = registry.Binder(make_model)
  mask = optim.trainable_mask(nnx.to_pure_dict(binder.abstract_params), registry.frozen_pattern(config),
                              config.optimizer.get("trainable") or None)
  everything_trains = all(jax.tree.leaves(mask))
  tx, lr_schedule = optim.make(config.optimizer, config.total_steps, None if everything_trains else mask)
  init = init_fn(make_model, tx)
  abstract_state, abstract_ema = jax.eval_shape(init, jax.random.PRNGKey(0))
  state_sh, ema_sh = state_shardings(abstract_state, abstract_ema, mesh)
  data_sharding = sharding.batch_sharding(mesh)
  input_keys = registry.input_keys(config)
  missing = [k for k in input_keys if k not in example_window]
  if missing:
    raise ValueError(f"the data windows lack {missing}, which config.model.name={config.model.name!r} reads")
  abstract_batch = {k: jax.ShapeDtypeStruct((config.batch_size,) + np.shape(v), np.asarray(v).dtype,
                                            sharding=data_sharding)
                    for k, v in example_window.items() if k in input_keys}
  step_fn = make_train_step(binder, tx, lr_schedule, config.optimizer.ema_decay,
                            None if everything_trains else mask, config.get("grad_accum_steps", 1))
  step = jax.jit(step_fn, in_shardings=(state_sh, ema_sh, data_sharding), out_shardings=(state_sh, ema_sh, None),
                 donate_argnums=(0, 1))
  with jax.set_mesh(mesh):  # the mesh that activation constraints inside the model refer to
    compiled = step.lower(abstract_state, abstract_ema, abstract_batch).compile(compiler_options(config))
  return Program(init=jax.jit(init, out_shardings=(state_sh, ema_sh), compiler_options=one_off_compiler_options()),
                 step=compiled, step_fn=step_fn,
                 abstract_state=abstract_state, abstract_ema=abstract_ema, state_shardings=state_sh,
                 ema_shardings=ema_sh, data_sharding=data_sharding, abstract_batch=abstract_batch,
                 # a scanned loop's body is costed once: scale by the micro-batches it runs (the optimizer
                 # update, outside the loop, is then over-counted: negligible next to the forward/backward)
                 flops_per_step=metrics_lib.compiled_flops(compiled) * config.get("grad_accum_steps", 1),
                 num_params=sum(x.size for x in jax.tree.leaves(abstract_ema)),
                 num_trainable=sum(x.size for x, m in zip(jax.tree.leaves(abstract_ema), jax.tree.leaves(mask)) if m),
                 memory=metrics_lib.describe_memory(compiled), image_size=image_size, input_keys=input_keys,
                 binder=binder)


def _describe_provenance(provenance, entries) -> list[str]:
  return [f"{entries[d].name} episode {e} step {t}" for d, e, t in np.asarray(provenance).tolist()]


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------
def train(config, workdir: str, stop_after: int | None = None) -> dict:
  """Trains (or resumes) `config` in `workdir`; returns the last logged metrics.

  `stop_after`: stop (with a checkpoint) after this many steps in this run, e.g. to fit a job time limit;
  the next run resumes. The schedule still runs to `config.total_steps`.
  """
  t_start = time.perf_counter()
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0

  # ---- Pretrained models and inputs (validated before anything is written) ----
  validate(config)
  pretrained = resolve_pretrained(config)
  use_latents = config.data.get("use_latents", False)
  if use_latents and pretrained.autoencoder_fingerprint is None:
    raise ValueError("config.data.use_latents=True needs a model with an autoencoder (config.model.name="
                     f"{config.model.name!r})")
  space, spec, loader = make_inputs(config, pretrained.autoencoder_fingerprint if use_latents else None)
  example = loader.sources[0][0]  # one window: the batch's shapes and the image size
  assets = make_assets(config, space, loader, example, pretrained)
  mesh = sharding.make_mesh(dict(config.mesh))
  host_batch = check_batch_size(config, mesh)
  logging.info("mesh %s over %d process(es); global batch %d (%d per host, %d micro-batch(es)); compute %s; "
               "datasets %s", dict(mesh.shape), jax.process_count(), config.batch_size, host_batch,
               config.get("grad_accum_steps", 1), config.get("compute_dtype", "float32"),
               {e.name: (e.weight, len(s)) for e, s in zip(loader.entries, loader.sources)})

  # ---- One writer per workdir (before anything is written); SIGTERM stops at a step boundary, saved ----
  lock = lifecycle.WorkdirLock(workdir).acquire() if is_main else None
  stop = lifecycle.StopRequest(enabled=jax.process_count() == 1)
  try:
    # ---- Model and train step: abstract init -> shardings -> jitted init; the step compiled ahead of time ----
    prog = build_program(config, space, assets["image_size"], example, mesh)
    dtype = config.get("compute_dtype", "float32")
    peak = metrics_lib.measure_peak_flops(dtype=None if dtype == "float32" else layers.COMPUTE_DTYPES[dtype])
    if config.model.get("dit", {}).get("scan_layers", False):
      logging.warning("model.dit.scan_layers: XLA's cost analysis counts the layer loop once, so the logged FLOPs "
                      "and MFU are too low by about the depth (benchmarks.video_dit measures unscanned)")
    logging.info("params %.2fM (%.2fM trainable); train step %.3g GFLOP; peak %.3g GFLOP/s (measured matmul); memory per device: %s",
                 prog.num_params / 1e6, prog.num_trainable / 1e6, prog.flops_per_step / 1e9, peak / 1e9, prog.memory)

    return _run(config, workdir, stop_after, prog, loader, assets, pretrained, host_batch, peak, stop, t_start)
  finally:
    stop.close()
    if lock is not None:
      lock.release()


def _restore_newest_intact(mngr, workdir: str, items_for, assets: dict):
  """(step, restored items) of the newest checkpoint that reads back whole, or (None, None) when there is none.

  A damaged step (a truncated or missing file, unreadable assets, values that fail their checksums) is never
  deleted or overwritten: it is moved aside to `W/checkpoints_damaged/<step>` with a warning naming what
  failed, and the step before it is tried. A checkpoint written by an incompatible config is an error, not
  damage."""
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      saved = checkpoints.read_assets(mngr, step)
    except Exception as e:  # pylint: disable=broad-except  (orbax and JSON raise many types for damaged files)
      _set_aside(mngr, workdir, step, e)
      continue
    checkpoints.check_compatible(saved, assets, f"{mngr.directory}/{step}")
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(**items_for(step)))
    except Exception as e:  # pylint: disable=broad-except
      _set_aside(mngr, workdir, step, e)
      continue
    try:  # a flipped bit reads back without an error
      checkpoints.verify({item: restored[item] for item in (checkpoints.STATE, checkpoints.EMA)},
                         saved.get("checksums"), f"{mngr.directory}/{step}")
    except checkpoints.DamagedCheckpointError as e:
      _set_aside(mngr, workdir, step, e)
      continue
    return step, restored
  return None, None


def _set_aside(mngr, workdir: str, step: int, error: Exception) -> None:
  where = f"{mngr.directory}/{step}"
  why = checkpoints.describe_damage(error)
  if jax.process_count() > 1:  # moving a folder other processes may be reading: leave it to the user
    raise checkpoints.CheckpointError(f"checkpoint {where} is damaged ({why}); move it out of "
                                      f"{mngr.directory} and restart to resume from the step before it")
  aside = os.path.join(workdir, "checkpoints_damaged")
  os.makedirs(aside, exist_ok=True)
  target = os.path.join(aside, str(step))
  n = 1
  while os.path.exists(target):
    target, n = os.path.join(aside, f"{step}.{n}"), n + 1
  os.rename(where, target)
  mngr.reload()
  logging.warning("checkpoint %s is damaged (%s): moved to %s untouched; resuming from the step before it",
                  where, why, target)


@contextlib.contextmanager
def _save_failures(mngr, step: int):
  """A checkpoint save that fails (a full disk, a lost mount) stops training with one message: the step that
  failed and the newest finished one, which orbax never touched (a step is only renamed into place once
  every item is written)."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except  (orbax wraps the OSError of its writer threads)
    error = e
    while error is not None and not isinstance(error, OSError):
      error = error.__cause__ or error.__context__
    why = f"{os.strerror(error.errno)} (errno {error.errno})" if isinstance(error, OSError) and error.errno else (
        checkpoints.describe_damage(e))
    try:
      intact = [s for s in mngr.all_steps() if s != step]
    except Exception:  # pylint: disable=broad-except
      intact = []
    raise checkpoints.CheckpointError(
        f"a checkpoint save in {mngr.directory} failed (at step {step}): {why}; "
        + (f"the newest finished checkpoint, step {max(intact)}, is intact" if intact else "no earlier checkpoint")
        + "; fix the cause and run the same command to resume") from None


def _run(config, workdir, stop_after, prog, loader, assets, pretrained, host_batch, peak, stop, t_start) -> dict:
  """The loop of `train` (its workdir held): resume, step, log, checkpoint."""
  is_main = jax.process_index() == 0
  state_sh, ema_sh = prog.state_shardings, prog.ema_shardings
  data_sharding = prog.data_sharding

  # ---- Checkpoints: resume from the newest intact one, if it fits this config ----
  mngr = checkpoints.manager(workdir, max_to_keep=config.keep_checkpoints, keep_period=config.keep_every or None,
                             async_save=config.checkpoint_async)
  data_iter = iter(loader.dataset(host_batch, seed=config.seed, workers=config.data.workers,
                                  prefetch_buffer=config.data.prefetch))
  same_hosts = {}

  def items_for(step):
    items = {  # arrays restored onto this run's mesh, whatever mesh and process count wrote them
        checkpoints.STATE: ocp.args.StandardRestore(checkpoints.abstract_like(prog.abstract_state, state_sh)),
        checkpoints.EMA: ocp.args.StandardRestore(checkpoints.abstract_like(prog.abstract_ema, ema_sh))}
    same_hosts[step] = checkpoints.has_data_state(mngr, step, jax.process_index(), jax.process_count())
    if same_hosts[step]:
      items[checkpoints.DATA] = grain.checkpoint.CheckpointRestore(data_iter)
    return items

  latest, restored = _restore_newest_intact(mngr, workdir, items_for, assets)
  if latest is not None:
    state, ema = restored[checkpoints.STATE], restored[checkpoints.EMA]
    if not same_hosts[latest]:  # each host's position is only meaningful for the sharding that wrote it
      logging.warning("checkpoint %d was written by a different number of processes: the data iterators start "
                      "afresh for %d process(es) (seed %d + step)", latest, jax.process_count(), config.seed)
      data_iter = iter(loader.dataset(host_batch, seed=config.seed + latest, workers=config.data.workers,
                                      prefetch_buffer=config.data.prefetch))
    logging.info("resumed from %s/%d", mngr.directory, latest)
  else:
    state, ema = prog.init(jax.random.PRNGKey(config.seed))
    if pretrained.params:
      state, ema = apply_pretrained(state, ema, pretrained)
      logging.info("initialised from %s", pretrained.sources)
    if config.model.name == "video_dit" and "" not in pretrained.params:
      state, ema = calibrate_latents(config, prog, state, ema, loader, host_batch)
    # Training donates the state and EMA buffers: give the EMA its own copies of any leaf it shares.
    ema = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=ema_sh)(ema)
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    config_lib.save_json(config, os.path.join(workdir, "config.json"))

  # ---- Loop ----
  writer = metrics_lib.Writer(workdir, enabled=is_main)
  first_step = int(jax.device_get(state["step"]))
  pending = None  # (step, metrics, provenance) of the last dispatched step: checked one step late, so the
  #                 host never waits for the device except at log and checkpoint steps.
  window, timed, data_time, t_mark = [], 0, 0.0, None
  skipped = 0  # windows of unreadable episodes replaced since the last log (config.data.skip_bad_episodes)
  last = {}

  def check(pending):
    step, m, provenance = pending
    loss = float(m["loss"])
    if not np.isfinite(loss):
      where = _describe_provenance(provenance, loader.entries)
      report = os.path.join(workdir, f"nonfinite_step{step}.json")
      if is_main:
        with open(report, "w") as f:
          json.dump(dict(step=step, loss=loss, batch=where), f, indent=1)
      raise NonFiniteLossError(f"non-finite loss {loss} at step {step}; the batch came from: "
                               f"{'; '.join(where[:4])}{' ...' if len(where) > 4 else ''} (all {len(where)} in "
                               f"{report}); no checkpoint of this step was written")

  end = config.total_steps if stop_after is None else min(config.total_steps, first_step + stop_after)
  for step in range(first_step, end):
    t0 = time.perf_counter()
    host = next(data_iter)
    data_time += time.perf_counter() - t0
    skipped += int(np.sum(host["skipped"])) if "skipped" in host else 0
    batch = pipeline.to_global({k: host[k] for k in prog.input_keys}, data_sharding)
    state, ema, m = prog.step(state, ema, batch)
    if pending is not None:
      check(pending)
    pending = (step, m, host["provenance"])
    window.append(m)
    if t_mark is None:  # the first step of a run pays one-off costs: time the steady state from its end
      jax.block_until_ready(m)
      t_mark, timed, data_time = time.perf_counter(), 0, 0.0
    else:
      timed += 1

    done = step + 1
    if done % config.log_every == 0 or done == end:
      check(pending)
      last = {k: float(np.mean([float(x[k]) for x in window])) for k in window[0]}
      timing = ""
      if timed:
        elapsed = time.perf_counter() - t_mark
        step_time = elapsed / timed
        last.update(step_time=step_time, steps_per_s=1.0 / step_time, examples_per_s=config.batch_size / step_time,
                    mfu=prog.flops_per_step / step_time / peak, data_wait_fraction=data_time / elapsed)
        timing = (f" | {step_time:.3f} s/step, {last['examples_per_s']:.0f} ex/s, MFU {100 * last['mfu']:.1f}%, "
                  f"data wait {100 * last['data_wait_fraction']:.0f}%")
      if config.data.get("skip_bad_episodes", False):
        last.update(skipped_windows=skipped, unreadable_episodes=loader.unreadable)
        if skipped or loader.unreadable:
          timing += f" | skipped: {skipped} windows, {loader.unreadable} unreadable episodes"
      writer.write(done, last)
      logging.info("step %d/%d loss %.4f grad_norm %.3f lr %.2e%s", done, config.total_steps, last["loss"],
                   last["grad_norm"], last["lr"], timing)
      window, timed, data_time, t_mark, skipped = [], 0, 0.0, time.perf_counter(), 0

    preempted = stop.requested or mngr.reached_preemption(done)
    if done % config.checkpoint_every == 0 or done == end or preempted:
      check(pending)
      t_save = time.perf_counter()
      sums = checkpoints.checksums({checkpoints.STATE: state, checkpoints.EMA: ema})
      with _save_failures(mngr, done):
        mngr.save(done, args=ocp.args.Composite(**{
            checkpoints.STATE: ocp.args.StandardSave(state), checkpoints.EMA: ocp.args.StandardSave(ema),
            checkpoints.DATA: grain.checkpoint.CheckpointSave(data_iter),
            checkpoints.ASSETS: ocp.args.JsonSave(dict(assets, checksums=sums))}))
      t_mark += time.perf_counter() - t_save  # step timing excludes the (blocking part of the) save
      if preempted:
        logging.warning("%s: saved step %d and stopping; run the same command again to resume",
                        stop.signal_name or "preemption signal", done)
        break

  with _save_failures(mngr, int(jax.device_get(state["step"]))):
    mngr.wait_until_finished()  # an asynchronous save's failure surfaces here
  mngr.close()
  writer.close()
  logging.info("done in %.1f s", time.perf_counter() - t_start)
  return dict(last, step=int(jax.device_get(state["step"])), params=prog.num_params,
              flops_per_step=prog.flops_per_step, peak_flops=peak)
