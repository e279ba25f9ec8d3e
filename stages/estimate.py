"""Stage `estimate`: the roofline cost model on the legalized graph.

Writes ctx.report["estimate"] with the keys `validate` reads for targets this host cannot run:
latency_ms (total), peak_memory_kb, per_node, partitions, transfers (count). The budget is not read
here (changing only a budget must not re-run this stage): validate and `edgeship compare` hold the
estimate against it (`budget_check`).
"""

from __future__ import annotations

from edgeship.stages.base import BaseStage
from edgeship.stages.legalize import target_graph
from edgeship.stages.registry import register
from edgeship.targets.costmodel import estimate
from edgeship.targets.placement import legalize
from edgeship.targets.svg import op_time_svg, roofline_svg


def budget_check(section: dict, budget: dict) -> dict:
    """Estimated latency/memory against the manifest budget: {metric: {budget, estimated, ok}}."""
    out: dict = {}
    latency = (budget or {}).get("latency_ms") or {}
    for pct in ("p50", "p95", "p99"):
        if pct in latency:
            out[f"latency_ms.{pct}"] = {"budget": latency[pct], "estimated": section["latency_ms"],
                                        "ok": section["latency_ms"] <= float(latency[pct])}
    peak = ((budget or {}).get("memory_kb") or {}).get("peak")
    if peak is not None:
        out["memory_kb.peak"] = {"budget": peak, "estimated": section["peak_memory_kb"],
                                 "ok": section["peak_memory_kb"] <= float(peak)}
    return out


def vendor_figures(section: dict, lowered: dict) -> None:
    """Where the vendor's compiler gives a latency (Vela's cycles), the budget gates on it: the roofline
    figure stays beside it as `roofline_latency_ms`, with its error against the vendor's."""
    vendor_ms = lowered.get("latency_ms")
    if vendor_ms is None:
        return
    roofline = section["latency_ms"]
    memory = lowered.get("memory") or {}
    section["roofline_latency_ms"] = roofline
    section["vendor"] = {"tool": lowered.get("tool"), "latency_ms": vendor_ms, "cycles": lowered.get("cycles"),
                         "sram_kb": memory.get("sram_kb"),
                         "flash_kb": (memory.get("off_chip_flash_kb") or 0) + (memory.get("on_chip_flash_kb") or 0),
                         "roofline_ratio": round(roofline / vendor_ms, 3) if vendor_ms else None}
    section["latency_ms"] = vendor_ms
    section["latency_source"] = lowered.get("tool")
    cpu = len(lowered.get("cpu_ops") or [])
    if cpu:  # Vela times the NPU's command stream; what TFLM runs on the Cortex-M is not in its figure
        host_ms = sum(r["time_us"] for r in section.get("per_node", []) if r.get("unit") == "host") / 1000.0
        section["vendor"]["cpu_ops"] = cpu
        section["vendor"]["cpu_ms_roofline"] = round(host_ms, 4)
        section["notes"] = list(section.get("notes") or []) + [
            f"{lowered.get('tool')}'s latency covers the NPU only; {cpu} op(s) on the CPU add about "
            f"{host_ms:.3f} ms by the roofline (host peak permitting)"]


@register
class EstimateStage(BaseStage):
    name = "estimate"
    version = "6"  # 5: accelerator_is_host (the report says "host" on CPU targets); 6: the vendor's figures
    uses_target = True

    def run(self, ctx):
        graph = target_graph(ctx, self.name)
        placement = ctx.report.get("legalize")
        if not placement or placement.get("target") != ctx.target_name:
            placement = legalize(graph, ctx.target)  # legalize not in the stage list: place here
        section = estimate(graph, ctx.target, placement)
        section["accelerator_pct"] = placement.get("accelerator_pct")
        section["host_round_trips"] = placement.get("host_round_trips", 0)
        section["accelerator_is_host"] = bool(placement.get("accelerator_is_host"))
        vendor_figures(section, ctx.report.get("lower") or {})
        ctx.report[self.name] = section
        return ctx


def vendor_table(section: dict) -> str:
    """The vendor compiler's figures beside the roofline's, when there are some."""
    from html import escape

    vendor = section.get("vendor")
    if not vendor:
        return ""
    cells = [("latency (budget gates on it)", f"{vendor['latency_ms']:.4f} ms ({escape(str(vendor.get('tool')))})"),
             ("roofline estimate", f"{section.get('roofline_latency_ms', 0):.4f} ms (x{vendor.get('roofline_ratio')})"),
             ("cycles", str(vendor.get("cycles"))), ("SRAM", f"{vendor.get('sram_kb') or 0:.1f} KB"),
             ("flash", f"{vendor.get('flash_kb') or 0:.1f} KB")]
    return "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in cells) + "</table>"


def report_html(section: dict) -> str:
    """Vendor figures beside the roofline, per-op-type estimated time bars and the roofline plot."""
    return vendor_table(section) + op_time_svg(section) + roofline_svg(section)
