"""The quantize section of report.html: the accuracy goal and why, per-layer sensitivity, chosen precision.

Inline SVG like the rest of the report (no JavaScript, opens offline). Bars are each layer's end-to-end
output noise when that layer alone is quantized (from `quant_sensitivity`), coloured by the precision
the shipped model gives it, so a reader sees at once which layers were kept out of int8 and why.
"""

from __future__ import annotations

import html
import math

PRECISION_COLOURS = {"int8": "#3b6ea5", "int16": "#e07b39", "float": "#b04a5a", "?": "#999999"}
MAX_BARS = 40


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def sensitivity_svg(layers: list[dict], precision: dict[str, str], width: int = 640) -> str:
    """Horizontal bars of -10 log10(noise) inverted: longer bar = more damage when quantized alone."""
    rows = layers[:MAX_BARS]
    if not rows:
        return ""
    damage = [max(0.0, 60.0 + 10 * math.log10(max(r.get("noise", 0.0), 1e-6))) for r in rows]  # 1e-6 -> 0, 1 -> 60
    top = max(damage) or 1.0
    label_w, bar_h, pad = 230, 14, 3
    height = 48 + len(rows) * (bar_h + pad)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="per-layer quantization sensitivity">',
             '<text x="0" y="14" font-size="13" font-weight="bold">Per-layer sensitivity: output noise with only this '
             'layer int8 (most damaging first)</text>']
    for j, (name, colour) in enumerate(PRECISION_COLOURS.items()):
        if name != "?":
            parts.append(f'<rect x="{label_w + j * 115}" y="22" width="10" height="10" fill="{colour}"/>'
                         f'<text x="{label_w + 14 + j * 115}" y="31" font-size="11">shipped {name}</text>')
    for i, (r, d) in enumerate(zip(rows, damage)):
        y = 40 + i * (bar_h + pad)
        w = max(1.0, (width - label_w - 120) * d / top)
        chosen = precision.get(r["node"], "?")
        sqnr = r.get("sqnr_db")
        note = f"SQNR {sqnr:.1f} dB" if isinstance(sqnr, (int, float)) else ""
        parts.append(f'<text x="{label_w - 6}" y="{y + 11}" font-size="10" text-anchor="end">'
                     f'{_esc(str(r["node"])[-34:])} ({_esc(r.get("op_type", ""))})</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{PRECISION_COLOURS[chosen]}">'
                     f'<title>{_esc(r["node"])}: noise {r.get("noise", 0):.3g}, {note}, shipped {chosen}</title></rect>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 11}" font-size="10">{_esc(note)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def precision_table(precision: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for p in precision.values():
        counts[p] = counts.get(p, 0) + 1
    summary = ", ".join(f"{n} {p}" for p, n in sorted(counts.items()))
    rows = "".join(f"<tr><td>{_esc(n)}</td><td>{_esc(p)}</td></tr>" for n, p in precision.items())
    return (f"<details><summary>Chosen precision per layer: {_esc(summary)}</summary>"
            f"<table><tr><th>layer</th><th>precision</th></tr>{rows}</table></details>")


def candidate_table(candidates: list[dict], metric: str | None) -> str:
    """auto's candidates: accuracy and the runtime it was scored on, p50 and the runtime it was timed on."""
    rows = []
    for c in candidates:
        value = (c.get("accuracy") or {}).get(metric) if metric else None
        latency = c.get("latency_ms")
        rows.append(f"<tr><td>{_esc(c.get('name'))}{' (selected)' if c.get('selected') else ''}</td>"
                    f"<td>{_esc(c.get('kind'))}</td><td>{'-' if value is None else f'{value:.4g}'}</td>"
                    f"<td>{_esc(c.get('scored_on', '-'))}</td><td>{'-' if latency is None else f'{latency:.4g}'}</td>"
                    f"<td>{_esc(c.get('timed_on', '-'))}</td></tr>")
    return (f"<table><tr><th>candidate</th><th>kind</th><th>{_esc(metric or 'accuracy')}</th><th>scored on</th>"
            f"<th>p50 ms (1 thread)</th><th>timed on</th></tr>{''.join(rows)}</table>") if rows else ""


def report_html(section: dict) -> str:
    parts = []
    goal = section.get("accuracy_goal") or {}
    if goal.get("summary"):
        parts.append(f"<p><b>Accuracy goal</b>: {_esc(goal['summary'])}</p>")
    if section.get("selected"):
        parts.append(f"<p><b>Selected</b>: {_esc(section['selected'])} - {_esc(section.get('reason', ''))}</p>")
    parts.append(candidate_table(section.get("candidates") or [], goal.get("metric")))
    precision = section.get("layer_precision") or {}
    layers = (section.get("sensitivity") or {}).get("layers") or []
    svg = sensitivity_svg(layers, precision)
    if svg:
        parts.append(f"<div>{svg}</div>")
    if precision:
        parts.append(precision_table(precision))
    return "".join(parts)
