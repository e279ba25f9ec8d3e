"""Placement as the backend sees it: the emitter decides what is rejected (an op it cannot write),
the vendor compiler decides what runs where (Vela's CPU operations), not the profile's op list."""

from __future__ import annotations

ACCELERATOR, HOST, REJECTED = "accelerator", "host", "rejected"


def _recount(section: dict) -> dict:
    rows = section["nodes"]
    counts = {u: sum(1 for r in rows if r["unit"] == u) for u in (ACCELERATOR, HOST, REJECTED)}
    section["counts"] = counts
    section["accelerator_pct"] = round(100.0 * counts[ACCELERATOR] / max(1, len(rows)), 1)
    section["rejected"] = [r for r in rows if r["unit"] == REJECTED]
    return section


def backend_legalize(section: dict, backend: str, problems: dict) -> dict:
    """Profile placement re-judged for a compiler backend: nodes its emitter cannot write are rejected
    (with its reason); profile-list rejections become provisional host placements, which the vendor
    compiler confirms or overturns in `lower`."""
    by_name = {r["name"]: r for r in section["nodes"]}
    for row in section["nodes"]:
        if row["name"] not in problems and row["unit"] == REJECTED:
            row["unit"] = HOST
            row["reasons"] = [{"kind": "provisional", "message": f"not in the profile's accelerator list; {backend} decides in lower",
                               "fix": ""}]
    for name, err in problems.items():
        reason = {"kind": "backend", "message": err.message, "fix": err.fix}
        if name in by_name:
            by_name[name]["unit"] = REJECTED
            by_name[name]["reasons"] = [reason]
        else:
            row = {"name": name, "op_type": "?", "format": "?", "unit": REJECTED, "reasons": [reason], "partition": None}
            section["nodes"].append(row)
    section["backend"] = backend
    section["decided_by"] = f"{backend} (emitter) then the vendor compiler in lower"
    return _recount(section)


def vendor_placement(section: dict, report: dict, graph=None, profile=None) -> dict:
    """The legalize section with each node placed where the vendor compiler put it (partitions and
    boundary transfers recomputed when the graph is given)."""
    placement = report.get("placement") or []
    if not placement:
        return section
    cpu = {}
    for op in report.get("cpu_ops") or []:
        if op.get("onnx_node"):
            cpu.setdefault(op["onnx_node"], []).extend(op.get("reasons") or [f"{op['op']} left on the CPU by {report.get('tool')}"])
    absorbed = report.get("absorbed") or {}
    for row in section["nodes"]:
        if row["unit"] == REJECTED:
            continue
        owner = absorbed.get(row["name"])
        if owner:  # computed by another node's operators (a fused Relu, a one-hot MatMul done as GATHER)
            row["absorbed_into"] = owner
        if (owner or row["name"]) in cpu:
            row["unit"] = HOST
            row["reasons"] = [{"kind": "vendor", "message": m, "fix": ""} for m in (cpu[owner or row["name"]] or ["CPU"])]
        else:
            row["unit"] = ACCELERATOR
            row["reasons"] = []
    section["decided_by"] = report.get("tool", "backend")
    if graph is not None and profile is not None:
        from edgeship.targets.placement import partition
        from edgeship.targets.profileview import ProfileView

        view = profile if isinstance(profile, ProfileView) else ProfileView(profile)
        active = {n.name for n in graph.active_nodes()}
        rows = [r for r in section["nodes"] if r["name"] in active]
        for r in rows:
            r["partition"] = None
        order, partitions, round_trips, transfers = partition(graph, view, rows)
        section.update(schedule=[n.name for n in order], host_round_trips=round_trips, transfers=transfers,
                       partitions=[{"id": p["id"], "unit": p["unit"], "size": len(p["nodes"]), "nodes": p["nodes"]}
                                   for p in partitions])
    return _recount(section)
