"""Where a compiled train step spends its time and its FLOPs, by op and by model part.

Used by `python -m benchmarks.train --profile DIR` (the image baseline, or any config) and `python -m
benchmarks.vam --profile DIR` (the VAM): each traces a few steps with `jax.profiler` (DIR/plugins/profile/*/
*.trace.json.gz opens in https://ui.perfetto.dev; *.xplane.pb in TensorBoard's profile plugin) and reports
  top_ops     the compiled step's ops (XLA fusions) by time per step, each with the model part it belongs to
              and the source line that made it;
  top_sources the same time summed by source line (forward and backward of a line together);
  parts       time per step and matmul/conv FLOPs per step by model part, and each part's own MFU.
The parts are the `jax.named_scope`s the models open (SCOPES); an op outside all of them (the loss, the RNG,
glue) is "other". FLOPs count dot_general and convolutions in the step's jaxpr (forward and backward), which
is what the MFU's numerator (XLA's cost analysis) counts too, up to the elementwise ops.
"""

import collections
import glob
import gzip
import json
import math
import os
import re
import time

import jax
from jax.extend import core as jax_core

# Innermost wins: the video model's own instruction encoder counts as "instruction_encoder".
SCOPES = ("video_model", "instruction_encoder", "observation_encoder", "readout", "action_decoder", "auxiliary",
          "optimizer")
OTHER = "other"


# ---------------------------------------------------------------------------------------------------------
# FLOPs by part, from the jaxpr
# ---------------------------------------------------------------------------------------------------------
def scope_of(name_stack: str) -> str:
  """The innermost SCOPES name in a name stack / op_name such as 'jit(f)/transpose(jvp(action_decoder))/dot'."""
  best, where = OTHER, -1
  for scope in SCOPES:
    i = name_stack.rfind(scope)
    if i > where:
      best, where = scope, i
  return best


def _eqn_flops(eqn) -> float:
  name = eqn.primitive.name
  out = math.prod(eqn.outvars[0].aval.shape)
  if name == "dot_general":
    (contract, _), _ = eqn.params["dimension_numbers"]
    return 2.0 * out * math.prod(eqn.invars[0].aval.shape[i] for i in contract)
  if name == "conv_general_dilated":
    rhs, spec = eqn.invars[1].aval.shape, eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
    return 2.0 * out * rhs[spec[1]] * math.prod(rhs[i] for i in spec[2:])
  return 0.0


def _sub_jaxprs(eqn):
  """(jaxpr, multiplier) of the jaxprs an equation calls (scan bodies run `length` times; cond: every branch
  counted, which over-counts a cond's FLOPs -- none of our train steps has one)."""
  times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
  for value in eqn.params.values():
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
      if isinstance(v, jax_core.ClosedJaxpr):
        yield v.jaxpr, times
      elif isinstance(v, jax_core.Jaxpr):
        yield v, times


def _walk(jaxpr, prefix: str, times: float, totals: collections.Counter):
  for eqn in jaxpr.eqns:
    stack = f"{prefix}/{eqn.source_info.name_stack}"
    flops = _eqn_flops(eqn)
    if flops:
      totals[scope_of(stack)] += times * flops
    for sub, n in _sub_jaxprs(eqn):
      _walk(sub, stack, times * n, totals)


def flops_by_part(fn, *abstract_args) -> dict[str, float]:
  """Matmul and convolution FLOPs of one call of `fn` on `abstract_args` (ShapeDtypeStructs), by part."""
  totals = collections.Counter()
  _walk(jax.make_jaxpr(fn)(*abstract_args).jaxpr, "", 1.0, totals)
  return dict(totals)


# ---------------------------------------------------------------------------------------------------------
# The compiled step's ops: their part and source, from the HLO text's metadata
# ---------------------------------------------------------------------------------------------------------
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{([^}]*)\}")
_CONTROL_FLOW = re.compile(r" (conditional|while|call)\(")
_SECTIONS = ("FileNames", "FunctionNames", "FileLocations", "StackFrames")


def hlo_ops(hlo_text: str) -> dict[str, dict]:
  """Instruction name -> {part, op_name, source} for every instruction of the compiled HLO with metadata."""
  tables, current, ops = {s: {} for s in _SECTIONS}, None, {}
  for line in hlo_text.splitlines():
    if line in _SECTIONS:
      current = line
      continue
    if current and re.match(r"^\d+ ", line):
      key, rest = line.split(" ", 1)
      tables[current][int(key)] = rest.strip().strip('"')
      continue
    m = _INSTRUCTION.match(line)
    if m and not _CONTROL_FLOW.search(line):  # a cond's or loop's time is its body ops' (counted themselves)
      meta = dict(re.findall(r'(\w+)=("[^"]*"|\d+)', m.group(2)))
      op_name = meta.get("op_name", "").strip('"')
      ops[m.group(1)] = dict(part=scope_of(op_name), op_name=op_name,
                             source=_source(tables, int(meta.get("stack_frame_id", 0))))
  return ops


