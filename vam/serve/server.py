"""The policy server: WebSocket connections in one asyncio loop, the model in one worker thread.

Every connection is a `Session` (its own frame history and sampling keys); requests of all connections queue
for the one compiled model, so several clients share it safely. A bad request (wire.py, policy.py) gets an
`error` reply naming the problem and the connection stays open; only a message over the hard frame limit
(`4 * max_message_bytes`) makes the WebSocket layer close that one connection (code 1009).
"""

import asyncio
import concurrent.futures
import itertools
import time

from websockets.asyncio import server as ws_server

from vam import log as log_lib
from vam.serve import policy as policy_lib
from vam.serve import wire

logging = log_lib.get("vam.serve")


class PolicyServer:

  def __init__(self, policy: policy_lib.ServedPolicy, max_message_bytes: int = 8 << 20):
    self.policy, self.max_message_bytes = policy, max_message_bytes
    self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vam-serve-model")
    self._ids = itertools.count()
    self.requests = 0

  async def handle(self, connection) -> None:
    session = policy_lib.Session(id=next(self._ids))
    logging.info("connection %d from %s", session.id, connection.remote_address)
    async for message in connection:
      reply = await self._reply(session, message)
      await connection.send(reply)
    logging.info("connection %d closed", session.id)

  async def _reply(self, session: policy_lib.Session, message) -> bytes:
    t0 = time.perf_counter()
    size = len(message)
    if size > self.max_message_bytes:
      return wire.error(f"message of {size} bytes is over the server's limit of {self.max_message_bytes} bytes "
                        "(--max_message_mb)")
    try:
      request = wire.unpack(message)
      kind = request.get("type")
      if kind == "metadata":
        return wire.pack(dict(self.policy.metadata(), protocol=wire.PROTOCOL))
      if kind == "reset":
        session.reset()
        return wire.pack(dict(type="ok"))
      if kind != "infer":
        raise wire.ProtocolError(f"type: {kind!r} is not a request; valid: ['infer', 'metadata', 'reset']")
      checked = self.policy.check(session, request)
      t1 = time.perf_counter()
      loop = asyncio.get_running_loop()
      reply = await loop.run_in_executor(self._worker, self.policy.infer, session, checked)
      self.requests += 1
      reply["timing"].update(decode_ms=(t1 - t0) * 1e3, server_ms=(time.perf_counter() - t0) * 1e3)
      return wire.pack(reply)
    except (wire.ProtocolError, policy_lib.RequestError) as e:
      logging.info("connection %d: bad request: %s", session.id, e)
      return wire.error(str(e))
    except Exception as e:  # pylint: disable=broad-except  (one request's failure must not stop the server)
      logging.exception("connection %d: request failed", session.id)
      return wire.error(f"internal error: {type(e).__name__}: {e}")

  async def serve(self, host: str, port: int, ready=None, stop: asyncio.Event | None = None) -> None:
    """Serves until `stop` is set; `ready(port)` is called once the socket listens (port 0: any free one)."""
    async with ws_server.serve(self.handle, host, port, compression=None,
                               max_size=4 * self.max_message_bytes) as server:
      bound = server.sockets[0].getsockname()[1]
      if ready is not None:
        ready(bound)
      await (stop or asyncio.Event()).wait()
    self._worker.shutdown(wait=True)
