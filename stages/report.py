"""The build report: `report.json` (every stage's section) rendered to a self-contained `report.html`.

Plots are inline SVG (no JavaScript, no network, opens from a device's disk): latency distribution
(validate), time per op type (onnxruntime profiling, measured by package), accuracy per quantization
candidate (quantize). A stage module may add its own HTML by defining `report_html(section) -> str`;
a fragment that fails to render is replaced by a note, never a failed build.
"""

from __future__ import annotations

import html
import importlib
import json
from typing import Any, Iterable

from edgeship.stages.registry import BUILTIN_MODULES

PALETTE = ["#3b6ea5", "#e07b39", "#5a9e4b", "#b04a5a", "#7a5aa6", "#8c7b4f"]


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --- SVG charts ---------------------------------------------------------------------------------

def _text_width(text: str, size: int = 11) -> float:
    """A generous estimate of a text's width in px (no font metrics in a static SVG)."""
    return len(text) * size * 0.62


def bar_chart(items: Iterable[tuple[str, float]], title: str, unit: str = "", width: int = 560) -> str:
    """Horizontal bars, one per (label, value), largest first."""
    rows = [(str(k), float(v)) for k, v in items if v is not None]
    if not rows:
        return ""
    rows.sort(key=lambda kv: kv[1], reverse=True)
    rows = rows[:25]
    top = max(v for _, v in rows) or 1.0
    label_w, bar_h, pad = 170, 18, 4
    height = 28 + len(rows) * (bar_h + pad)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>']
    for i, (label, value) in enumerate(rows):
        y = 26 + i * (bar_h + pad)
        w = max(1.0, (width - label_w - 90) * value / top)
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" font-size="11" text-anchor="end">{_esc(label[:28])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{PALETTE[0]}"><title>{_esc(label)}: {value:.4g} {unit}</title></rect>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="11">{value:.3g} {_esc(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(series: dict[str, list[float]], title: str, unit: str = "ms", bins: int = 24, width: int = 560) -> str:
    """Overlaid histograms, one colour per series (e.g. single thread / all threads)."""
    series = {k: [float(x) for x in v] for k, v in series.items() if v}
    if not series:
        return ""
    every = sorted(x for v in series.values() for x in v)
    lo = every[0]
    hi = every[min(len(every) - 1, int(0.98 * (len(every) - 1) + 0.5))]  # outliers go to the last bin
    clipped = hi < every[-1]
    span = (hi - lo) or max(hi, 1e-9) * 0.1 or 1.0
    counts = {}
    for name, values in series.items():
        c = [0] * bins
        for x in values:
            c[min(bins - 1, int((x - lo) / span * bins))] += 1
        counts[name] = c
    peak = max(max(c) for c in counts.values()) or 1
    left, top, plot_w, plot_h = 40, 26, width - 60, 150
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + plot_h + 50}" role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#555"/>']
    bw = plot_w / bins
    for s, (name, c) in enumerate(counts.items()):
        colour = PALETTE[s % len(PALETTE)]
        for i, n in enumerate(c):
            if n:
                h = plot_h * n / peak
                parts.append(f'<rect x="{left + i * bw:.1f}" y="{top + plot_h - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" '
                             f'fill="{colour}" fill-opacity="0.55"><title>{_esc(name)}: {n} runs</title></rect>')
        parts.append(f'<rect x="{left + 10 + s * 150}" y="{top + plot_h + 30}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + 24 + s * 150}" y="{top + plot_h + 39}" font-size="11">{_esc(name)} (n={len(series[name])})</text>')
    parts.append(f'<text x="{left}" y="{top + plot_h + 16}" font-size="11">{lo:.3g} {unit}</text>')
    right = f"{'≥ ' if clipped else ''}{hi:.3g} {unit}"
    parts.append(f'<text x="{left + plot_w}" y="{top + plot_h + 16}" font-size="11" text-anchor="end">{_esc(right)}</text>')
    first = sorted(next(iter(series.values())))
    for row, (label, q) in enumerate((("p50", 0.50), ("p95", 0.95))):
        value = first[min(len(first) - 1, int(q * (len(first) - 1) + 0.5))]
        x = left + min(1.0, (value - lo) / span) * plot_w
        text = f"{label} {value:.3g}"
        tx, anchor = (x + 3, "start") if x + 3 + _text_width(text, 10) <= width else (x - 3, "end")
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#333" stroke-dasharray="4 3"/>'
                     f'<text x="{tx:.1f}" y="{top + 10 + 12 * row}" font-size="10" text-anchor="{anchor}">{text}</text>')
    parts.append("</svg>")
    return "".join(parts)


