"""The checkpoint contract (DESIGN.md), shared by the trainer (writes) and the eval harness (reads).

    W/checkpoints/<step>/
      state/        train state: {step, params, opt_state, rng}          (orbax StandardSave, sharded)
      ema_params/   EMA params, the inference weights                     (orbax StandardSave, sharded)
      data/         grain iterator state, one JSON per process            (grain CheckpointHandler)
      assets/       {format, config, normalization (the Normalizer's maps), statistics (the datasets'
                    normalisation statistics, relative-action ones included), action_space, image_size,
                    checksums: {"state/params/...": uint32, "ema_params/...": ...} (`checksums`)} (JSON)

Orbax writes each step into a temporary folder and renames it when every item is committed, so a
reader that lists steps through a manager never sees a half-written checkpoint. A truncated or missing file
fails to read; a flipped bit inside an array's data does not (tensorstore's chunks carry no checksum), so
every save records a checksum per array and every restore compares them (`verify`). This module must not
import `vam.train` (the eval harness restores params only).
"""

import copy
import hashlib
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

# v2: relative actions (joint-target deltas, vam/embodiment.py). Older checkpoints are refused: their action
# slots meant something else (absolute joint targets), so a policy restored from one would act wrongly.
FORMAT = "vam-checkpoint-v2"
OLD_FORMATS = {"vam-checkpoint-v1": "absolute joint-target actions; this vam executes relative actions: retrain it"}
STATE, EMA, DATA, ASSETS = "state", "ema_params", "data", "assets"
ITEMS = (STATE, EMA, DATA, ASSETS)
# Config groups that fix the parameter and batch shapes: a checkpoint only resumes under equal values.
SHAPE_KEYS = ("model", "data.context_frames", "data.future_frames", "data.action_horizon", "data.proprio_dim",
              "data.proprio_eef", "data.embodiments", "optimizer.name")
# ... except these, which change how the step runs, not what it holds (memory knobs may differ on resume).
RUNTIME_KEYS = ("model.dit.remat",)


class CheckpointError(ValueError):
  pass


class DamagedCheckpointError(CheckpointError):
  """A step whose files do not read back (truncated, missing, unreadable): skip it, never delete it."""


def describe_damage(error: Exception) -> str:
  """One line for a read failure (orbax/tensorstore messages run to pages)."""
  if isinstance(error, DamagedCheckpointError):  # "checkpoint W/s is damaged: why" -> "why"
    return str(error).split(" is damaged: ", 1)[-1]
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text[:300]}{' ...' if len(text) > 300 else ''}"


def _step_dir(mngr, step: int) -> str:
  return os.path.join(str(mngr.directory), str(step))


def _read(mngr, step: int, args):
  """`mngr.restore`, with a read failure turned into DamagedCheckpointError (or a note that retention deleted
  the step meanwhile)."""
  try:
    return mngr.restore(step, args=args)
  except Exception as e:  # pylint: disable=broad-except  (orbax, tensorstore and JSON raise many types)
    if not os.path.isdir(_step_dir(mngr, step)):
      raise CheckpointError(f"checkpoint {_step_dir(mngr, step)} was deleted while being read (checkpoint "
                            "retention of a running training?)") from None
    raise DamagedCheckpointError(f"checkpoint {_step_dir(mngr, step)} is damaged: {describe_damage(e)}") from None


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def _save_replicas_whole_in_one_process() -> None:
  """With one process, orbax's replica-parallel saving (each replica of a replicated array writes a slice of it)
  has no hosts to spread the writing over, and it costs a compiled slice per array shape and device (~8 s of
  compiles per checkpointed model on 8 CPU devices). One process saves each array from one replica, whole;
  several processes keep orbax's default (on CPU and TPU: replica-parallel)."""
  if jax.process_count() > 1:
    return
  default = ocp.type_handlers.get_type_handler(jax.Array)
  if getattr(default, "_use_replica_parallel", False):  # orbax's ArrayHandler keeps its options private
    handler = copy.copy(default)
    handler._use_replica_parallel = False  # pylint: disable=protected-access
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def manager(workdir: str, *, max_to_keep: int | None = None, keep_period: int | None = None,
            async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over `W/checkpoints` with the contract's items (grain state as its own handler)."""
  _save_replicas_whole_in_one_process()
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, keep_period=keep_period or None,
                                         enable_async_checkpointing=async_save, create=not read_only,
                                         read_only=read_only)
  handlers = {STATE: ocp.StandardCheckpointHandler(), EMA: ocp.StandardCheckpointHandler(),
              DATA: grain.checkpoint.CheckpointHandler(), ASSETS: ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(directory(workdir), options=options, item_handlers=handlers)


def read_assets(mngr: ocp.CheckpointManager, step: int) -> dict:
  """The assets item of `step`, checked for the format version."""
  path = os.path.join(_step_dir(mngr, step), ASSETS)
  if not os.path.isdir(path):
    raise DamagedCheckpointError(f"checkpoint {os.path.dirname(path)} has no {ASSETS!r} item (damaged, or not "
                                 "written by vam.train)")
  assets = _read(mngr, step, ocp.args.Composite(**{ASSETS: ocp.args.JsonRestore()}))[ASSETS]
  if not isinstance(assets, dict):
    raise DamagedCheckpointError(f"checkpoint {os.path.dirname(path)}: its {ASSETS!r} item is not a JSON object")
  if assets.get("format") != FORMAT:
    why = OLD_FORMATS.get(assets.get("format"), "")
    raise CheckpointError(f"checkpoint {os.path.dirname(path)}: format {assets.get('format')!r}"
                          f"{' (' + why + ')' if why else ''}, this version of vam reads {FORMAT!r}")
  return assets


def _get(config: dict, dotted: str):
  node = config
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      return "<missing>"
    node = node[part]
  return node


def _diff(a, b, prefix: str) -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}.{k}")
    return out
  return [] if a == b else [f"{prefix}: checkpoint has {a!r}, config has {b!r}"]


