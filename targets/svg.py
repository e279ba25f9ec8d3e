"""Inline SVG figures for the build report (no plotting library, no scripts, no external files):
the placement view per partition, the per-op-type estimated time bars and the roofline plot.
"""

from __future__ import annotations

import math
from html import escape

COLORS = {"accelerator": "#2a9d8f", "host": "#e9a23b", "rejected": "#d62828"}


def _unit_names(section: dict) -> dict[str, str]:
    """Display names of the units: on a CPU-only target the "accelerator" is the host CPU itself."""
    if section.get("accelerator_is_host"):
        return {"accelerator": "host (CPU)", "host": "host", "rejected": "rejected"}
    return {unit: unit for unit in COLORS}


def _legend(x: int, y: int, names: dict[str, str]) -> str:
    parts = []
    units = [u for u in COLORS if not (names["accelerator"] == "host (CPU)" and u == "host")]
    for i, unit in enumerate(units):
        parts.append(f'<rect x="{x + i * 110}" y="{y}" width="12" height="12" fill="{COLORS[unit]}"/>'
                     f'<text x="{x + i * 110 + 16}" y="{y + 11}" font-size="11">{names[unit]}</text>')
    return "".join(parts)


def placement_svg(section: dict, per_row: int = 40) -> str:
    """Every node in schedule order as a cell colored by unit, partitions outlined; hover for why."""
    rows = {r["name"]: r for r in section.get("nodes", [])}
    order = [rows[n] for n in section.get("schedule", []) if n in rows] or list(rows.values())
    cell = 16
    height = 40 + cell * max(1, math.ceil(len(order) / per_row)) + 10
    width = 20 + per_row * cell
    names = _unit_names(section)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="placement of {len(order)} nodes">', _legend(10, 8, names)]
    for i, r in enumerate(order):
        x = 10 + (i % per_row) * cell
        y = 30 + (i // per_row) * cell
        why = "; ".join(reason["message"] for reason in r.get("reasons", []))
        part = f" partition {r['partition']}" if r.get("partition") is not None else ""
        title = escape(f"{r['name']} ({r['op_type']}, {r['format']}) on {names.get(r['unit'], r['unit'])}{part}"
                       + (f": {why}" if why else ""))
        parts.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{COLORS.get(r["unit"], "#888")}">'
                     f"<title>{title}</title></rect>")
    parts.append("</svg>")
    table = ["<table><tr><th>partition</th><th>nodes</th><th>first</th><th>last</th></tr>"]
    for p in section.get("partitions", []):
        nodes = p.get("nodes") or []
        table.append(f"<tr><td>{p['id']}</td><td>{p.get('size', len(nodes))}</td><td>{escape(nodes[0] if nodes else '')}</td>"
                     f"<td>{escape(nodes[-1] if nodes else '')}</td></tr>")
    table.append("</table>")
    if section.get("accelerator_is_host"):
        table = []  # one unit: partitions mean nothing here
    counts = section.get("counts", {})
    if section.get("accelerator_is_host"):
        head = (f"<p>{counts.get('accelerator', 0) + counts.get('host', 0)} node(s) on the host CPU (this target has no "
                f"separate accelerator: no partitions, no transfers), {counts.get('rejected', 0)} rejected.</p>")
    else:
        head = (f"<p>{counts.get('accelerator', 0)} node(s) on the accelerator ({section.get('accelerator_pct', 0)}%), "
                f"{counts.get('host', 0)} on the host, {counts.get('rejected', 0)} rejected; "
                f"{len(section.get('partitions', []))} partition(s), {section.get('host_round_trips', 0)} host round trip(s), "
                f"{len(section.get('transfers', []))} transfer(s).</p>")
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in section.get("notes", []))
    return "<figure><figcaption>Placement</figcaption>" + head + notes + "".join(parts) + "".join(table) + "</figure>"


