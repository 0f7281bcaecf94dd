"""Evaluation outputs: report.json (every cell, config, step, seeds), report.html, labelled rollout videos,
TensorBoard scalars. Several evaluated steps accumulate in one report (success versus checkpoint step)."""

import datetime
import html
import json
import math
import os

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw

from vam import atomic

FORMAT = "vam-eval-report-v1"
Z95 = 1.959964


def wilson(successes: int, n: int) -> tuple[float, float]:
  """95% Wilson score interval of a binomial proportion (well-behaved at 0 and 1 and for small n)."""
  if n == 0:
    return 0.0, 1.0
  p = successes / n
  centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
  half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
  return max(0.0, centre - half), min(1.0, centre + half)


def cell_summary(embodiment: str, result: dict) -> dict:
  n, k = len(result["success"]), int(sum(result["success"]))
  lo, hi = wilson(k, n)
  return dict(embodiment=embodiment, task=result["task"], mode=result["mode"], split=result["split"], episodes=n,
              successes=k, success_rate=k / max(n, 1), ci95=[lo, hi], seeds=result["seeds"],
              steps_to_success=result["steps_to_success"], instructions=result["instructions"])


def means(cells: list[dict]) -> dict:
  """Mean success rate overall and along each axis (episode-weighted)."""
  def mean(sel):
    n = sum(c["episodes"] for c in sel)
    return sum(c["successes"] for c in sel) / n if n else float("nan")
  out = dict(overall=mean(cells))
  for axis in ("embodiment", "task", "mode", "split"):
    out[f"by_{axis}"] = {v: mean([c for c in cells if c[axis] == v]) for v in dict.fromkeys(c[axis] for c in cells)}
  return out


def load(path: str) -> dict:
  if os.path.exists(path):
    with open(path) as f:
      report = json.load(f)
    if report.get("format") == FORMAT:
      return report
  return empty()


def empty() -> dict:
  return dict(format=FORMAT, evaluations=[])


def add(report: dict, evaluation: dict) -> dict:
  """Adds (or replaces) the evaluation of one step; evaluations stay sorted by step."""
  kept = [e for e in report["evaluations"] if e["step"] != evaluation["step"]]
  report["evaluations"] = sorted(kept + [evaluation], key=lambda e: e["step"])
  report["updated"] = datetime.datetime.now().isoformat(timespec="seconds")
  return report


_write_text = atomic.write_text  # readers never see a half-written file


def write_json(report: dict, path: str) -> None:
  atomic.write_json(path, report)


def add_evaluation(path: str, evaluation: dict, workdir: str) -> dict:
  """Adds `evaluation` to the report at `path` under its lock (evaluations writing one `--out` at once keep
  each other's); returns the report written."""

  def update(old):
    rep = add(old if old.get("format") == FORMAT else empty(), evaluation)
    rep["workdir"] = workdir
    return rep

  return atomic.update_json(path, update, empty)


# ---- videos -----------------------------------------------------------------------------------------------
def captioned_mp4(frames, lines_of, path: str, border=(30, 30, 30), pad: int = 0, scale: int = 4,
                  fps: int = 10) -> str:
  """(T, H, W, 3) uint8 -> MP4 of the frames upscaled `scale`x on a `border`-coloured canvas with two caption
  lines under each frame (`lines_of(t) -> (line1, line2)`)."""
  out = []
  for t, frame in enumerate(frames):
    img = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
    canvas = Image.new("RGB", (img.width + 2 * pad, img.height + 2 * pad + 28), border)
    canvas.paste(img, (pad, pad))
    draw = ImageDraw.Draw(canvas)
    first, second = lines_of(t)
    draw.text((pad + 2, img.height + 2 * pad), first, fill=(255, 255, 255))
    draw.text((pad + 2, img.height + 2 * pad + 12), second, fill=(220, 220, 220))
    out.append(np.asarray(canvas))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  imageio.mimwrite(path, out, fps=fps, macro_block_size=1)
  return path


def write_video(frames: np.ndarray, path: str, success: bool, caption: str, scale: int = 4, fps: int = 10) -> str:
  """(T, H, W, 3) uint8 -> MP4 with a green (success) or red (failure) border and a caption."""
  colour = (40, 200, 60) if success else (220, 40, 40)
  return captioned_mp4(frames, lambda t: (f"{'SUCCESS' if success else 'FAILURE'}  t={t}", caption[:48]), path,
                       border=colour, pad=4, scale=scale, fps=fps)