def _source(tables, frame_id: int) -> str:
  """The innermost two frames of our own code ('layers.py:79 Mlp.__call__ < action_decoder.py:98 ...') of a stack
  frame; in the printed table a frame's parent id is one above the parent's own line number."""
  frames, seen = [], set()
  while frame_id and frame_id not in seen and frame_id in tables["StackFrames"]:
    seen.add(frame_id)
    ids = dict(re.findall(r"(\w+)=(\d+)", tables["StackFrames"][frame_id]))
    loc = dict(re.findall(r"(\w+)=(\d+)", tables["FileLocations"].get(int(ids.get("file_location_id", 0)), "")))
    path = tables["FileNames"].get(int(loc.get("file_name_id", 0)), "")
    if path and "site-packages" not in path and "/lib/python" not in path:  # ours, not jax's, flax's or Python's
      frames.append(f"{path.rsplit('/', 1)[-1]}:{loc.get('line')} "
                    f"{tables['FunctionNames'].get(int(loc.get('function_name_id', 0)), '')}")
    frame_id = int(ids.get("parent_frame_id", 0)) - 1
  return " < ".join(frames[:2])


# ---------------------------------------------------------------------------------------------------------
# Tracing and the report
# ---------------------------------------------------------------------------------------------------------
def trace_op_times(trace_dir: str, names) -> dict[str, float]:
  """Total seconds per op in the newest perfetto trace under `trace_dir`, for ops in `names`."""
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime)
  if not files:
    raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir} (jax.profiler wrote no perfetto trace)")
  with gzip.open(files[-1]) as f:
    trace = json.load(f)
  totals = collections.Counter()
  for event in trace["traceEvents"] if isinstance(trace, dict) else trace:
    if event.get("ph") == "X" and event.get("name") in names:
      totals[event["name"]] += event.get("dur", 0) * 1e-6
  return dict(totals)


def profile_step(step, args, trace_dir: str, steps: int, step_fn, abstract_args, peak_flops: float,
                 top: int = 15) -> dict:
  """Traces `steps` calls of the compiled `step` (args -> args, e.g. (state, ema, batch) -> (state, ema,
  metrics): the first two outputs are fed back) into `trace_dir` and reports ops and parts (module doc).
  `step_fn`/`abstract_args`: the step's Python function and its abstract arguments (for FLOPs by part)."""
  ops = hlo_ops(step.as_text())
  state, ema, batch = args
  state, ema, m = step(state, ema, batch)  # warm
  jax.block_until_ready(m)
  t = time.perf_counter()
  jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  for _ in range(steps):
    state, ema, m = step(state, ema, batch)
  jax.block_until_ready(m)
  jax.profiler.stop_trace()
  wall = (time.perf_counter() - t) / steps
  times = {k: v / steps for k, v in trace_op_times(trace_dir, ops).items()}
  op_total = sum(times.values())
  flops = flops_by_part(step_fn, *abstract_args)
  part_time = collections.Counter()
  for name, seconds in times.items():
    part_time[ops[name]["part"]] += seconds
  parts = {}
  for part in list(SCOPES) + [OTHER]:
    if part in part_time or part in flops:
      s, f = part_time.get(part, 0.0), flops.get(part, 0.0)
      parts[part] = dict(ms=1e3 * s, time_fraction=s / op_total if op_total else float("nan"), gflop=f / 1e9,
                         flop_fraction=f / max(sum(flops.values()), 1.0),
                         mfu=f / s / peak_flops if s > 0 else float("nan"))
  ranked = sorted(times.items(), key=lambda kv: -kv[1])[:top]
  top_ops = [dict(op=name, ms=1e3 * s, fraction=s / op_total, part=ops[name]["part"], source=ops[name]["source"])
             for name, s in ranked]
  by_source = collections.Counter()
  for name, s in times.items():
    by_source[(ops[name]["part"], ops[name]["source"])] += s
  top_sources = [dict(part=part, source=source, ms=1e3 * s, fraction=s / op_total)
                 for (part, source), s in by_source.most_common(top)]
  return dict(trace_dir=os.path.abspath(trace_dir), steps=steps, step_ms_traced=1e3 * wall,
              op_ms_per_step=1e3 * op_total, parts=parts, top_ops=top_ops, top_sources=top_sources,
              state=(state, ema))


def format_report(profile: dict) -> str:
  """The profile as two plain-text tables (parts, then top ops)."""
  lines = [f"traced step {profile['step_ms_traced']:.1f} ms ({profile['op_ms_per_step']:.1f} ms in XLA ops); "
           f"trace: {profile['trace_dir']}",
           f"{'part':22s} {'ms':>8s} {'time':>6s} {'GFLOP':>8s} {'flops':>6s} {'MFU':>6s}"]
  for part, p in profile["parts"].items():
    lines.append(f"{part:22s} {p['ms']:8.1f} {p['time_fraction']:6.1%} {p['gflop']:8.3f} {p['flop_fraction']:6.1%} "
                 f"{p['mfu']:6.1%}")
  lines.append(f"{'source line (all its ops)':60s} {'ms':>7s} {'time':>6s}  part")
  for row in profile["top_sources"]:
    lines.append(f"{row['source'][:60]:60s} {row['ms']:7.2f} {row['fraction']:6.1%}  {row['part']}")
  lines.append(f"{'op':28s} {'ms':>7s} {'time':>6s}  {'part':20s} source")
  for op in profile["top_ops"]:
    lines.append(f"{op['op'][:28]:28s} {op['ms']:7.2f} {op['fraction']:6.1%}  {op['part']:20s} {op['source']}")
  return "\n".join(lines)
