"""One self-contained HTML page for one or more training runs (``slas report``).

A run directory is what ``slas.recipe.train.train`` writes: ``config.yaml``, ``metrics.jsonl`` (one JSON object per
iteration), ``samples/iter_{iteration:06d}.png`` (the fixed-prompt, fixed-seed grid drawn at each evaluation) and
``curves.png``. The page holds the config, one inline-SVG chart per metric (the runs overlaid, with a legend), the
sample grids in iteration order side by side across runs (so reward hacking shows as drift at fixed noise), and
the last evaluation of each run. Images are embedded as data URIs and the charts are drawn here, so the file works
offline, mailed or archived, with nothing fetched.

Missing or partial files (a run still going, or killed mid-write) become notes on the page, not errors; only a path
that is not a run directory at all is an error.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slas.recipe.metrics import read_metrics
from slas.recipe.run_dir import RunDir

__all__ = ["NotARunDirError", "write_report"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
GROUP_ORDER = ["train", "reward", "eval", "time"]  # metric sections in this order, then the rest alphabetically


class NotARunDirError(ValueError):
    """The path is not a run directory of ``slas train``."""


# ----------------------------------------------------------------------------
# Reading a run
# ----------------------------------------------------------------------------


@dataclass
class _Run:
    path: Path
    name: str = ""
    colour: str = ""
    config: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    grids: dict[int, Path] = field(default_factory=dict)  # iteration -> grid PNG
    notes: list[str] = field(default_factory=list)  # what is missing or partial, shown on the page


def _read_run(path: Path) -> _Run:
    if not path.exists():
        raise NotARunDirError(f"{path} does not exist")
    if not path.is_dir():
        raise NotARunDirError(f"{path} is a file, not a run directory")
    paths = RunDir(path)
    cfg_path, metrics_path = paths.config, paths.metrics
    if not cfg_path.is_file() and not metrics_path.is_file():
        raise NotARunDirError(f"{path} holds neither config.yaml nor metrics.jsonl; is it a run directory of "
                              "`slas train`?")
    run = _Run(path)

    if not cfg_path.is_file():
        run.notes.append("config.yaml is missing.")
    else:
        try:
            cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            run.notes.append(f"config.yaml is not valid YAML: {e}")
        else:
            if isinstance(cfg, dict):
                run.config = cfg
            else:
                run.notes.append(f"config.yaml holds a {type(cfg).__name__}, not a mapping.")

    if not metrics_path.is_file():
        run.notes.append("metrics.jsonl is missing: no curves and no evaluation table.")
    else:
        bad: list[int] = []
        run.rows = read_metrics(path, bad)
        if bad:
            run.notes.append(f"metrics.jsonl: {len(bad)} unreadable line(s) skipped (line {', '.join(map(str, bad[:5]))}"
                             f"{', ...' if len(bad) > 5 else ''}); a run killed mid-write leaves a torn last line.")
        if not run.rows:
            run.notes.append("metrics.jsonl holds no iterations yet.")

    run.grids = paths.grids()
    if not run.grids:
        run.notes.append("No sample grids (samples/iter_*.png): the run has not reached an evaluation.")
    return run


# ----------------------------------------------------------------------------
# Formatting helpers
# ----------------------------------------------------------------------------


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _config_value(v: Any) -> str:
    if isinstance(v, list) and v and all(isinstance(x, (str, int, float, bool)) or x is None for x in v):
        return "<br>".join(_esc(x) for x in v)
    if isinstance(v, (list, dict)) or v is None or isinstance(v, bool):
        return _esc(json.dumps(v))
    return _esc(v)


def _data_uri(path: Path) -> tuple[str, int] | str:
    """(data URI, width in pixels) of a PNG, or a message saying why it cannot be shown."""
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 24:
        return f"{path.name} is not a PNG file (truncated or still being written?)"
    width = int.from_bytes(data[16:20], "big")  # IHDR width: bytes 16-19 of every PNG
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), width


def _verdicts(grid: Path) -> str:
    """The strict verdicts of a ShapesWorld grid's cells (``samples/iter_*.jsonl`` beside ``iter_*.png``), one line
    a cell in reading order, for the grid's hover text; "" when there are none (other worlds, older runs)."""
    path = grid.with_suffix(".jsonl")
    try:
        recs = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, ValueError):
        return ""
    recs = [r for r in recs if isinstance(r, dict) and "correct" in r]
    if not recs:
        return ""
    lines = [f"strict verifier: {sum(bool(r['correct']) for r in recs)}/{len(recs)} pass"]
    for k, r in enumerate(recs, 1):
        reasons = [str(x) for x in r.get("reasons") or []]
        why = ": " + "; ".join(reasons) if reasons and not r["correct"] else ""
        lines.append(f"{k}. {'PASS' if r['correct'] else 'FAIL'} {r.get('prompt', '')}{why}")
    return "\n".join(lines)


