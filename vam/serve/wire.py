"""The policy server's wire protocol: msgpack maps over WebSocket binary frames, numpy arrays inside them.

Needs numpy and msgpack only (the robot side imports it without JAX).

Client -> server (`type`):
  metadata   -> `metadata`: checkpoint step, model, embodiments, image size, context frames and frame stride,
                action horizon and layout, the keys an `infer` request must carry (shapes, dtypes)
  infer      -> `actions`: one chunk of native commands (K, C) float32 and `timing` (ms)
     images       (T, H, W, 3) or (H, W, 3) uint8: the frames observed since the previous request of this
                  connection, one per control step, oldest first (the server keeps the history the model
                  reads; on `reset` it starts from the first frame repeated, as evaluation and training do)
     state        (S,) native proprio (joint positions, gripper opening)
     instruction  str
     eef          (9,) end-effector pose (position, 6D rotation), when the metadata lists it
     privileged   (P,) simulator task state, only for the privileged-state policy
     reset        bool, optional: a new episode (forgets this connection's frames)
     embodiment   str, optional: another embodiment of the checkpoint than the server's default
     rng          (2,) uint32, optional: the sampling key's data (reproducible chunks; default: the server's)
  reset      -> `ok`: forget this connection's frames
Server -> client on a bad request: `error` with a message naming the key and what was wrong; the connection
and every other one keep being served.
"""

import msgpack
import numpy as np

PROTOCOL = "vam-serve-v1"
_ARRAY = "__ndarray__"
# dtypes an array may travel as (never object arrays: a message can only carry numbers)
DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32",
          "float64")


class ProtocolError(ValueError):
  """A message that is not a valid vam-serve message (the text names what was wrong)."""


def _encode(obj):
  if isinstance(obj, np.ndarray):
    if obj.dtype.name not in DTYPES:
      raise TypeError(f"arrays of dtype {obj.dtype} cannot be sent; valid: {list(DTYPES)}")
    return {_ARRAY: True, "dtype": obj.dtype.name, "shape": list(obj.shape),
            "data": np.ascontiguousarray(obj).tobytes()}
  if isinstance(obj, np.generic):
    return obj.item()
  raise TypeError(f"cannot send an object of type {type(obj).__name__}")


def _decode(obj):
  if obj.get(_ARRAY) is not True:
    return obj
  dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
  if dtype not in DTYPES:
    raise ProtocolError(f"an array has dtype {dtype!r}; valid: {list(DTYPES)}")
  if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
    raise ProtocolError(f"an array has shape {shape!r}: not a list of sizes")
  if not isinstance(data, bytes) or len(data) != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize:
    raise ProtocolError(f"an array of dtype {dtype} and shape {tuple(shape)} carries "
                        f"{len(data) if isinstance(data, bytes) else 'no'} bytes of data")
  return np.frombuffer(data, dtype).reshape(shape)


def pack(message: dict) -> bytes:
  """A message (dict of str -> numbers, strings, lists, dicts, numpy arrays) -> bytes."""
  return msgpack.packb(message, default=_encode, use_bin_type=True)


def unpack(data) -> dict:
  """bytes -> a message dict (arrays back as read-only numpy arrays). Raises ProtocolError."""
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise ProtocolError("messages are binary msgpack frames, not text")
  try:
    message = msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=True)
  except ProtocolError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (msgpack raises several unrelated types)
    raise ProtocolError(f"not a msgpack message ({type(e).__name__}: {e})") from None
  if not isinstance(message, dict):
    raise ProtocolError(f"a message is a map, not {type(message).__name__}")
  return message


def error(text: str) -> bytes:
  return pack(dict(type="error", error=text))
