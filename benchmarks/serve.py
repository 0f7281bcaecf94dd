"""The policy server's latency and throughput over loopback: `python -m vam.serve` in its own process, the light
client in this one, as a robot would use them (one new 64x64 frame + the joint state per request, batch 1).

    python -m benchmarks.serve --baseline out/demo/baseline --vam out/bench/vam --out benchmarks/results/serve.json
        [--requests 200] [--seconds 10]

Servers measured, one at a time: the image baseline, the VAM at inference tau_v = 1 and at tau_v = 0.5
(`--config.model.tau_v`, with the video flow's Euler steps). For each:
  latency      round trip of `--requests` sequential requests (p50 / p99 / mean ms), the server's model time
               (the jitted chunk, measured in the server) and the rest = network + (de)serialisation + queueing
  throughput   requests/s with 1 and with 4 clients at once (each its own connection and episode, `--seconds`)
The compute does not depend on the weights: any finished checkpoint of the configs measures them.
"""

import json
import sys
import threading
import time

import numpy as np
from absl import app, flags

from benchmarks import report
from vam.serve import process

flags.DEFINE_string("baseline", "out/demo/baseline", "workdir of an image-baseline checkpoint")
flags.DEFINE_string("vam", "out/bench/vam", "workdir of a VAM checkpoint")
flags.DEFINE_string("out", "benchmarks/results/serve.json", "where the JSON report goes")
flags.DEFINE_integer("requests", 200, "timed sequential requests per server (after 10 warm-up requests)")
flags.DEFINE_float("seconds", 10.0, "duration of each throughput measurement")
flags.DEFINE_list("clients", ["1", "4"], "concurrent clients of the throughput measurements")
FLAGS = flags.FLAGS


def _episode(client, rng):
  """A request stream like a robot's: one new frame and the joint state each time."""
  meta = client.metadata
  s, emb = meta["image_size"], meta["embodiment"]
  state_dim = meta["keys"][emb]["state"][0][0]
  frames = rng.integers(0, 256, (8, s, s, 3), dtype=np.uint8)
  i = 0
  while True:
    yield dict(images=frames[i % 8], state=rng.normal(size=state_dim).astype(np.float32), reset=i == 0)
    i += 1


def latency(uri: str, requests: int) -> dict:
  from vam.serve import client as client_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  with client_lib.PolicyClient(uri) as client:
    stream = _episode(client, rng)
    for _ in range(10):
      r = next(stream)
      client.infer(r["images"], r["state"], "push the red block to the green target", reset=r["reset"])
    rt, model, server = [], [], []
    for _ in range(requests):
      r = next(stream)
      t = client.infer(r["images"], r["state"], "push the red block to the green target", reset=r["reset"])["timing"]
      rt.append(t["round_trip_ms"])
      model.append(t["model_ms"])
      server.append(t["server_ms"])
    meta = client.metadata
  rt, model, server = map(np.asarray, (rt, model, server))
  pct = lambda x, q: float(np.percentile(x, q))
  return dict(round_trip_ms=dict(p50=pct(rt, 50), p99=pct(rt, 99), mean=float(rt.mean())),
              model_ms=dict(p50=pct(model, 50), p99=pct(model, 99), mean=float(model.mean())),
              server_overhead_ms=dict(p50=pct(server - model, 50), mean=float((server - model).mean())),
              network_and_serialisation_ms=dict(p50=pct(rt - model, 50), p99=pct(rt - model, 99),
                                                mean=float((rt - model).mean())),
              requests=requests, step=meta["step"], model=meta["model"], tau_v=meta["tau_v"],
              sample_steps=meta["sample_steps"], action_horizon=meta["action_horizon"],
              image_size=meta["image_size"])


def throughput(uri: str, clients: int, seconds: float) -> dict:
  from vam.serve import client as client_lib  # pylint: disable=g-import-not-at-top
  counts = [0] * clients
  connected = threading.Barrier(clients + 1)
  stop = threading.Event()

  def work(i):
    with client_lib.PolicyClient(uri) as client:
      stream = _episode(client, np.random.default_rng(i + 1))
      r = next(stream)
      client.infer(r["images"], r["state"], "reach the ball", reset=True)
      connected.wait()
      while not stop.is_set():
        r = next(stream)
        client.infer(r["images"], r["state"], "reach the ball", reset=r["reset"])
        counts[i] += 1

  threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
  for t in threads:
    t.start()
  connected.wait()
  t0 = time.perf_counter()
  time.sleep(seconds)
  stop.set()
  for t in threads:
    t.join()
  dt = time.perf_counter() - t0
  return dict(clients=clients, requests=sum(counts), seconds=dt, requests_per_s=sum(counts) / dt)


def main(argv):
  del argv
  servers = {"baseline": (FLAGS.baseline, []),
             "vam_tau_v_1": (FLAGS.vam, ["--config.model.tau_v=1.0"]),
             "vam_tau_v_0.5": (FLAGS.vam, ["--config.model.tau_v=0.5"])}
  res = {}
  for name, (workdir, overrides) in servers.items():
    proc, uri = process.start(workdir, *overrides)
    try:
      res[name] = dict(latency=latency(uri, FLAGS.requests),
                       throughput={str(c): throughput(uri, int(c), FLAGS.seconds) for c in FLAGS.clients})
    finally:
      proc.terminate()
      proc.wait(timeout=60)
    lat = res[name]["latency"]
    print(f"{name}: round trip p50 {lat['round_trip_ms']['p50']:.1f} ms (model {lat['model_ms']['p50']:.1f}), "
          f"{json.dumps({c: round(t['requests_per_s'], 1) for c, t in res[name]['throughput'].items()})} req/s",
          flush=True)
  base = res["baseline"]["latency"]["round_trip_ms"]["p50"]
  ratios = {f"{n}_round_trip_vs_baseline": r["latency"]["round_trip_ms"]["p50"] / base for n, r in res.items()}
  for n, r in res.items():
    lat = r["latency"]
    ratios[f"{n}_model_share_of_round_trip"] = lat["model_ms"]["p50"] / lat["round_trip_ms"]["p50"]
    if "4" in r["throughput"] and "1" in r["throughput"]:
      ratios[f"{n}_4_clients_vs_1"] = r["throughput"]["4"]["requests_per_s"] / r["throughput"]["1"]["requests_per_s"]
  report.write(FLAGS.out, "serve", dict(baseline=FLAGS.baseline, vam=FLAGS.vam, requests=FLAGS.requests,
                                        seconds=FLAGS.seconds, transport="loopback websockets, msgpack"), res, ratios)


if __name__ == "__main__":
  try:
    app.run(main)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    sys.exit(f"error: {e}")
