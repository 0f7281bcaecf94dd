"""A restored checkpoint's policy behind a request interface: validation of one request, the per-connection
frame history, and one jitted batch-1 call of `vam.eval.agents.chunk_fn` (the function closed-loop evaluation
runs, so a served robot gets what evaluation measured).

    policy = ServedPolicy(restore.load(workdir, step, overrides), embodiment="arm6")
    session = Session()
    reply = policy.infer(session, policy.check(session, request))   # {"actions": (K, C) float32, ...}
"""

import dataclasses
import time

import jax
import numpy as np

from vam import embodiment as embodiment_lib
from vam.eval import agents
from vam.input import windows

KEYS_ALWAYS = ("type", "images", "state", "instruction", "reset", "embodiment", "rng")


class RequestError(ValueError):
  """A request the policy cannot answer; the text names the key and what was wrong."""


@dataclasses.dataclass
class Session:
  """One connection's memory: the frames the model reads next (oldest first) and its request count."""
  id: int = 0
  embodiment: str | None = None
  history: np.ndarray | None = None  # (L, H, W, 3) uint8, L = (H_o - 1) * frame_stride + 1
  requests: int = 0

  def reset(self):
    self.embodiment, self.history = None, None


@dataclasses.dataclass
class Checked:
  """A validated request, ready to run (nothing of the session has changed yet)."""
  embodiment: str
  history: np.ndarray
  obs: dict
  instruction: np.ndarray
  rng: np.ndarray | None