def grouped_bars(groups: list[tuple[str, dict[str, float]]], title: str, width: int = 640,
                 goal: dict | None = None) -> str:
    """One row per group (candidate), one bar per metric, each metric scaled to its own maximum.

    The budget's metric (`goal`: {metric, bound, direction}) comes first, its legend entry says the
    bound and a dashed line marks it on its bars. Legend entries wrap so every one is inside the SVG."""
    goal = goal if isinstance(goal, dict) and isinstance(goal.get("metric"), str) else {}
    present = {m for _, vals in groups for m, v in vals.items() if isinstance(v, (int, float))}
    if not groups or not present:
        return ""
    metrics = sorted(present, key=lambda m: (m != goal.get("metric"), m))
    bound = goal.get("bound") if isinstance(goal.get("bound"), (int, float)) else None
    tops = {m: max(abs(float(vals[m])) for _, vals in groups if isinstance(vals.get(m), (int, float))) or 1.0 for m in metrics}
    if bound is not None and goal.get("metric") in tops:
        tops[goal["metric"]] = max(tops[goal["metric"]], abs(float(bound)))
    legend, x, y = [], 0.0, 24
    for j, m in enumerate(metrics):
        label = m
        if m == goal.get("metric") and bound is not None:
            label = f"{m} (budget: {goal.get('direction', 'min')} {bound:g})"
        step = 18 + _text_width(label) + 16
        if x and x + step > width:
            x, y = 0.0, y + 16
        legend.append(f'<rect x="{x:.0f}" y="{y}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
                      f'<text x="{x + 14:.0f}" y="{y + 9}" font-size="11">{_esc(label)}</text>')
        x += step
    label_w, bar_h, value_w = 170, 12, 60
    plot_w = width - label_w - value_w
    block = bar_h * len(metrics) + 10
    first_row = y + 18
    height = first_row + len(groups) * block + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>', *legend]
    for i, (name, vals) in enumerate(groups):
        y0 = first_row + i * block
        parts.append(f'<text x="{label_w - 6}" y="{y0 + block / 2:.0f}" font-size="11" text-anchor="end">{_esc(name[:28])}</text>')
        for j, m in enumerate(metrics):
            v = vals.get(m)
            if not isinstance(v, (int, float)):
                continue
            w = max(1.0, plot_w * abs(float(v)) / tops[m])
            y = y0 + j * bar_h
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{PALETTE[j % len(PALETTE)]}">'
                         f'<title>{_esc(name)} {_esc(m)}: {float(v):.5g}</title></rect>'
                         f'<text x="{label_w + w + 4:.1f}" y="{y + 9}" font-size="10">{float(v):.4g}</text>')
            if m == goal.get("metric") and bound is not None:
                bx = label_w + plot_w * abs(float(bound)) / tops[m]
                parts.append(f'<line x1="{bx:.1f}" y1="{y - 1}" x2="{bx:.1f}" y2="{y + bar_h - 1}" stroke="#c33" '
                             f'stroke-width="2" stroke-dasharray="3 2"><title>budget {_esc(m)} {bound:g}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def verdict_html(report: dict) -> str:
    """The answer first: did every budget pass, and by how much (from the validate stage)."""
    section = (report.get("stages") or {}).get("validate")
    if not isinstance(section, dict):
        return '<div class="verdict none"><b>No budget check</b>: the validate stage was not in this build.</div>'
    rows = [r for r in section.get("budgets") or [] if isinstance(r, dict)]
    if not rows:
        return '<div class="verdict none"><b>No budgets declared</b>: nothing was checked against a limit.</div>'
    passed = bool(section.get("passed", all(r.get("ok") for r in rows)))
    failed = [r for r in rows if not r.get("ok")]
    head = (f"<b>PASS</b>: all {len(rows)} budget(s) met" if passed else
            f"<b>FAIL</b>: {len(failed)} of {len(rows)} budget(s) exceeded")
    body = "".join(f"<tr class='{'ok' if r.get('ok') else 'bad'}'><td>{_esc(r.get('metric'))}</td><td>{_esc(_fmt(r.get('budget')))}</td>"
                   f"<td>{_esc(_fmt(r.get('measured')))}</td><td>{_esc(r.get('by', ''))}</td><td>{_esc(r.get('source', ''))}</td></tr>"
                   for r in rows)
    return (f"<div class='verdict {'pass' if passed else 'fail'}'>{head}<table><tr><th>budget</th><th>limit</th>"
            f"<th>measured</th><th>verdict</th><th>source</th></tr>{body}</table></div>")


# --- extracting plot data from sections ------------------------------------------------------------

def latency_series(report: dict) -> dict[str, list[float]]:
    lat = (report.get("validate") or {}).get("latency") or {}
    out = {}
    if isinstance(lat, dict):
        for mode, values in lat.items():
            if isinstance(values, dict) and isinstance(values.get("samples_ms"), list):
                out[str(mode)] = values["samples_ms"]
        if not out and isinstance(lat.get("samples_ms"), list):  # one series for the whole section
            out["measured"] = lat["samples_ms"]
    smoke = (report.get("package") or {}).get("smoke_samples_ms")
    if not out and isinstance(smoke, list):
        out["package smoke run (1 thread)"] = smoke
    return out


def candidate_rows(report: dict) -> list[tuple[str, dict[str, float]]]:
    cands = (report.get("quantize") or {}).get("candidates") or []
    rows = []
    for c in cands if isinstance(cands, list) else []:
        if not isinstance(c, dict):
            continue
        name = str(c.get("name", "?")) + (" (selected)" if c.get("selected") else "")
        metrics = {k: v for k, v in (c.get("metrics") or c.get("accuracy") or {}).items() if isinstance(v, (int, float))}
        rows.append((name, metrics))
    return rows


def _table(mapping: dict) -> str:
    rows = []
    for k, v in mapping.items():
        if isinstance(v, (dict, list)):
            text = json.dumps(v, default=str)
            cell = f"<details><summary>{_esc(text[:90])}{'…' if len(text) > 90 else ''}</summary><pre>{_esc(json.dumps(v, indent=1, default=str))}</pre></details>"
        else:
            cell = _esc(_fmt(v))
        rows.append(f"<tr><th>{_esc(k)}</th><td>{cell}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def stage_fragment(stage: str, section: Any) -> str:
    """The stage module's own `report_html(section)`, if it has one."""
    module = BUILTIN_MODULES.get(stage)
    if module is None or not isinstance(section, dict):
        return ""
    try:
        mod = importlib.import_module(f"edgeship.stages.{module}")
    except Exception:
        return ""
    render = getattr(mod, "report_html", None)
    if not callable(render):
        return ""
    try:
        return str(render(section) or "")
    except Exception as err:
        return f'<p class="note">({_esc(stage)} view unavailable: {_esc(type(err).__name__)}: {_esc(err)})</p>'


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top;font-size:.9em}
th{background:#f4f4f4}.note{color:#a55}pre{margin:0;font-size:.8em}.ok{color:#2a7}.bad{color:#c33}
.verdict{border:2px solid #999;border-radius:6px;padding:.6em 1em;margin:1em 0;font-size:1.05em}
.verdict.pass{border-color:#2a7;background:#effaf3}.verdict.fail{border-color:#c33;background:#fdf0f0}
.verdict table{font-size:.9em;margin-top:.5em}"""


def render_html(report: dict) -> str:
    """A self-contained HTML page for a report.json document."""
    stages = report.get("stages") or {}
    title = f"edgeship build report: {report.get('name', '')}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{_esc(title)}</h1>",
             verdict_html(report),
             _table({"target": report.get("target", ""), "created": report.get("created", ""),
                     "edgeship": report.get("edgeship_version", ""), "model sha256": report.get("model_sha256", "")})]
    runs = report.get("build") or []
    if runs:
        parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>time</th><th>key</th></tr>")
        for r in runs:
            parts.append(f"<tr><td>{_esc(r.get('name'))}</td><td>{_esc(r.get('status'))}</td>"
                         f"<td>{_esc(_fmt(r.get('seconds', '')))} s</td><td><code>{_esc(str(r.get('key', ''))[:16])}</code></td></tr>")
        parts.append("</table>")
    warnings = report.get("warnings") or []
    if warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='note'>{_esc(w)}</li>" for w in warnings) + "</ul>")
    plots = [
        histogram(latency_series(stages), "Latency distribution on this host"),
        bar_chart(((stages.get("package") or {}).get("op_time_us") or {}).items(), "Time per op type (onnxruntime profiling)", "us"),
        grouped_bars(candidate_rows(stages), "Accuracy per quantization candidate (vs float)",
                     goal=(stages.get("quantize") or {}).get("accuracy_goal")),
    ]
    plots = [p for p in plots if p]
    if plots:
        parts.append("<h2>Figures</h2>" + "".join(f"<div>{p}</div>" for p in plots))
    for name, section in stages.items():
        parts.append(f"<h2>{_esc(name)}</h2>")
        fragment = stage_fragment(name, section)
        if fragment:
            parts.append(fragment)
        if isinstance(section, dict):
            parts.append(_table(section))
        else:
            parts.append(f"<pre>{_esc(json.dumps(section, indent=1, default=str))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = ["render_html", "bar_chart", "histogram", "grouped_bars", "verdict_html", "latency_series", "candidate_rows"]