# ---- HTML -------------------------------------------------------------------------------------------------
def _svg_line(title: str, pts, x_labels, y_top: float, colour: str, point_label) -> str:
  """Inline SVG polyline of (x in [0, 1], y in [0, 1]) points, with hover labels and axis ends."""
  w, h, pad = 480, 200, 40
  xy = [(pad + (w - 2 * pad) * x, h - pad - (h - 2 * pad) * y) for x, y in pts]
  line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
  dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{point_label(i)}</title></circle>'
                 for i, (x, y) in enumerate(xy))
  return (f'<h2>{title}</h2><svg width="{w}" height="{h}" style="border:1px solid #ccc">'
          f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>{dots}'
          f'<text x="{pad}" y="{h - 10}">{x_labels[0]}</text><text x="{w - pad - 60}" y="{h - 10}">{x_labels[1]}</text>'
          f'<text x="4" y="{pad}">{y_top:.3g}</text><text x="4" y="{h - pad}">0</text></svg>')


def _plot(evaluations) -> str:
  """Mean success versus checkpoint step."""
  pts = [(e["step"], e["means"]["overall"]) for e in evaluations]
  if len(pts) < 2:
    return ""
  s0, s1 = min(p[0] for p in pts), max(p[0] for p in pts)
  return _svg_line("Mean success versus step", [((s - s0) / max(s1 - s0, 1), r) for s, r in pts],
                   (f"step {s0}", f"step {s1}"), 1.0, "#36c", lambda i: f"step {pts[i][0]}: {pts[i][1]:.2f}")


TASK_COLOURS = ("#36c", "#c63", "#393", "#939", "#999", "#c93")  # one per task, in order of appearance
EMBODIMENT_DASHES = ("", "6 4", "2 3", "10 3 2 3")  # one per embodiment


def success_curves(evaluations) -> dict[tuple[str, str], list[tuple[int, float, int]]]:
  """{(embodiment, task): [(step, success rate, episodes), ...]} over the evaluated steps, modes and splits
  pooled; steps in increasing order."""
  curves = {}
  for e in sorted(evaluations, key=lambda e: e["step"]):
    pooled = {}
    for c in e.get("cells", []):
      k = pooled.setdefault((c["embodiment"], c["task"]), [0, 0])
      k[0] += c["successes"]
      k[1] += c["episodes"]
    for key, (wins, n) in pooled.items():
      if n:  # a cell with no episodes has no rate to draw
        curves.setdefault(key, []).append((e["step"], wins / n, n))
  return curves


def success_curves_svg(evaluations, title: str = "Success versus training step") -> str | None:
  """A standalone SVG: success rate (0-1) against checkpoint step, one line per (embodiment, task) -- colour
  by task, dash by embodiment -- with a legend and a tick at every evaluated step. None below two steps."""
  curves = success_curves(evaluations)
  steps = sorted({s for pts in curves.values() for s, _, _ in pts})
  if len(steps) < 2:
    return None
  tasks = list(dict.fromkeys(t for _, t in curves))
  embodiments = list(dict.fromkeys(e for e, _ in curves))
  w, h, left, right, top, bottom = 640, 300, 48, 150, 30, 40
  x = lambda s: left + (w - left - right) * (s - steps[0]) / (steps[-1] - steps[0])
  y = lambda r: top + (h - top - bottom) * (1.0 - r)
  out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{left}" y="18" font-size="13">{html.escape(title)}</text>']
  for r in (0.0, 0.25, 0.5, 0.75, 1.0):
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(r):.1f}" y2="{y(r):.1f}" stroke="#ddd"/>'
               f'<text x="{left - 6}" y="{y(r) + 4:.1f}" text-anchor="end">{r:g}</text>')
  for s in steps[::max(1, math.ceil(len(steps) / 8))]:  # at most ~8 step labels, so they never overlap
    out.append(f'<text x="{x(s):.1f}" y="{h - bottom + 14}" text-anchor="middle">{s}</text>')
  out.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 6}" text-anchor="middle">training step</text>')
  for i, ((emb, task), pts) in enumerate(curves.items()):
    colour = TASK_COLOURS[tasks.index(task) % len(TASK_COLOURS)]
    dash = EMBODIMENT_DASHES[embodiments.index(emb) % len(EMBODIMENT_DASHES)]
    stroke = f'stroke="{colour}" stroke-width="2"' + (f' stroke-dasharray="{dash}"' if dash else "")
    name, line = html.escape(f"{emb} {task}"), " ".join(f"{x(s):.1f},{y(r):.1f}" for s, r, _ in pts)
    out.append(f'<polyline points="{line}" fill="none" {stroke}><title>{name}</title></polyline>')
    out.extend(f'<circle cx="{x(s):.1f}" cy="{y(r):.1f}" r="2.5" fill="{colour}"><title>{name}, step {s}: '
               f'{r:.2f} (n={n})</title></circle>' for s, r, n in pts)
    ly = top + 14 * i  # its legend entry
    out.append(f'<line x1="{w - right + 10}" x2="{w - right + 36}" y1="{ly}" y2="{ly}" {stroke}/>'
               f'<text x="{w - right + 40}" y="{ly + 4}">{name}</text>')
  out.append("</svg>")
  return "".join(out)


