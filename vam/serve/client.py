"""The robot side of the policy server: numpy, msgpack and websockets only (no JAX; copy this file and
wire.py onto a robot computer, or `pip install` vam without its accelerators).

    from vam.serve.client import PolicyClient, ChunkExecutor
    with PolicyClient("ws://gpu-box:8000") as client:
      robot = ChunkExecutor(client, "push the red block to the green target")
      for t in range(200):
        action = robot(camera_rgb_uint8, joint_positions_and_gripper)  # one native command per control step

`PolicyClient.infer` is one request (a chunk of native commands); `ChunkExecutor` runs a policy at a fixed
control rate: it executes `execute` actions of each chunk, then queries again, sending every frame it saw
since the last query (the server keeps the history its model reads). With `prefetch = d > 0` it asks for the
next chunk `d` steps before the current one runs out, from the observation of that step, and starts the new
chunk at its entry `d` (the steps that passed meanwhile), so the robot waits only when a query takes longer
than `d` control steps.
"""

import concurrent.futures
import threading
import time

import numpy as np
from websockets.sync import client as ws_client

try:
  from vam.serve import wire
except ImportError:  # wire.py copied beside this file
  import wire  # pylint: disable=import-error


class ServerError(RuntimeError):
  """The server refused a request (the text is its reason) or the connection broke."""


class PolicyClient:
  """One WebSocket connection to `python -m vam.serve`; thread-safe (one request at a time)."""

  def __init__(self, uri: str = "ws://127.0.0.1:8000", open_timeout: float = 60.0,
               max_message_bytes: int = 64 << 20):
    self.uri = uri
    try:
      self._ws = ws_client.connect(uri, open_timeout=open_timeout, compression=None, max_size=max_message_bytes)
    except (OSError, TimeoutError) as e:
      raise ServerError(f"cannot connect to the policy server at {uri}: {e}") from e
    self._lock = threading.Lock()
    self.metadata = self.request(dict(type="metadata"))
    if self.metadata.get("protocol") != wire.PROTOCOL:
      raise ServerError(f"{uri} speaks {self.metadata.get('protocol')!r}, this client {wire.PROTOCOL!r}")

  def request(self, message: dict) -> dict:
    """Sends one message, returns the reply (an `error` reply raises ServerError with its text)."""
    with self._lock:
      try:
        self._ws.send(wire.pack(message))
        reply = wire.unpack(self._ws.recv())
      except Exception as e:  # websockets' ConnectionClosed* (e.g. 1009 message too big), timeouts
        if isinstance(e, (ServerError, TypeError)):
          raise
        raise ServerError(f"{self.uri}: {type(e).__name__}: {e}") from e
    if reply.get("type") == "error":
      raise ServerError(reply.get("error", "unknown error"))
    return reply

  def infer(self, images, state, instruction: str, *, eef=None, privileged=None, reset: bool = False,
            embodiment: str | None = None, rng=None) -> dict:
    """One chunk. images (T, H, W, 3) or (H, W, 3) uint8: the frames since the previous request (the first of an
    episode with reset=True); state (S,) native proprio; eef (9,) / privileged (P,) where the metadata's
    `keys` list them; rng an optional (2,) uint32 sampling key. Returns the reply: `actions` (K, C) float32
    native commands, `timing` (server-side ms) + `round_trip_ms`."""
    message = dict(type="infer", images=np.asarray(images), state=np.asarray(state, np.float32),
                   instruction=instruction, reset=bool(reset))
    for key, value in (("eef", eef), ("privileged", privileged)):
      if value is not None:
        message[key] = np.asarray(value, np.float32)
    if embodiment is not None:
      message["embodiment"] = embodiment
    if rng is not None:
      message["rng"] = np.asarray(rng, np.uint32)
    t0 = time.perf_counter()
    reply = self.request(message)
    reply["timing"]["round_trip_ms"] = (time.perf_counter() - t0) * 1e3
    return reply

  def reset(self) -> None:
    self.request(dict(type="reset"))

  def close(self) -> None:
    self._ws.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class ChunkExecutor:
  """A policy at a fixed control rate: call it once per control step with the current observation; it returns
  the native command to execute now (C,), querying the server when a chunk is used up.

  execute: actions of each chunk executed before the next query (default: the server's `replan_every`);
  prefetch: query this many steps early (0: query when the chunk is used up, the robot waits for it);
  keys: optional `keys(query_index) -> (2,) uint32` sampling keys (reproducible episodes)."""

  def __init__(self, client: PolicyClient, instruction: str, execute: int | None = None, prefetch: int = 0,
               embodiment: str | None = None, keys=None):
    meta = client.metadata
    self.client, self.instruction, self.embodiment, self.keys = client, instruction, embodiment, keys
    self.execute = int(execute or meta["replan_every"])
    self.prefetch = int(prefetch)
    horizon = int(meta["action_horizon"])
    if not 1 <= self.execute <= horizon:
      raise ValueError(f"execute={self.execute} must be in [1, the server's action_horizon={horizon}]")
    if not 0 <= self.prefetch < self.execute or self.execute + self.prefetch > horizon:
      raise ValueError(f"prefetch={self.prefetch} must be in [0, execute={self.execute}) with execute + prefetch "
                       f"<= action_horizon={horizon}")
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1) if self.prefetch else None
    self.waits_ms = []  # how long each step that needed a new chunk waited for it
    self.replies = []  # every reply (actions, timing)
    self.reset()

  def reset(self) -> None:
    """A new episode: the next query resets the server's history for this connection."""
    self._frames, self._chunk, self._index, self._used = [], None, 0, 0
    self._pending, self._since_query, self._queries, self._new_episode = None, 0, 0, True

  def _query(self, state, eef, privileged):
    frames, self._frames = np.stack(self._frames), []
    key = self.keys(self._queries) if self.keys is not None else None
    reset, self._new_episode = self._new_episode, False
    self._queries += 1
    call = lambda: self.client.infer(frames, state, self.instruction, eef=eef, privileged=privileged, reset=reset,
                                     embodiment=self.embodiment, rng=key)
    return call

  def __call__(self, image, state, eef=None, privileged=None) -> np.ndarray:
    self._frames.append(np.asarray(image, np.uint8))
    if self._chunk is None or self._used == self.execute:
      t0 = time.perf_counter()
      if self._pending is not None:
        reply, start = self._pending.result(), self._since_query
        self._pending = None
      else:
        reply, start = self._query(state, eef, privileged)(), 0
      self.waits_ms.append((time.perf_counter() - t0) * 1e3)
      self.replies.append(reply)
      self._chunk, self._index, self._used = reply["actions"], start, 0
    elif self.prefetch and self._pending is None and self.execute - self._used == self.prefetch:
      self._pending, self._since_query = self._pool.submit(self._query(state, eef, privileged)), 0
    action = self._chunk[self._index]
    self._index, self._used, self._since_query = self._index + 1, self._used + 1, self._since_query + 1
    return action

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=True)