class ServedPolicy:
  """A checkpoint's policy compiled for one observation at a time, for each robot embodiment it can command."""

  def __init__(self, restored, embodiment: str, seed: int = 0, compile_now: bool = True):
    cfg, ec = restored.config, restored.config.eval
    self.restored, self.default = restored, embodiment
    self.control, self.sample_steps, self.noise_scale = ec.control, ec.sample_steps, ec.noise_scale
    self.context, self.stride = cfg.data.context_frames, windows.frame_stride(cfg.data)
    self.history_len = (self.context - 1) * self.stride + 1
    self.horizon, self.replan_every = cfg.data.action_horizon, ec.replan_every
    self.image_size = restored.image_size
    norm = restored.normalizer
    self.needs_eef = norm.proprio_eef or self.control == "eef"
    self.needs_privileged = cfg.model.name == "state_policy"  # the only model that reads the simulator's state
    self.embodiments = tuple(e for e in norm.embodiments if embodiment_lib.spec(e).kind == "robot")
    self._check_embodiment(embodiment, "--embodiment")
    self._base_key = jax.random.PRNGKey(seed)
    self._next_key = jax.jit(lambda base, conn, i: jax.random.fold_in(jax.random.fold_in(base, conn), i))
    self._fns = {}
    if compile_now:
      self._fn(embodiment)

  # ---- description ----------------------------------------------------------------------------------
  def _check_embodiment(self, name, where: str = "embodiment"):
    if not isinstance(name, str) or name not in self.embodiments:
      raise RequestError(f"{where}: {name!r} is not an embodiment this checkpoint can command; valid: "
                         f"{list(self.embodiments)}")

  def keys(self, embodiment: str) -> dict:
    """{key: [shape, dtype]} of an `infer` request for `embodiment` (None: any size; str: a text)."""
    s = self.image_size
    keys = dict(images=[[None, s, s, 3], "uint8"], state=[[self.state_dim(embodiment)], "float32"],
                instruction=[[], "str"])
    if self.needs_eef:
      keys["eef"] = [[embodiment_lib.POSE_DIM], "float32"]
    if self.needs_privileged:
      keys["privileged"] = [[len(self.restored.normalizer.privileged_offset[embodiment])], "float32"]
    return keys

  @staticmethod
  def state_dim(embodiment: str) -> int:
    return len(embodiment_lib.spec(embodiment).action_names)  # joint positions + gripper opening

  def metadata(self) -> dict:
    r = self.restored
    space = r.space
    return dict(
        type="metadata", step=r.step, workdir=r.workdir, model=r.config.model.name, embodiment=self.default,
        embodiments=list(self.embodiments), image_size=self.image_size, camera=r.config.data.camera,
        context_frames=self.context, frame_stride=self.stride, history_frames=self.history_len,
        action_horizon=self.horizon, replan_every=self.replan_every, control=self.control,
        sample_steps=self.sample_steps, noise_scale=float(self.noise_scale),
        tau_v=float(r.config.model.tau_v) if r.config.model.name == "vam" else None,
        actions={e: dict(dim=space.slot(e, self.control).size,
                         names=(list(embodiment_lib.spec(e).action_names) if self.control == "joints" else
                                [f"pose{i}" for i in range(embodiment_lib.POSE_DIM)] + ["gripper"]),
                         meaning=("absolute joint targets + gripper command (0 open, 1 closed)" if self.control ==
                                  "joints" else "world-frame end-effector pose targets (position, 6D rotation) "
                                  "+ gripper command (0 open, 1 closed)")) for e in self.embodiments},
        keys={e: self.keys(e) for e in self.embodiments},
        # How vam.eval simulates this checkpoint's robots (vam.serve.sim_robot builds the same worlds).
        sim=dict(backend=r.config.eval.backend, physics=r.config.eval.physics,
                 push_layout=r.config.eval.push_layout, eval_embodiments=list(r.config.eval.embodiments)))

  # ---- one request --------------------------------------------------------------------------------------
  def check(self, session: Session, request: dict) -> Checked:
    """Validates an `infer` request against this checkpoint; raises RequestError naming the key."""
    emb = request.get("embodiment", session.embodiment or self.default)
    self._check_embodiment(emb)
    reset = request.get("reset", False)
    if not isinstance(reset, bool):
      raise RequestError(f"reset: expected true or false, got {type(reset).__name__}")
    if not reset and session.embodiment not in (None, emb):
      raise RequestError(f"embodiment: this connection's episode runs {session.embodiment!r}; send reset=true "
                         f"to switch to {emb!r}")
    expected = self.keys(emb)
    unknown = sorted(set(request) - set(KEYS_ALWAYS) - set(expected) - {"eef"})
    if unknown:
      raise RequestError(f"unknown key(s) {unknown}; an infer request for {emb} carries {sorted(expected)} "
                         f"(and optionally reset, embodiment, rng)")
    missing = [k for k in expected if k not in request]
    if missing:
      raise RequestError(f"missing key(s) {missing}; an infer request for {emb} carries {sorted(expected)}")
    images = _array(request, "images")
    if images.dtype != np.uint8:
      raise RequestError(f"images: expected dtype uint8 (0-255 RGB), got {images.dtype}")
    if images.ndim == 3:
      images = images[None]
    s = self.image_size
    if images.ndim != 4 or images.shape[1:] != (s, s, 3) or not images.shape[0]:
      raise RequestError(f"images: expected shape (T, {s}, {s}, 3) or ({s}, {s}, 3) (the checkpoint's image size "
                         f"{s}, RGB), got {images.shape}")
    obs = dict(state=_vector(request, "state", self.state_dim(emb)))
    # Always present (zeros when neither the model nor the control reads it): one compiled program.
    obs["eef"] = (_vector(request, "eef", embodiment_lib.POSE_DIM) if self.needs_eef or "eef" in request else
                  np.zeros(embodiment_lib.POSE_DIM, np.float32))
    if self.needs_privileged:
      obs["privileged"] = _vector(request, "privileged", expected["privileged"][0][0])
    text = request["instruction"]
    if isinstance(text, bytes):
      text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
      raise RequestError(f"instruction: expected a string, got {type(text).__name__}")
    rng = request.get("rng")
    if rng is not None:
      rng = _array(request, "rng")
      if rng.dtype != np.uint32 or rng.shape != (2,):
        raise RequestError(f"rng: expected a (2,) uint32 key, got {rng.shape} {rng.dtype}")
    if reset or session.history is None:
      start = np.repeat(images[:1], self.history_len, axis=0)
      history = np.concatenate([start, images[1:]])[-self.history_len:]
    else:
      history = np.concatenate([session.history, images])[-self.history_len:]
    return Checked(emb, np.ascontiguousarray(history), obs, windows.encode_instruction(text), rng)

  def infer(self, session: Session, checked: Checked) -> dict:
    """Runs one checked request and commits it to the session. Returns the reply (actions, timing)."""
    t0 = time.perf_counter()
    fn = self._fn(checked.embodiment)
    rng = checked.rng if checked.rng is not None else self._next_key(self._base_key, session.id, session.requests)
    frames = checked.history[::self.stride][None]  # (1, H_o, H, W, 3), newest last, as the rollout's
    obs = {k: v[None] for k, v in checked.obs.items()}
    actions = np.asarray(fn(self.restored.params, obs, frames, checked.instruction[None], rng))[0]
    model_ms = (time.perf_counter() - t0) * 1e3
    session.embodiment, session.history = checked.embodiment, checked.history
    session.requests += 1
    return dict(type="actions", actions=actions.astype(np.float32), embodiment=checked.embodiment,
                control=self.control, step=self.restored.step, timing=dict(model_ms=model_ms))

  def _fn(self, embodiment: str):
    """The jitted chunk function of `embodiment` (compiled on first use with a zero observation)."""
    if embodiment not in self._fns:
      act = jax.jit(agents.chunk_fn(self.restored, embodiment, self.sample_steps, self.control, self.noise_scale))
      s, d = self.image_size, self.keys(embodiment)
      obs = {k: np.zeros((1, *d[k][0]), np.float32) for k in ("state", "privileged") if k in d}
      obs["eef"] = np.zeros((1, embodiment_lib.POSE_DIM), np.float32)
      jax.block_until_ready(act(self.restored.params, obs, np.zeros((1, self.context, s, s, 3), np.uint8),
                                np.zeros((1, windows.INSTRUCTION_BYTES), np.uint8), self._base_key))
      self._fns[embodiment] = act
    return self._fns[embodiment]


def _array(request: dict, key: str) -> np.ndarray:
  value = request[key]
  if not isinstance(value, np.ndarray):
    raise RequestError(f"{key}: expected a numpy array, got {type(value).__name__}")
  return value


def _vector(request: dict, key: str, size: int) -> np.ndarray:
  value = _array(request, key)
  if value.dtype.kind not in "fiu":
    raise RequestError(f"{key}: expected numbers, got dtype {value.dtype}")
  if value.shape != (size,):
    raise RequestError(f"{key}: expected shape ({size},), got {value.shape}")
  value = value.astype(np.float32)
  if not np.isfinite(value).all():
    raise RequestError(f"{key}: non-finite values (NaN/inf) at index {np.flatnonzero(~np.isfinite(value)).tolist()}")
  return value