def success_table(cells) -> str:
  cols = list(dict.fromkeys((c["mode"], c["split"]) for c in cells))
  rows = list(dict.fromkeys((c["embodiment"], c["task"]) for c in cells))
  by = {(c["embodiment"], c["task"], c["mode"], c["split"]): c for c in cells}
  head = "".join(f"<th>{m}<br>{s}</th>" for m, s in cols)
  body = ""
  for e, t in rows:
    tds = ""
    for m, s in cols:
      c = by.get((e, t, m, s))
      tds += (f"<td>{c['success_rate']:.2f} <small>[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}] n={c['episodes']}</small></td>"
              if c else "<td></td>")
    body += f"<tr><td>{e}</td><td>{t}</td>{tds}</tr>"
  return f"<table><tr><th>embodiment</th><th>task</th>{head}</tr>{body}</table>"


# The video evaluation's predictors (vam/eval/video.py), in table order.
VIDEO_ROWS = (("predicted", "predicted future (sampled)"), ("predicted_mean", "predicted future (mean, 1 step)"),
              ("copy_last", "copy last context frame"), ("copy_last_latent", "copy last latent (decoded)"),
              ("reconstruction", "autoencoder reconstruction"))


def video_table(video: dict) -> str:
  """Video metrics as rows of (what, PSNR, SSIM)."""
  rows = [(label, video.get(f"{key}_psnr"), video.get(f"{key}_ssim")) for key, label in VIDEO_ROWS]
  return "".join(f"<tr><td>{k}</td><td>{p:.2f}</td><td>{q:.4f}</td></tr>" for k, p, q in rows if p is not None)


def video_horizon_table(video: dict) -> str:
  """PSNR of each predictor and the latent MSEs by horizon (columns: steps ahead), as HTML rows."""
  h = video.get("by_horizon")
  if not h:
    return ""
  fmt = lambda x, f: "" if x is None else format(x, f)
  head = "".join(f"<th>+{n} steps ({n / 10:.1f} s)</th>" for n in h["steps_ahead"])
  rows = [(f"{label}: PSNR dB", h.get(f"{key}_psnr"), ".2f") for key, label in VIDEO_ROWS]
  rows += [("mean prediction: latent MSE", h.get("mean_latent_mse"), ".4f"),
           ("copy last latent: latent MSE", h.get("copy_last_latent_mse"), ".4f")]
  body = "".join(f"<tr><td>{label}</td>" + "".join(f"<td>{fmt(x, f)}</td>" for x in vals) + "</tr>"
                 for label, vals, f in rows if vals)
  return f"<h2>By horizon</h2><table><tr><th></th>{head}</tr>{body}</table>"


def _video_plot(evaluations) -> str:
  """Validation flow loss versus tau_v (latest evaluation)."""
  losses = evaluations[-1]["video"].get("loss_by_tau")
  if not losses:
    return ""
  pts = [(float(t), v) for t, v in losses.items()]
  top = max(v for _, v in pts) or 1.0
  return _svg_line("Validation flow loss versus tau_v (fixed noise)", [(t, v / top) for t, v in pts],
                   ("tau 0", "tau 1"), top, "#c63", lambda i: f"tau {pts[i][0]:.3f}: {pts[i][1]:.4f}")