def check_compatible(saved: dict, current: dict, where: str) -> None:
  """Raises naming every shape-relevant config key or layout that differs between two assets dicts."""
  problems = []
  for key in SHAPE_KEYS:
    problems += _diff(_get(saved["config"], key), _get(current["config"], key), f"config.{key}")
  problems = [p for p in problems if not p.startswith(tuple(f"config.{k}:" for k in RUNTIME_KEYS))]
  if saved.get("action_space") != current.get("action_space"):
    problems.append("action_space: the unified action layout differs (embodiments or slot sizes)")
  if saved.get("autoencoder_fingerprint") != current.get("autoencoder_fingerprint"):
    problems.append(f"autoencoder: the run started with autoencoder {saved.get('autoencoder_fingerprint')}, "
                    f"config.model.autoencoder_workdir now holds {current.get('autoencoder_fingerprint')}")
  if problems:
    raise CheckpointError(f"the checkpoint in {where} was written by an incompatible config:\n  " +
                          "\n  ".join(problems[:20]) + "\nuse a new --workdir, or the config it was trained with.")


def has_data_state(mngr: ocp.CheckpointManager, step: int, process_index: int, process_count: int) -> bool:
  """Whether `step` holds a data-iterator state for this process (grain writes one file per process, named by
  the process count: a run on another number of hosts has none)."""
  path = os.path.join(str(mngr.directory), str(step), DATA, f"process_{process_index}-of-{process_count}.json")
  return os.path.exists(path)


def abstract_like(tree, shardings=None):
  """ShapeDtypeStructs (carrying the target shardings) for restoring `tree`'s structure onto devices."""
  if shardings is None:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)



def finished_steps(workdir: str) -> list[int]:
  """Steps of `workdir` whose every item is committed (orbax renames a step's temporary folder when it is
  complete, and the manager lists renamed steps only)."""
  if not os.path.isdir(directory(workdir)):
    raise CheckpointError(f"workdir {workdir!r} has no checkpoints ({directory(workdir)} does not exist); "
                          "train first with python -m vam.train")
  return sorted(manager(workdir, read_only=True).all_steps())


def step_and_assets(workdir: str, step: int | None = None) -> tuple[int, dict]:
  """`step` (default: the newest finished one) of `workdir`, checked to exist, and its assets."""
  steps = finished_steps(workdir)
  if not steps:
    raise CheckpointError(f"workdir {workdir!r} has no finished checkpoint in {directory(workdir)} (train it first "
                          "with python -m vam.train)")
  step = steps[-1] if step is None else int(step)
  if step not in steps:
    raise CheckpointError(f"workdir {workdir!r} has no finished checkpoint of step {step}; finished steps: {steps}")
  return step, read_assets(manager(workdir, read_only=True), step)