def _img(path: Path, alt: str, css: str = "grid", target_width: int = 640, title: str | None = None) -> str:
    got = _data_uri(path)
    if isinstance(got, str):
        return f'<p class="note">{_esc(got)}</p>'
    uri, width = got
    # small images are scaled up by a whole factor (crisp when pixelated), wide ones shrunk to fit; a click shows
    # the natural size
    shown = width * max(1, min(4, target_width // max(width, 1))) if width <= target_width else target_width
    return f'<img class="{css}" src="{uri}" width="{shown}" alt="{_esc(alt)}" title="{_esc(title or alt)}">'


# ----------------------------------------------------------------------------
# SVG charts
# ----------------------------------------------------------------------------


def _nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About n round-numbered ticks inside [lo, hi]: steps of 1, 2, 2.5 or 5 x 10^k (no 2.5 and at least 1 when
    ``integer``)."""
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in ((1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)) if m * mag >= raw)
    if integer:
        step = max(1, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _padded(lo: float, hi: float) -> tuple[float, float]:
    """A range a little wider than [lo, hi], so points on the edge are not cut."""
    if hi == lo:  # a constant metric, or a single evaluation, still gets a visible axis
        d = abs(lo) * 0.1 or 1.0
        return lo - d, hi + d
    d = (hi - lo) * 0.04
    return lo - d, hi + d


def _svg_chart(metric: str, series: list[tuple[str, str, list[tuple[float, float]]]], legend: bool) -> str:
    """One metric: a line (and points, when sparse) per run, as inline SVG."""
    W, H, L, R, T, B = 360, 230, 58, 12, 26, 38  # size and margins, px: three charts side by side at 1200 px
    pts = [p for _, _, s in series for p in s]
    x0, x1 = _padded(min(x for x, _ in pts), max(x for x, _ in pts))
    y0, y1 = _padded(min(y for _, y in pts), max(y for _, y in pts))
    pw, ph = W - L - R, H - T - B

    def sx(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return T + (1 - (y - y0) / (y1 - y0)) * ph

    entries: list[tuple[float, int, str, str]] = []  # legend: (x, row, label, colour), wrapped to the width
    x, row = L, 0
    for name, colour, s in series if legend else []:
        label = name if s else f"{name} (no data)"
        w = 34 + 6.5 * len(label)  # swatch + text at ~6.5 px per character of the 11 px font
        if x > L and x + w > W:
            x, row = L, row + 1
        entries.append((x, row, label, colour))
        x += w
    legend_h = 16 * (row + 1) + 4 if legend else 0
    out = [f'<svg class="chart" width="{W}" height="{H + legend_h}" viewBox="0 0 {W} {H + legend_h}" role="img" '
           f'aria-label="{_esc(metric)}">',
           f'<text x="{W / 2}" y="16" text-anchor="middle" class="title">{_esc(metric)}</text>',
           f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" class="frame"/>']
    for t in _nice_ticks(y0, y1):
        y = sy(t)
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{y:.1f}" y2="{y:.1f}" class="gridline"/>'
                   f'<text x="{L - 5}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt(t)}</text>')
    for t in _nice_ticks(x0, x1, integer=True):  # iterations are integers
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{T}" y2="{T + ph}" class="gridline"/>'
                   f'<text x="{x:.1f}" y="{T + ph + 15}" text-anchor="middle" class="tick">{_fmt(t)}</text>')
    out.append(f'<text x="{L + pw / 2}" y="{H - 4}" text-anchor="middle" class="axis">iteration</text>')
    for name, colour, s in series:
        if len(s) > 1:
            line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
            out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        if len(s) <= 40:  # evaluation metrics are sparse: show each point, with its value on hover
            for x, y in s:
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}">'
                           f'<title>{_esc(name)} · iteration {x:g}: {_fmt(y)}</title></circle>')
    for x, row, label, colour in entries:
        y = H + 10 + 16 * row
        out.append(f'<g class="legend"><line x1="{x:.0f}" x2="{x + 22:.0f}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" '
                   f'stroke-width="3"/><text x="{x + 27:.0f}" y="{y}">{_esc(label)}</text></g>')
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------


def _section_config(runs: list[_Run]) -> str:
    flat = [_flatten(r.config) if r.config is not None else None for r in runs]
    keys = list(dict.fromkeys(k for f in flat if f for k in f))
    if not keys:
        return '<p class="note">No readable config.yaml.</p>'
    head = "".join(f"<th>{_esc(r.name)}</th>" for r in runs)
    body = []
    for k in keys:
        vals = [_config_value(f[k]) if f is not None and k in f else "—" for f in flat]
        differs = len(runs) > 1 and len(set(vals)) > 1
        cells = "".join(f"<td>{v}</td>" for v in vals)
        body.append(f'<tr{" class=differs" if differs else ""}><th>{_esc(k)}</th>{cells}</tr>')
    toggle = ('<label><input type="checkbox" id="only-diff"> show only the keys that differ between runs</label>'
              if len(runs) > 1 else "")
    return f'{toggle}<table class="config" id="config"><tr><th>key</th>{head}</tr>{"".join(body)}</table>'


def _group(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else "other"


def _metric_keys(runs: list[_Run]) -> list[str]:
    seen = dict.fromkeys(k for r in runs for row in r.rows for k, v in row.items() if k != "iteration" and _is_number(v))

    def order(k: str) -> tuple[int, str]:
        g = _group(k)
        return (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g)

    return sorted(seen, key=order)  # stable: first-appearance order within a group


def _section_curves(runs: list[_Run]) -> str:
    keys = _metric_keys(runs)
    if not keys:
        return '<p class="note">No metrics to plot.</p>'
    legend = len(runs) > 1
    parts, current = [], None
    for k in keys:
        g = _group(k)
        if g != current:
            if current is not None:
                parts.append("</div>")
            parts.append(f'<h3>{_esc(g)}</h3><div class="charts">')
            current = g
        series, n_bad = [], 0
        for r in runs:
            vals = [(row["iteration"], row[k]) for row in r.rows if _is_number(row.get(k))]
            finite = [(x, float(y)) for x, y in vals if math.isfinite(y)]
            n_bad += len(vals) - len(finite)
            series.append((r.name, r.colour, finite))
        if not any(s for _, _, s in series):
            chart = f'<p class="note">{_esc(k)}: every value is NaN or infinite.</p>'
        else:
            chart = _svg_chart(k, series, legend)
        note = f'<figcaption class="note">{n_bad} NaN/inf value(s) not drawn</figcaption>' if n_bad else ""
        parts.append(f'<figure data-metric="{_esc(k)}">{chart}{note}</figure>')
    parts.append("</div>")
    return "".join(parts)


def _grid_img(run: _Run, iteration: int, target: int) -> str:
    """A run's grid of ``iteration``; hovering shows each cell's strict verdict and reason where recorded."""
    alt = f"{run.name} iteration {iteration}"
    verdicts = _verdicts(run.grids[iteration])
    return _img(run.grids[iteration], alt, target_width=target, title=f"{alt}\n{verdicts}" if verdicts else alt)


def _section_samples(runs: list[_Run]) -> str:
    iters = sorted({i for r in runs for i in r.grids})
    if not iters:
        return '<p class="note">No sample grids in any run.</p>'
    by_prompts: dict[tuple[str, ...], list[str]] = {}  # grid prompts -> the runs that use them
    for r in runs:
        gp = ((r.config or {}).get("eval") or {}).get("grid_prompts")
        if isinstance(gp, list) and gp:
            by_prompts.setdefault(tuple(map(str, gp)), []).append(r.name)
    prompts = []
    for gp, names in by_prompts.items():
        who = "every run" if len(names) == len(runs) and len(runs) > 1 else ", ".join(names)
        items = "".join(f"<li>{_esc(p)}</li>" for p in gp)
        prompts.append(f"<p>{_esc(who)}: <code>eval.grid_prompts</code>, in reading order:</p><ol>{items}</ol>")
    intro = ("<p>Each grid is drawn at an evaluation with the same prompts and the same seeds, so a change between rows "
             "is the policy's doing, not the noise's. Click a grid to enlarge it; hover it for each image's strict "
             "verdict and its reason (ShapesWorld runs).</p>" + "".join(prompts))
    head = "".join(f"<th>{_esc(r.name)}</th>" for r in runs)
    target = max(200, 1000 // len(runs))  # the runs side by side fit a 1200 px window, unless there are many
    rows = []
    for i in iters:
        cells = "".join(f"<td>{_grid_img(r, i, target) if i in r.grids else '—'}</td>" for r in runs)
        rows.append(f"<tr><th>iteration {i}</th>{cells}</tr>")
    return f'{intro}<table class="samples"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _section_eval(runs: list[_Run]) -> str:
    evals = []
    for r in runs:
        erows = [row for row in r.rows if any(k.startswith("eval/") for k in row)]
        evals.append((erows[0], erows[-1]) if erows else None)
    keys = list(dict.fromkeys(k for e in evals if e for k in e[1] if k.startswith("eval/")))
    if not keys:
        return '<p class="note">No evaluation in any run (no <code>eval/*</code> keys in metrics.jsonl).</p>'
    when = [f"iteration {e[1]['iteration']}" if e else "no eval" for e in evals]
    head = "".join(f"<th>{_esc(r.name)}<br><small>{w}</small></th>" for r, w in zip(runs, when, strict=True))
    body = []
    for k in keys:
        cells = []
        for e in evals:
            v = e[1].get(k) if e else None
            if not _is_number(v):
                cells.append("<td>—</td>")
                continue
            first = e[0].get(k)
            delta = ""
            if e[0] is not e[1] and _is_number(first):
                delta = f' <small class="delta">({v - first:+.4g} since iteration {e[0]["iteration"]})</small>'
            cells.append(f"<td>{_fmt(float(v))}{delta}</td>")
        body.append(f"<tr><th>{_esc(k)}</th>{''.join(cells)}</tr>")
    return f'<table class="eval"><tr><th>metric (last eval)</th>{head}</tr>{"".join(body)}</table>'


def _section_curves_png(runs: list[_Run]) -> str:
    parts = []
    for r in runs:
        p = RunDir(r.path).curves
        img = _img(p, f"{r.name} curves.png", css="curves") if p.is_file() else '<p class="note">no curves.png</p>'
        parts.append(f"<details><summary>{_esc(r.name)}: curves.png (drawn by training)</summary>{img}</details>")
    return "".join(parts)


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;background:#fff;max-width:1800px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px;color:#555}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f6f6f6;font-weight:600}table.config td{font-family:ui-monospace,monospace;font-size:12px}
tr.differs td{background:#fff4cc}.only-diff tr:not(.differs):not(:first-child){display:none}
.note{color:#a04000}.notes li{color:#a04000}.delta{color:#666}
.charts{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0}figcaption{font-size:12px}
svg.chart{background:#fff;font:11px system-ui,sans-serif}svg .title{font-size:13px;font-weight:600}
svg .frame{fill:none;stroke:#999}svg .gridline{stroke:#eee}svg .tick{fill:#555}svg .axis{fill:#333}
img.grid,img.curves{image-rendering:pixelated;cursor:zoom-in;border:1px solid #ccc}img.zoom{width:auto;max-width:95vw;
cursor:zoom-out}.legend-top span{display:inline-block;margin-right:16px}.legend-top i{display:inline-block;width:22px;
height:4px;margin-right:6px;vertical-align:middle}
"""

JS = """
document.addEventListener('click', function (e) {
  if (e.target.tagName === 'IMG') e.target.classList.toggle('zoom');
});
var box = document.getElementById('only-diff');
if (box) box.addEventListener('change', function () {
  document.getElementById('config').classList.toggle('only-diff', box.checked);
});
"""


def write_report(run_dirs: Sequence[str | Path], out_path: str | Path) -> Path:
    """Write one self-contained ``report.html`` for the given run directories; returns its path.

    Raises ``NotARunDirError`` (a ``ValueError``) for a path that is not a run directory of ``slas train``.
    """
    if not run_dirs:
        raise ValueError("give at least one run directory")
    runs = [_read_run(Path(p)) for p in run_dirs]
    names = [r.path.name or str(r.path) for r in runs]
    if len(set(names)) < len(names):  # two runs called "run" in different folders: tell them apart by path
        names = [str(r.path) for r in runs]
    for i, (r, n) in enumerate(zip(runs, names, strict=True)):
        r.name = n
        r.colour = PALETTE[i % len(PALETTE)]

    notes = "".join(f"<li><b>{_esc(r.name)}</b>: {_esc(n)}</li>" for r in runs for n in r.notes)
    legend = ""
    if len(runs) > 1:
        legend = '<p class="legend-top">' + "".join(
            f'<span><i style="background:{r.colour}"></i>{_esc(r.name)}</span>' for r in runs) + "</p>"
    summary = "".join(
        f"<li><b>{_esc(r.name)}</b>: <code>{_esc(r.path.resolve())}</code>, {len(r.rows)} iteration(s) logged"
        + (f" (last {r.rows[-1]['iteration']})" if r.rows else "") + f", {len(r.grids)} sample grid(s)</li>"
        for r in runs)
    title = "slas report: " + ", ".join(r.name for r in runs)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_esc(title)}</title><style>{CSS}</style></head><body>
<h1>{_esc(title)}</h1><ul>{summary}</ul>
{f'<h2>Missing or partial files</h2><ul class="notes">{notes}</ul>' if notes else ''}
<h2>Evaluation (last eval of each run)</h2>{_section_eval(runs)}
<h2>Metric curves</h2>{legend}{_section_curves(runs)}
<h2>Samples over training</h2>{_section_samples(runs)}
<h2>Config</h2>{_section_config(runs)}
<h2>Training's own plot</h2>{_section_curves_png(runs)}
<script>{JS}</script>
</body></html>
"""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