def write_html(report: dict, path: str) -> None:
  latest = report["evaluations"][-1]
  if "video" in latest:
    v = latest["video"]
    parts = [f"<h1>vam video evaluation: {html.escape(report.get('workdir', ''))}</h1>",
             f"<p>step {latest['step']}; {v['clips']} held-out clips; {latest['eval_seconds']:.0f} s</p>",
             "<h2>Future frames on held-out clips</h2><table><tr><th></th><th>PSNR (dB)</th><th>SSIM</th></tr>"
             f"{video_table(v)}</table>", video_horizon_table(v), _video_plot(report["evaluations"])]
  else:
    parts = _policy_html(latest, report)
  if latest.get("videos"):
    vids = "".join(f'<figure><video src="{html.escape(os.path.relpath(v["path"], os.path.dirname(path)))}" '
                   f'controls loop muted></video><figcaption>{html.escape(v["label"])}</figcaption></figure>'
                   for v in latest["videos"])
    parts.append(f'<h2>Videos</h2><div style="display:flex;flex-wrap:wrap">{vids}</div>')
  style = "<style>body{font-family:sans-serif} td,th{border:1px solid #ccc;padding:3px 6px} table{border-collapse:collapse}</style>"
  _write_text(path, f"<!doctype html><html><head><meta charset='utf-8'><title>vam eval</title>{style}</head><body>"
              + "".join(parts) + "</body></html>")


def write_curves_svg(report: dict, path: str) -> bool:
  """Writes `success_curves_svg` of the report's evaluations to `path`; False (nothing written) below two
  evaluated steps or for a report without success cells (a video run's)."""
  svg = success_curves_svg(report["evaluations"])
  if svg:
    _write_text(path, svg)
  return bool(svg)


def _policy_html(latest: dict, report: dict) -> list[str]:
  parts = [f"<h1>vam evaluation: {html.escape(report.get('workdir', ''))}</h1>",
           f"<p>step {latest['step']}; mean success {latest['means']['overall']:.3f}; "
           f"{sum(c['episodes'] for c in latest['cells'])} episodes; {latest['eval_seconds']:.0f} s</p>",
           "<h2>Success rate [95% Wilson interval]</h2>", success_table(latest["cells"]), _plot(report["evaluations"]),
           success_curves_svg(report["evaluations"]) or ""]
  if latest.get("offline"):
    ref = lambda v, k, unit: f"<td>{v[k + unit]:.4f}</td>" if k + unit in v else "<td></td>"
    rows = "".join(f"<tr><td>{k}</td><td>{v['rmse_normalised']:.4f}</td>{ref(v, 'hold_', 'rmse_normalised')}"
                   f"{ref(v, 'last_', 'rmse_normalised')}<td>{v['rmse_native']:.4f}</td>"
                   f"{ref(v, 'hold_', 'rmse_native')}{ref(v, 'last_', 'rmse_native')}<td>{v['entries']}</td></tr>"
                   for k, v in latest["offline"].items())
    parts.append("<h2>Offline action error on held-out episodes (RMSE): the policy, and the references 'hold "
                 "still' and 'repeat the last action'</h2><table><tr><th>slot</th><th>normalised</th><th>hold</th>"
                 f"<th>last</th><th>native</th><th>hold</th><th>last</th><th>entries</th></tr>{rows}</table>")
  if latest.get("state_estimate"):
    parts.append(f"<p>{html.escape(state_estimate_line(latest['state_estimate']))}</p>")
  parts.append(_tau_v_plot(latest))
  return parts


def state_estimate_line(estimate: dict) -> str:
  """One line: how far (held out, mean distance) the privileged-state probe puts the target and the object."""
  return "held-out state estimate (probe), mean distance: " + ", ".join(
      f"{part} {v['error_m'] * 100:.1f} cm (training mean {v['mean_error_m'] * 100:.1f} cm)"
      for part, v in estimate.items())


def _tau_v_plot(evaluation: dict) -> str:
  """A video-action model's offline action error (normalised RMSE over all slots) versus inference tau_v."""
  curve = tau_v_curve(evaluation)
  if len(curve) < 2:
    return ""
  top = max(v for _, v in curve) or 1.0
  return _svg_line(f"Offline action error versus inference tau_v (layer k={evaluation['model']['layer']})",
                   [(t, v / top) for t, v in curve], ("tau_v 0", "tau_v 1"), top, "#393",
                   lambda i: f"tau_v {curve[i][0]:g}: RMSE {curve[i][1]:.4f}")


def tau_v_curve(evaluation: dict) -> list[tuple[float, float]]:
  """[(tau_v, normalised RMSE pooled over every slot)] of a VAM evaluation (empty for other policies)."""
  out = []
  for t, slots in evaluation.get("offline_by_tau_v", {}).items():
    n = sum(v["entries"] for v in slots.values())
    out.append((float(t), float(np.sqrt(sum(v["rmse_normalised"] ** 2 * v["entries"] for v in slots.values()) / n))))
  return sorted(out)


