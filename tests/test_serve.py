"""The policy server (`python -m vam.serve`) and its light client: a simulated robot in another process driven
through the server runs the in-process evaluation's episodes step for step; bad requests get error replies
while the server goes on serving; connections are independent; the client needs no JAX."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vam.serve import client as client_lib
from vam.serve import process
from vam.serve import wire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARM6 = "--config.eval.embodiments=['arm6']"
# The in-process evaluation the served episodes must equal: arm6 reach, one env at a time (sim_robot --eval_rng).
EVAL = [("eval.embodiments", "['arm6']"), ("eval.tasks", "['reach']"), ("eval.modes", "['easy']"),
        ("eval.splits", "['train']"), ("eval.episodes", "2"), ("eval.num_envs", "1"), ("eval.offline_windows", "0"),
        ("eval.videos_per_task", "0")]


@pytest.fixture(scope="module")
def trained(tiny_baseline):
  return tiny_baseline


@pytest.fixture(scope="module")
def server(trained):
  proc, uri = process.start(trained, ARM6, "--max_message_mb=0.5")
  yield uri
  proc.send_signal(signal.SIGTERM)  # a clean stop: exit 0 with a count of what it served
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err[-3000:]
  assert "stopped after" in out


def _obs(rng, size=64, frames=1):
  return dict(images=rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
              state=rng.normal(size=7).astype(np.float32))


def test_client_needs_no_jax():
  code = ("import sys, vam.serve.client; bad = [m for m in sys.modules if m.split('.')[0] in "
          "('jax', 'jaxlib', 'flax', 'orbax', 'mujoco', 'tensorflow_datasets')]; assert not bad, bad")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_wire_round_trips_arrays_and_refuses_bad_frames():
  msg = dict(type="infer", images=np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3), state=np.float32([1.5, -2]),
             nested=dict(k=np.int64(3), flags=[True, False]), instruction="push")
  back = wire.unpack(wire.pack(msg))
  np.testing.assert_array_equal(back["images"], msg["images"])
  assert back["images"].dtype == np.uint8 and back["state"].dtype == np.float32
  assert back["nested"] == dict(k=3, flags=[True, False]) and back["instruction"] == "push"
  with pytest.raises(wire.ProtocolError, match="not a msgpack message"):
    wire.unpack(b"\xc1 not msgpack")
  with pytest.raises(wire.ProtocolError, match="messages are binary"):
    wire.unpack("text")
  with pytest.raises(wire.ProtocolError, match="a message is a map"):
    wire.unpack(wire.pack([1, 2]))
  forged = wire.pack(dict(x=dict(__ndarray__=True, dtype="float32", shape=[4], data=b"\0" * 3)))
  with pytest.raises(wire.ProtocolError, match=r"shape \(4,\) carries 3 bytes"):
    wire.unpack(forged)
  with pytest.raises(wire.ProtocolError, match="dtype 'object'"):
    wire.unpack(wire.pack(dict(x=dict(__ndarray__=True, dtype="object", shape=[1], data=b"\0" * 8))))
  with pytest.raises(TypeError, match="dtype object cannot be sent"):
    wire.pack(dict(x=np.array([None])))


def test_served_policy_drives_the_sim_like_in_process_evaluation(trained, server, tmp_path):
  """A robot process that only speaks to the server (sim_robot) against `vam.eval` of the same checkpoint on
  the same worlds and sampling keys: equal success and steps to success per episode, and the same final
  gripper position (the whole trajectory, not only a flag)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vam.eval import agents, closed_loop, evaluate, restore  # pylint: disable=g-import-not-at-top
  from vam.input import windows  # pylint: disable=g-import-not-at-top
  from vam.sim import rollout as sim_rollout  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, "-m", "vam.serve.sim_robot", "--uri", server, "--tasks", "reach",
                         "--episodes", "2", "--eval_rng"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (served,) = json.loads(proc.stdout.strip().splitlines()[-1])["cells"]
  (cell,) = evaluate.evaluate(trained, out=str(tmp_path / "eval"), overrides=EVAL)["evaluations"][-1]["cells"]
  assert served["seeds"] == cell["seeds"]
  assert sum(served["success"]) == cell["successes"] and served["steps_to_success"] == cell["steps_to_success"]
  # The final grasp point of each episode, from evaluation's own rollout function (traced).
  restored = restore.load(trained, None, EVAL)
  ec = restored.config.eval
  runner = closed_loop.Runner("arm6", 1, restored.image_size, restored.config.data.camera, ec.backend, ec.physics,
                              ec.push_layout)
  agent = agents.from_eval_config(restored, "arm6", ec)
  for j, seed in enumerate(cell["seeds"]):
    state = runner.reset("easy", "train", jax.random.PRNGKey(seed)[None], jnp.asarray([0]))
    text = sim_rollout.instruction("reach", seed, jax.device_get(state.episode), 0)[0]
    _, _, _, steps = closed_loop.rollout(runner.env, agent, 30, False, restored.params, state,
                                         jnp.asarray(windows.encode_instruction(text))[None], jax.random.PRNGKey(j),
                                         trace=True)
    np.testing.assert_allclose(served["final_grasp"][j], np.asarray(steps["grasp"][-1, 0]), atol=1e-5)