def restore_params(workdir: str, step: int | None = None, abstract=None) -> tuple[dict, dict, int]:
  """The one way to load a trained model's parameters: (EMA params, assets, step) of a finished checkpoint,
  whatever mesh or process count wrote it. Used by evaluation, fine-tuning (`init_from`), the frozen parts of
  a model (autoencoder, video model) and anything that serves a policy.

  `abstract`: ShapeDtypeStructs of the params to restore onto (shapes checked, their shardings used); default:
  the checkpoint's own shapes on the first device (the simulator's batch and a served policy run on one)."""
  step, assets = step_and_assets(workdir, step)
  mngr = manager(workdir, read_only=True)
  if not os.path.isdir(os.path.join(str(mngr.directory), str(step), EMA)):
    raise DamagedCheckpointError(f"checkpoint {mngr.directory}/{step} has no {EMA!r} item")
  if abstract is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            mngr.item_metadata(step)[EMA].tree)
  try:
    metadata = mngr.item_metadata(step)[EMA].tree
  except Exception as e:  # pylint: disable=broad-except
    raise DamagedCheckpointError(f"checkpoint {mngr.directory}/{step} is damaged: {describe_damage(e)}") from None
  if _shapes(metadata) != _shapes(abstract):
    raise CheckpointError(f"checkpoint {mngr.directory}/{step}: its params do not fit the model its config "
                          "describes (parameter names or shapes differ)")
  params = _read(mngr, step, ocp.args.Composite(**{EMA: ocp.args.StandardRestore(abstract)}))[EMA]
  saved = {leaf_name(path): np.dtype(m.dtype) for path, m in jax.tree_util.tree_flatten_with_path(metadata)[0]}
  recast = {leaf_name(path) for path, a in jax.tree_util.tree_flatten_with_path(abstract)[0]
            if saved.get(leaf_name(path)) != np.dtype(a.dtype)}
  verify({EMA: params}, assets.get("checksums"), f"{mngr.directory}/{step}", skip={f"{EMA}/{n}" for n in recast})
  return params, assets, step


def _shapes(tree) -> dict:
  """{"a/b/0": shape} of a params tree."""
  return {leaf_name(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@jax.jit
def _leaf_checksums(leaves: list) -> list:
  """Per array: sum over elements of (its bits as uint32) x (an odd weight of its index), mod 2^32. Any single
  flipped bit changes the sum (2^k times an odd number is never 0 mod 2^32), and so does moving a value. It
  runs where the arrays live, shard by shard plus one all-reduce: nothing is gathered to a host."""
  out = []
  for x in leaves:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
      x = x.astype(jnp.uint8)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    index = jnp.zeros(x.shape, jnp.uint32)
    for d in range(x.ndim):  # the flat index, built per dimension (a reshape would move sharded data)
      index = index * jnp.uint32(x.shape[d]) + jax.lax.broadcasted_iota(jnp.uint32, x.shape, d)
    weight = index * jnp.uint32(0x9E3779B1) * jnp.uint32(2) + jnp.uint32(1)
    out.append(jnp.sum(bits * weight, dtype=jnp.uint32))
  return out


def leaf_name(path) -> str:
  """"a/b/0" for a pytree path (orbax's metadata may spell integer keys and attribute names as strings)."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def checksums(tree) -> dict[str, int]:
  """{leaf name: checksum} of a pytree of (possibly sharded, multi-process) arrays; see `_leaf_checksums`.
  Every process must call it (a collective). One call for all items: compiling it costs ~1-3 s on a CPU
  (a reduction per array), paid once per run (and kept by the persistent compilation cache)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  sums = jax.device_get(_leaf_checksums([x for _, x in flat]))
  return {leaf_name(path): int(s) for (path, _), s in zip(flat, sums)}


def verify(tree, expected: dict | None, where: str, skip=frozenset()) -> None:
  """Raises DamagedCheckpointError if a restored array's checksum differs from the one saved with it.
  `tree`: {item: restored tree}; `expected`: the step's `checksums` asset ({"item/leaf": checksum}; None for a
  checkpoint written before checksums, which is not checked); `skip`: leaves restored as another dtype than
  saved (their bits differ by design)."""
  if not expected:
    return
  got = {k: v for k, v in checksums(tree).items() if k not in skip}
  unmatched = sorted(set(got) - set(expected))
  if unmatched:
    raise CheckpointError(f"checkpoint {where}: arrays {unmatched[:3]} have no saved checksum (a tree other "
                          "than the one saved was restored)")
  bad = [k for k in sorted(got) if got[k] != int(expected[k])]
  if bad:
    more = f" (and {len(bad) - 1} more arrays)" if len(bad) > 1 else ""
    raise DamagedCheckpointError(f"checkpoint {where} is damaged: the values of {bad[0]}{more} differ from the "
                                 "checksum saved with them (a flipped bit or a partly overwritten file)")


def fingerprint(params) -> str:
  """A short content hash of a params pytree (names, shapes and values)."""
  digest = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: jax.tree_util.keystr(kv[0])):
    arr = np.asarray(jax.device_get(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(str(arr.shape).encode() + str(arr.dtype).encode())
    digest.update(np.ascontiguousarray(arr).tobytes())
  return digest.hexdigest()[:12]