def text_table(evaluation: dict) -> str:
  """The success table (or the video metrics) as fixed-width text (for the terminal)."""
  if "video" in evaluation:
    v = evaluation["video"]
    lines = [f"{'held-out clips (' + str(v['clips']) + ')':34s} {'PSNR dB':>8s} {'SSIM':>7s}"]
    for key, label in VIDEO_ROWS:
      if f"{key}_psnr" in v:
        lines.append(f"{label:34s} {v[key + '_psnr']:8.2f} {v[key + '_ssim']:7.4f}")
    if "by_horizon" in v:
      h = v["by_horizon"]
      lines.append("PSNR by horizon (steps ahead " + ", ".join(f"+{n}" for n in h["steps_ahead"]) + "): " +
                   "; ".join(f"{key} " + " ".join("-" if x is None else f"{x:.2f}" for x in h[f"{key}_psnr"])
                             for key in ("predicted_mean", "copy_last", "copy_last_latent") if f"{key}_psnr" in h))
      lines.append("latent MSE by horizon: mean " + " ".join(f"{x:.4f}" for x in h["mean_latent_mse"] if x is not None)
                   + "; copy-last " + " ".join(f"{x:.4f}" for x in h["copy_last_latent_mse"] if x is not None))
    if "loss_by_tau" in v:
      lines.append("val flow loss by tau_v: " + "  ".join(f"{float(t):.2f}:{x:.3f}" for t, x in v["loss_by_tau"].items()))
    lines.append(f"(step {evaluation['step']})")
    return "\n".join(lines)
  cells = evaluation["cells"]
  cols = list(dict.fromkeys((c["mode"], c["split"]) for c in cells))
  rows = list(dict.fromkeys((c["embodiment"], c["task"]) for c in cells))
  by = {(c["embodiment"], c["task"], c["mode"], c["split"]): c for c in cells}
  lines = [f"{'embodiment':<11}{'task':<11}" + "".join(f"{m + '/' + s:>24}" for m, s in cols)]
  for e, t in rows:
    vals = []
    for m, s in cols:
      c = by.get((e, t, m, s))
      vals.append(f"{c['success_rate']:.2f} [{c['ci95'][0]:.2f},{c['ci95'][1]:.2f}]" if c else "")
    lines.append(f"{e:<11}{t:<11}" + "".join(f"{v:>24}" for v in vals))
  lines.append(f"mean success {evaluation['means']['overall']:.3f} (step {evaluation['step']})")
  for slot, v in evaluation.get("offline", {}).items():
    if slot.endswith("_joints") and "hold_rmse_native" in v:
      lines.append(f"offline {slot} RMSE (native): policy {v['rmse_native']:.4f}, hold still "
                   f"{v['hold_rmse_native']:.4f}, repeat last {v['last_rmse_native']:.4f}")
  if evaluation.get("state_estimate"):
    lines.append(state_estimate_line(evaluation["state_estimate"]))
  curve = tau_v_curve(evaluation)
  if curve:
    lines.append("offline action RMSE (normalised) by inference tau_v (imagined future): " +
                 "  ".join(f"{t:g}:{v:.4f}" for t, v in curve))
  if evaluation.get("future_oracle"):
    lines.extend(oracle_lines(evaluation["future_oracle"]))
  return "\n".join(lines)


def oracle_lines(oracle: dict) -> list[str]:
  """The future oracle (vam/eval/offline.py `future_oracle`) as text: one row per way of giving the decoder its
  future, normalised RMSE over the executed steps, the steps the future frames cover and those beyond."""
  k, cov = oracle["executed_steps"], oracle["future_steps"]
  lines = [f"future oracle (held-out windows, normalised action RMSE), chunk steps: {'0-' + str(k - 1):>8}"
           f"{'0-' + str(cov - 1) + ' (seen)':>14}{'beyond':>9}"]
  for name, r in oracle["rows"].items():
    beyond = "-" if r["beyond"] is None else f"{r['beyond']:.4f}"
    label = f"imagined@{oracle['imagined_tau_v']:g}" if name == "imagined" else name
    lines.append(f"  {label:<68}{r['executed']:8.4f}{r['covered']:14.4f}{beyond:>9}")
  lines.append(f"  true future / context only (steps 0-{k - 1}): {oracle['oracle_ratio']:.3f}")
  if "future_state_mse" in oracle:
    lines.append("  future-state probe, MSE of the proprio at the future frames: " +
                 ", ".join(f"{k} {v:.4f}" for k, v in oracle["future_state_mse"].items()))
  return lines