def test_metadata_and_frame_history(server):
  rng = np.random.default_rng(0)
  with client_lib.PolicyClient(server) as client:
    meta = client.metadata
    assert meta["step"] == 4 and meta["embodiment"] == "arm6" and meta["image_size"] == 64
    assert meta["protocol"] == wire.PROTOCOL and meta["control"] == "joints"
    assert meta["actions"]["arm6"]["names"] == ["q_yaw", "q_shoulder", "q_elbow", "q_roll", "q_wrist", "q_tool",
                                                "gripper"]
    assert meta["keys"]["arm6"]["images"] == [[None, 64, 64, 3], "uint8"] and meta["keys"]["arm6"]["state"][0] == [7]
    h_o = meta["context_frames"]
    first, second = _obs(rng), _obs(rng)
    key = np.uint32([7, 11])
    # One frame at a time (the server keeps the history) == the same frames sent at once.
    client.infer(first["images"], first["state"], "reach the red ball", reset=True, rng=key)
    one_by_one = client.infer(second["images"], second["state"], "reach the red ball", rng=key)
    at_once = client.infer(np.concatenate([first["images"], second["images"]]), second["state"],
                           "reach the red ball", reset=True, rng=key)
    assert one_by_one["actions"].shape == (meta["action_horizon"], 7) and one_by_one["actions"].dtype == np.float32
    np.testing.assert_array_equal(one_by_one["actions"], at_once["actions"])
    if h_o > 1:  # the history matters: the same last frame after a different one gives other actions
      other = client.infer(np.concatenate([second["images"], second["images"]]), second["state"],
                           "reach the red ball", reset=True, rng=key)
      assert not np.array_equal(other["actions"], at_once["actions"])
    # Sampling keys: the same key gives the same chunk, the server's own keys differ per request.
    a = client.infer(second["images"], second["state"], "x", reset=True)["actions"]
    b = client.infer(second["images"], second["state"], "x", reset=True)["actions"]
    assert not np.array_equal(a, b)
    t = one_by_one["timing"]
    assert 0 < t["model_ms"] <= t["server_ms"] < t["round_trip_ms"]


def test_bad_requests_get_error_replies_and_the_server_keeps_serving(server):
  rng = np.random.default_rng(1)
  good = _obs(rng)
  with client_lib.PolicyClient(server) as client:
    def refused(pattern, **changes):
      message = dict(type="infer", instruction="reach", reset=True, **good)
      message.update(changes)
      message = {k: v for k, v in message.items() if v is not None}
      with pytest.raises(client_lib.ServerError, match=pattern):
        client.request(message)
      assert client.infer(good["images"], good["state"], "reach", reset=True)["actions"].shape[1] == 7

    refused(r"missing key\(s\) \['state'\]", state=None)
    refused(r"missing key\(s\) \['images', 'instruction'\]", images=None, instruction=None)
    refused(r"unknown key\(s\) \['imgs'\]", imgs=good["images"])
    refused(r"images: expected shape \(T, 64, 64, 3\) or \(64, 64, 3\) .* got \(1, 32, 32, 3\)",
            images=np.zeros((1, 32, 32, 3), np.uint8))
    refused(r"images: expected dtype uint8 .* got float32", images=good["images"].astype(np.float32))
    refused(r"images: expected a numpy array, got list", images=[1, 2])
    refused(r"state: non-finite values \(NaN/inf\) at index \[2\]", state=np.float32([0, 0, np.nan, 0, 0, 0, 1]))
    refused(r"state: expected shape \(7,\), got \(5,\)", state=np.zeros(5, np.float32))
    refused(r"embodiment: 'gantry' is not an embodiment this checkpoint can command; valid: \['arm6'\]",
            embodiment="gantry")
    refused(r"embodiment: 'human_hand' is not an embodiment", embodiment="human_hand")
    refused(r"instruction: expected a string, got int", instruction=3)
    refused(r"reset: expected true or false", reset="yes")
    refused(r"rng: expected a \(2,\) uint32 key", rng=np.zeros(3, np.uint32))
    refused(r"type: 'act' is not a request", type="act")
    # Over the server's limit (0.5 MiB): an error reply; over 4x the limit: that connection alone is closed.
    refused(r"message of \d+ bytes is over the server's limit of 524288 bytes",
            images=np.zeros((50, 64, 64, 3), np.uint8))
    client._ws.send(b"\xc1 junk")  # pylint: disable=protected-access  (what a broken client would send)
    assert "not a msgpack message" in wire.unpack(client._ws.recv())["error"]  # pylint: disable=protected-access
    with client_lib.PolicyClient(server) as doomed:
      with pytest.raises(client_lib.ServerError, match="1009|too big"):
        doomed.infer(np.zeros((200, 64, 64, 3), np.uint8), good["state"], "reach", reset=True)
    assert client.infer(good["images"], good["state"], "reach", reset=True)["actions"].shape[1] == 7