def op_time_svg(section: dict, top: int = 15) -> str:
    """Estimated time per op type, longest first."""
    ops = (section.get("per_op_type") or [])[:top]
    if not ops:
        return ""
    longest = max(o["time_us"] for o in ops) or 1.0
    bar_w, row_h, label_w = 360, 18, 150
    height = 20 + row_h * len(ops)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 110}" height="{height}" role="img" '
             f'aria-label="estimated time per op type">']
    for i, o in enumerate(ops):
        y = 10 + i * row_h
        w = max(1.0, bar_w * o["time_us"] / longest)
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" font-size="11" text-anchor="end">{escape(o["op_type"])} x{o["count"]}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{row_h - 4}" fill="#457b9d"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" font-size="11">{o["time_us"] / 1000:.3f} ms</text>')
    parts.append("</svg>")
    head = (f"<p>estimated {section.get('latency_ms', 0):.3f} ms ({section.get('compute_ms', 0):.3f} ms compute, "
            f"{section.get('transfer_ms', 0):.3f} ms in {section.get('transfers', 0)} transfer(s)); peak memory "
            f"{section.get('peak_memory_kb', 0):.1f} KiB ({section.get('weights_kb', 0):.1f} KiB weights + "
            f"{section.get('peak_activations_kb', 0):.1f} KiB live activations at {escape(str(section.get('peak_at', '')))}).</p>")
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in section.get("notes", []))
    return "<figure><figcaption>Estimated time per op type</figcaption>" + head + notes + "".join(parts) + "</figure>"


def roofline_svg(section: dict) -> str:
    """Operational intensity (FLOP/byte) vs achieved throughput per node, under the compute roofs
    (one per format) and the bandwidth roof."""
    nodes = [n for n in section.get("per_node", []) if n.get("flops") and n.get("bytes") and n.get("time_us")]
    roofs = section.get("roofs") or {}
    if not nodes:
        return ""
    bw = (roofs.get("bandwidth_gb_s") or 0) * 1e9
    names = _unit_names(section)
    peaks = {f"{names[unit]} {fmt}": float(v) * 1e12 for unit in ("accelerator", "host") for fmt, v in (roofs.get(unit) or {}).items()}
    xs = [n["flops"] / n["bytes"] for n in nodes]
    ys = [n["flops"] / (n["time_us"] * 1e-6) for n in nodes]
    x_lo, x_hi = math.floor(math.log10(min(xs))) - 0.5, math.ceil(math.log10(max(xs))) + 0.5
    y_vals = ys + list(peaks.values())
    y_lo, y_hi = math.floor(math.log10(min(ys))) - 0.5, math.ceil(math.log10(max(y_vals))) + 0.3
    W, H, L, B = 520, 320, 60, 40

    def px(x: float) -> float:
        return L + (math.log10(x) - x_lo) / (x_hi - x_lo) * (W - L - 10)

    def py(y: float) -> float:
        return H - B - (math.log10(max(y, 1e-30)) - y_lo) / (y_hi - y_lo) * (H - B - 10)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="roofline">',
             f'<line x1="{L}" y1="{H - B}" x2="{W - 10}" y2="{H - B}" stroke="#333"/>',
             f'<line x1="{L}" y1="10" x2="{L}" y2="{H - B}" stroke="#333"/>']
    for e in range(math.ceil(x_lo), math.floor(x_hi) + 1):
        parts.append(f'<text x="{px(10 ** e):.1f}" y="{H - B + 14}" font-size="10" text-anchor="middle">1e{e}</text>')
    for e in range(math.ceil(y_lo), math.floor(y_hi) + 1):
        parts.append(f'<text x="{L - 4}" y="{py(10 ** e) + 3:.1f}" font-size="10" text-anchor="end">1e{e}</text>')
    parts.append(f'<text x="{(L + W) / 2}" y="{H - 6}" font-size="11" text-anchor="middle">operational intensity (FLOP/byte)</text>')
    parts.append(f'<text x="12" y="{(H - B) / 2}" font-size="11" transform="rotate(-90 12 {(H - B) / 2})" '
                 f'text-anchor="middle">achieved ops/s</text>')
    grid = [10 ** (x_lo + (x_hi - x_lo) * i / 60) for i in range(61)]
    for i, (label, peak) in enumerate(sorted(peaks.items(), key=lambda kv: -kv[1])):
        pts = " ".join(f"{px(x):.1f},{py(min(peak, bw * x) if bw else peak):.1f}" for x in grid)
        dash = "" if i == 0 else ' stroke-dasharray="4 3"'
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#555"{dash}/>'
                     f'<text x="{W - 12}" y="{py(peak) - 3:.1f}" font-size="10" text-anchor="end">{escape(label)} roof</text>')
    for n, x, y in zip(nodes, xs, ys):
        title = escape(f"{n['name']} ({n['op_type']}): {x:.2f} FLOP/B, {y / 1e9:.2f} GOP/s, {n['bound']}-bound")
        parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{COLORS.get(n["unit"], "#888")}" '
                     f'fill-opacity="0.7"><title>{title}</title></circle>')
    parts.append("</svg>")
    return "<figure><figcaption>Roofline (per node)</figcaption>" + "".join(parts) + "</figure>"