def test_concurrent_clients_keep_their_own_episodes(server):
  """Two connections at once, each its own episode: every chunk equals the one the same requests get on a
  connection alone."""
  rng = np.random.default_rng(2)
  episodes = [[_obs(rng) for _ in range(4)] for _ in range(2)]

  def run(episode, out):
    with client_lib.PolicyClient(server) as client:
      for i, obs in enumerate(episode):
        out.append(client.infer(obs["images"], obs["state"], "push", reset=i == 0, rng=np.uint32([i, 5]))["actions"])

  alone = []
  for ep in episodes:
    alone.append([])
    run(ep, alone[-1])
  together = [[], []]
  threads = [threading.Thread(target=run, args=(ep, out)) for ep, out in zip(episodes, together)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=300)
  for a, b in zip(alone, together):
    assert len(b) == 4
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)


class _ScriptedClient:
  """Stands in for PolicyClient: chunk q holds 100 * q + k at entry k, so executed actions say their source."""

  def __init__(self, horizon=6, delay_s=0.0):
    self.metadata = dict(replan_every=3, action_horizon=horizon)
    self.calls, self.delay_s = [], delay_s

  def infer(self, images, state, instruction, **kw):
    time.sleep(self.delay_s)
    q = len(self.calls)
    self.calls.append(dict(frames=images[:, 0, 0, 0].tolist(), state=float(state[0]), reset=kw["reset"]))
    return dict(actions=100.0 * q + np.arange(6, dtype=np.float32)[:, None], timing={})


def test_chunk_executor_executes_k_then_requeries_and_prefetches_ahead():
  frame = lambda t: np.full((2, 2, 3), t, np.uint8)
  client = _ScriptedClient()
  robot = client_lib.ChunkExecutor(client, "reach")
  done = [float(robot(frame(t), np.float32([t]))[0]) for t in range(7)]
  assert done == [0, 1, 2, 100, 101, 102, 200]  # 3 of each chunk
  assert [c["frames"] for c in client.calls] == [[0], [1, 2, 3], [4, 5, 6]]  # every frame seen, once
  assert [c["reset"] for c in client.calls] == [True, False, False]
  # Prefetch 1: the next query goes out one step early, from that step's observation, and its chunk starts at
  # entry 1 (the step that passed while it was computed).
  client = _ScriptedClient(delay_s=0.05)
  robot = client_lib.ChunkExecutor(client, "reach", prefetch=1)
  done = [float(robot(frame(t), np.float32([t]))[0]) for t in range(7)]
  assert done == [0, 1, 2, 101, 102, 103, 201]
  assert [c["state"] for c in client.calls] == [0, 2, 5] and [c["frames"] for c in client.calls] == [[0], [1, 2],
                                                                                                      [3, 4, 5]]
  robot.close()
  with pytest.raises(ValueError, match="prefetch=3 must be in"):
    client_lib.ChunkExecutor(client, "x", prefetch=3)
  with pytest.raises(ValueError, match=r"execute=7 must be in \[1, the server's action_horizon=6\]"):
    client_lib.ChunkExecutor(client, "x", execute=7)


def test_server_cli_errors_name_the_problem(trained, tmp_path):
  def cli(*args):
    return subprocess.run([sys.executable, "-m", "vam.serve", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  proc = cli("--workdir", trained, "--embodiment", "gantry", ARM6)
  assert proc.returncode != 0
  assert "error: --embodiment: 'gantry' is not an embodiment this checkpoint can command" in proc.stderr
  proc = cli("--workdir", str(tmp_path / "nothing"))
  assert proc.returncode != 0 and "error:" in proc.stderr
  with pytest.raises(client_lib.ServerError, match="cannot connect to the policy server at ws://127.0.0.1:9"):
    client_lib.PolicyClient("ws://127.0.0.1:9", open_timeout=5)
