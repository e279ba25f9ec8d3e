"""Legalization: hold every node of a graph against a chip profile and place it on the accelerator,
on the host fallback, or reject it, always with the reason and the fix.

Then group the placed nodes into partitions (maximal runs on one unit, scheduled so that a side
branch does not split a partition needlessly) and list the tensors that cross a partition boundary
(each one a host <-> accelerator transfer).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeship.targets.graphinfo import INDEX_FORMATS, QDQ_OPS, VIEW_OPS, GraphInfo, NodeInfo
from edgeship.targets.profile import canonical_format
from edgeship.targets.profileview import ProfileView

ACCELERATOR, HOST, REJECTED = "accelerator", "host", "rejected"

# how to get rid of an op the chip does not run, for ops where there is a well-known way
REPLACEMENTS = {
    "LayerNormalization": "decompose it (ReduceMean, Sub, Mul, Add, Sqrt, Div: export with opset < 17)",
    "Where": "replace the mask select with an Add of a precomputed constant mask",
    "Gelu": "use the tanh approximation built from Mul/Add/Tanh, or Relu",
    "Erf": "use the tanh approximation of GELU, or Relu",
    "HardSwish": "express it as Mul(x, HardSigmoid(x)), or use Relu6",
    "LRN": "remove it (modern nets use BatchNormalization, folded into the Conv)",
    "Einsum": "rewrite it as MatMul/Transpose",
    "InstanceNormalization": "fold it or decompose it into ReduceMean/Sub/Mul/Add",
    "Resize": "use nearest mode with an integer scale, or ConvTranspose",
    "Softmax": "keep it in float on the host via quantization.keep_float, or drop it (argmax is unchanged)",
    "Sigmoid": "use HardSigmoid, or keep it on the host",
}


@dataclass
class Reason:
    kind: str  # unsupported-op | dtype | attribute | memory | fused-only
    message: str
    fix: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "fix": self.fix}


def _pair(limit, rank: int = 2) -> list[int]:
    if isinstance(limit, (list, tuple)):
        return [int(v) for v in limit][-rank:] if len(limit) >= rank else [int(v) for v in limit] * rank
    return [int(limit)] * rank


def _same_format(fmt: str, allowed: set[str]) -> bool:
    fmt = canonical_format(fmt)
    if fmt in allowed:
        return True
    return {"uint8": "int8", "int8": "uint8", "int16": "int16x8", "uint16": "int16x8"}.get(fmt) in allowed


def _spatial(g: GraphInfo, n: NodeInfo) -> tuple[list[int], list[int], list[int], list[int]]:
    """(kernel, strides, dilations, pads) of a Conv/pool node, filled with defaults."""
    kernel = list(n.attrs.get("kernel_shape") or [])
    if not kernel and n.op_type in ("Conv", "ConvTranspose") and len(n.node.input) > 1:
        w = g.info(n.node.input[1])
        if w is not None and w.shape:
            kernel = list(w.shape[2:])
    rank = len(kernel) or 2
    strides = list(n.attrs.get("strides") or [1] * rank)
    dilations = list(n.attrs.get("dilations") or [1] * rank)
    pads = list(n.attrs.get("pads") or [0] * (2 * rank))
    return kernel, strides, dilations, pads


def check_limits(g: GraphInfo, n: NodeInfo, limits: dict) -> list[Reason]:
    """Attribute limits from the profile's `operators.<Op>` entry that this node breaks."""
    out: list[Reason] = []
    kernel, strides, dilations, pads = _spatial(g, n)

    def per_axis(values: list[int], key: str, label: str, bigger_is_bad: bool = True) -> None:
        if key not in limits or not values:
            return
        lim = _pair(limits[key], len(values))
        for axis, (v, cap) in enumerate(zip(values, lim)):
            if (v > cap) if bigger_is_bad else (v < cap):
                word = "max" if bigger_is_bad else "min"
                out.append(Reason("attribute", f"{label} {values} exceeds {key.replace('_', ' ')} {limits[key]}"
                                  if bigger_is_bad else f"{label} {values} below {word} {limits[key]}",
                                  f"re-export with {label} within {limits[key]}, or keep this node on the host"))
                return

    per_axis(kernel, "kernel_max", "kernel")
    per_axis(kernel, "kernel_min", "kernel", bigger_is_bad=False)
    per_axis(strides, "stride_max", "stride")
    per_axis(strides, "stride_min", "stride", bigger_is_bad=False)
    per_axis(dilations, "dilation_max", "dilation")
    per_axis(pads, "pad_max", "pad")
    if "kernel_area_max" in limits and kernel:
        area = 1
        for k in kernel:
            area *= k
        if area > int(limits["kernel_area_max"]):
            out.append(Reason("attribute", f"kernel area {area} exceeds {limits['kernel_area_max']}",
                              "use a smaller kernel (e.g. two stacked 3x3)"))
    c_in = None
    if n.op_type in ("Conv", "ConvTranspose"):
        x = g.info(n.node.input[0])
        c_in = x.shape[1] if x is not None and x.shape and len(x.shape) > 1 else None
        group = int(n.attrs.get("group", 1))
        rule = limits.get("group", "any")
        depthwise = c_in is not None and group == c_in and group > 1
        ok = {"any": True, "regular": group == 1, "depthwise": depthwise,
              "regular_or_depthwise": group == 1 or depthwise}.get(rule, True)
        if not ok:
            kind = "depthwise" if depthwise else ("grouped" if group > 1 else "regular")
            out.append(Reason("attribute", f"{kind} conv (group={group}) not allowed (group: {rule})",
                              "replace the grouped conv with a regular or depthwise one, or keep it on the host"))
        area = 1
        for k in kernel:
            area *= k
        if c_in is not None and "max_kernel_elems_x_ic16" in limits:
            val = area * -(-c_in // 16)
            if val > int(limits["max_kernel_elems_x_ic16"]):
                out.append(Reason("attribute", f"kernel_w*kernel_h*ceil(C_in/16) = {val} exceeds {limits['max_kernel_elems_x_ic16']}",
                                  "reduce the kernel size or input channels"))
        if c_in is not None and "max_kernel_elems_x_ic" in limits:
            val = area * c_in
            if val > int(limits["max_kernel_elems_x_ic"]):
                out.append(Reason("attribute", f"kernel_w*kernel_h*C_in = {val} exceeds {limits['max_kernel_elems_x_ic']}",
                                  "reduce the kernel size or input channels"))
    tensors = [g.info(t) for t in g.data_inputs(n) + [o for o in n.node.output if o]]
    shapes = [t.shape for t in tensors if t is not None and t.shape is not None]
    if "channels_max" in limits:
        chans = [s[1] for s in shapes if len(s) > 1]
        if chans and max(chans) > int(limits["channels_max"]):
            out.append(Reason("attribute", f"{max(chans)} channels exceed channels_max {limits['channels_max']}",
                              "reduce the channel count or split the layer"))
    if "rank_max" in limits and shapes and max(len(s) for s in shapes) > int(limits["rank_max"]):
        out.append(Reason("attribute", f"rank {max(len(s) for s in shapes)} exceeds rank_max {limits['rank_max']}",
                          "reshape to a lower rank before this op"))
    if "batch_max" in limits and shapes and max(s[0] for s in shapes if s) > int(limits["batch_max"]):
        out.append(Reason("attribute", f"batch exceeds batch_max {limits['batch_max']}", "pin the batch dim to 1 in model.inputs"))
    if "dims_max" in limits and shapes:
        big = max((d for s in shapes for d in s), default=0)
        if big > int(limits["dims_max"]):
            out.append(Reason("attribute", f"a dimension of {big} exceeds dims_max {limits['dims_max']}",
                              "reduce the input resolution or split the tensor"))
    if "axes" in limits and "axis" in n.attrs:
        rank = len(shapes[0]) if shapes else 0
        axis = int(n.attrs["axis"])
        allowed = {a % rank if rank else a for a in limits["axes"]}
        if (axis % rank if rank else axis) not in allowed:
            out.append(Reason("attribute", f"axis {axis} not in allowed axes {limits['axes']}", "transpose so the op acts on an allowed axis"))
    if "modes" in limits and "mode" in n.attrs:
        mode = n.attrs["mode"].decode() if isinstance(n.attrs["mode"], bytes) else str(n.attrs["mode"])
        if mode not in limits["modes"]:
            out.append(Reason("attribute", f"mode {mode!r} not in {limits['modes']}", f"use mode {limits['modes'][0]!r}"))
    if "alpha_range" in limits and "alpha" in n.attrs:
        lo, hi = limits["alpha_range"]
        if not lo <= float(n.attrs["alpha"]) <= hi:
            out.append(Reason("attribute", f"alpha {n.attrs['alpha']} outside {limits['alpha_range']}", "retrain with an allowed alpha"))
    if limits.get("constant_weights") and len(n.node.input) > 1 and n.node.input[1] not in g.constants:
        out.append(Reason("attribute", "weights are not constant", "fold the weights into initializers"))
    return out


FLOAT_DOWNCASTS = ("bf16", "fp16")  # what accelerator toolchains run float32 graphs in when they lack float32


def runs_as(fmt: str, allowed: set[str]) -> str | None:
    """The format a float32 node runs in on an accelerator without float32 but with fp16/bf16 (the
    vendor toolchain downcasts: TensorRT fp16, Ryzen AI bf16, ...); None when no downcast applies."""
    if canonical_format(fmt) != "float32" or _same_format(fmt, allowed):
        return None
    return next((f for f in FLOAT_DOWNCASTS if f in allowed), None)


def place_node(g: GraphInfo, n: NodeInfo, view: ProfileView) -> tuple[str, list[Reason]]:
    """(unit, reasons it is not on the accelerator)."""
    fmt = g.compute_format(n)
    reasons: list[Reason] = []
    if n.op_type in QDQ_OPS and any(f.startswith(("int", "uint")) for f in view.formats()):
        limits: dict | None = {}  # (de)quantizing at the accelerator's edge is part of every int8 datapath
    else:
        limits = view.op_limits(n.op_type)
    if limits is None:
        hint = REPLACEMENTS.get(n.op_type, f"replace {n.op_type} with an op the target runs")
        reasons.append(Reason("unsupported-op", f"{n.op_type}: not in the accelerator's operator list",
                              f"{hint}, or choose a target that runs it"))
    else:
        allowed = {canonical_format(f) for f in (limits.get("dtypes") or [])} or view.formats()
        format_free = n.op_type in QDQ_OPS or n.op_type in VIEW_OPS or fmt in INDEX_FORMATS
        if not format_free and not _same_format(fmt, allowed) and not runs_as(fmt, allowed):
            fix = ("quantize it (quantization.mode static/auto) and do not list it in keep_float"
                   if fmt in ("float32", "fp32", "fp16") else f"use one of {sorted(allowed)}")
            reasons.append(Reason("dtype", f"{fmt} not supported for {n.op_type} (accelerator runs {', '.join(sorted(allowed))})", fix))
        reasons += check_limits(g, n, limits)
        if limits.get("fused_only"):
            reasons.append(Reason("fused-only", f"{n.op_type} runs only fused into a preceding Conv/Gemm, not standalone",
                                  "put it directly after a Conv/Gemm whose output nothing else reads"))
    sram, dram = view.sram_bytes(), view.dram_bytes()
    if sram and not dram:  # no external memory to tile through: every tensor must fit on chip
        for t in g.data_inputs(n) + [o for o in n.node.output if o]:
            size = g.effective_bytes(t, n)
            if size and size > sram:
                reasons.append(Reason("memory", f"tensor {t} is {size / 1024:.1f} KiB > on-chip memory {sram / 1024:.0f} KiB",
                                      "reduce the input resolution or channels, or choose a target with more on-chip memory"))
                break
    if not reasons:
        return ACCELERATOR, []
    host_fmts = view.host_formats()
    if view.host_runs(n.op_type) and (host_fmts is None or _same_format(fmt, host_fmts)):
        return HOST, reasons
    if not view.host_fallback():
        reasons.append(Reason("no-fallback", "host: no fallback on this target", "every node must run on the accelerator"))
    elif not view.host_runs(n.op_type):
        reasons.append(Reason("no-fallback", f"host: does not run {n.op_type} either",
                              "see the fix above"))
    else:
        reasons.append(Reason("no-fallback", f"host: no {fmt} kernels",
                              f"quantize it to one of {', '.join(sorted(host_fmts or []))}"))
    return REJECTED, reasons


def _schedule(g: GraphInfo, units: dict[str, str]) -> list[NodeInfo]:
    """A topological order of the active nodes that stays on one unit as long as it can
    (Kahn's algorithm with one ready queue per unit, graph order within a queue)."""
    active = g.active_nodes()
    position = {n.name: i for i, n in enumerate(active)}
    users: dict[str, list[str]] = {n.name: [] for n in active}
    indegree = {n.name: 0 for n in active}
    for n in active:
        preds = set()
        for t in g.data_inputs(n):
            p = g.real_producer(t)
            while p is not None and p.fused_into:
                p = g.by_name.get(p.fused_into)
            if p is not None and p.name in position and p.name != n.name:
                preds.add(p.name)
        for p in preds:
            users[p].append(n.name)
        indegree[n.name] = len(preds)
    import heapq

    ready: dict[str, list[int]] = {}
    for n in active:
        if indegree[n.name] == 0:
            heapq.heappush(ready.setdefault(units[n.name], []), position[n.name])
    order: list[NodeInfo] = []
    current = units[active[0].name] if active else None
    while any(ready.values()):
        if not ready.get(current):
            current = min((u for u in ready if ready[u]), key=lambda u: ready[u][0])
        node = active[heapq.heappop(ready[current])]
        order.append(node)
        for user in users[node.name]:
            indegree[user] -= 1
            if indegree[user] == 0:
                heapq.heappush(ready.setdefault(units[user], []), position[user])
    if len(order) < len(active):  # a cycle cannot happen in a valid ONNX graph; keep graph order then
        seen = {n.name for n in order}
        order += [n for n in active if n.name not in seen]
    return order


def _unit_of_tensor(g: GraphInfo, tensor: str, units: dict[str, str]) -> str | None:
    p = g.real_producer(tensor)
    while p is not None and p.fused_into:
        p = g.by_name.get(p.fused_into)
    return units.get(p.name) if p is not None else None


def partition(g: GraphInfo, view: ProfileView, rows: list[dict]) -> tuple[list, list[dict], int, list[dict]]:
    """(schedule, accelerator partitions, host round trips, boundary transfers) for placed `rows`
    (each row's "partition" is filled in). Shared by legalize and by a vendor compiler's placement."""
    units = {r["name"]: (r["unit"] if r["unit"] in (ACCELERATOR, HOST, REJECTED) else HOST) for r in rows}
    order = _schedule(g, units)
    by_name = {r["name"]: r for r in rows}
    partitions: list[dict] = []
    segments: list[str] = []
    last_unit = None
    for n in order:
        unit = units[n.name]
        if unit != last_unit:
            segments.append(unit)
            if unit == ACCELERATOR:
                partitions.append({"id": len(partitions), "unit": ACCELERATOR, "nodes": []})
            last_unit = unit
        if unit == ACCELERATOR:
            partitions[-1]["nodes"].append(n.name)
            by_name[n.name]["partition"] = partitions[-1]["id"]
    round_trips = sum(1 for i in range(1, len(segments) - 1)
                      if segments[i] != ACCELERATOR and segments[i - 1] == ACCELERATOR and segments[i + 1] == ACCELERATOR)
    transfers: list[dict] = []
    if view.has_host:
        seen: set[tuple[str, str]] = set()
        for n in order:
            dest = units[n.name]
            for t in g.data_inputs(n):
                src = _unit_of_tensor(g, t, units) or HOST  # graph inputs arrive in host memory
                if src == REJECTED:
                    src = HOST
                dst = HOST if dest == REJECTED else dest
                if src != dst and (t, dst) not in seen:
                    seen.add((t, dst))
                    transfers.append({"tensor": t, "from": src, "to": dst, "bytes": int(g.effective_bytes(t, n) or 0)})
        for t in g.graph_outputs:
            src = _unit_of_tensor(g, t, units)
            if src == ACCELERATOR and (t, HOST) not in seen:
                seen.add((t, HOST))
                transfers.append({"tensor": t, "from": ACCELERATOR, "to": HOST, "bytes": int(g.effective_bytes(t) or 0)})
    return order, partitions, round_trips, transfers


def legalize(g: GraphInfo, profile) -> dict:
    """The `legalize` report section. Rejected nodes are listed, not raised: the stage decides."""
    view = profile if isinstance(profile, ProfileView) else ProfileView(profile)
    rows: list[dict] = []
    units: dict[str, str] = {}
    downcast = 0
    for n in g.active_nodes():
        unit, reasons = place_node(g, n, view)
        units[n.name] = unit
        fmt = g.compute_format(n)
        row = {"name": n.name, "op_type": n.op_type, "format": fmt, "unit": unit,
               "reasons": [r.as_dict() for r in reasons], "partition": None}
        if unit == ACCELERATOR and n.op_type not in VIEW_OPS:
            limits = view.op_limits(n.op_type) or {}
            as_fmt = runs_as(fmt, {canonical_format(f) for f in (limits.get("dtypes") or [])} or view.formats())
            if as_fmt:
                row["runs_as"] = as_fmt
                downcast += 1
        rows.append(row)
    fused = [{"name": n.name, "op_type": n.op_type, "into": n.fused_into} for n in g.nodes if n.fused_into]
    order, partitions, round_trips, transfers = partition(g, view, rows)
    counts = {u: sum(1 for r in rows if r["unit"] == u) for u in (ACCELERATOR, HOST, REJECTED)}
    total = max(1, len(rows))
    return {
        "target": view.name,
        "nodes": rows,
        "fused": fused,
        "counts": counts,
        "accelerator_pct": round(100.0 * counts[ACCELERATOR] / total, 1),
        "partitions": [{"id": p["id"], "unit": p["unit"], "size": len(p["nodes"]), "nodes": p["nodes"]} for p in partitions],
        "host_round_trips": round_trips,
        "transfers": transfers,
        "schedule": [n.name for n in order],
        "rejected": [r for r in rows if r["unit"] == REJECTED],
        "host_fallback": view.host_fallback(),
        "accelerator_is_host": not view.has_host and view.unit_is_cpu("accelerator"),  # CPU targets: say "host"
        "notes": [f"{downcast} float32 node(s) run as {', '.join(sorted({r['runs_as'] for r in rows if 'runs_as' in r}))} "
                  "on the accelerator (its toolchain downcasts; accuracy is validated in float32)"] if downcast else [],
    }


def rejection_table(section: dict, alternatives: list[str] | None = None) -> str:
    """The table a LegalizeError carries: node, op, why, fix (one line per reason)."""
    rows = [("node", "op", "why", "fix")]
    for r in section["rejected"]:
        main = [x for x in r["reasons"] if x["kind"] != "no-fallback"]
        after = [x["message"] for x in r["reasons"] if x["kind"] == "no-fallback"]
        for reason in main:
            why = reason["message"] + ("; " + "; ".join(after) if after else "")
            rows.append((r["name"], r["op_type"], why, reason["fix"]))
    widths = [min(90, max(len(row[i]) for row in rows)) for i in range(3)] + [max(len(row[3]) for row in rows)]
    lines = ["  ".join((cell if i == 3 else cell[:90]).ljust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if alternatives:
        lines.append(f"other targets that run these ops: {', '.join(alternatives)}")
    return "\n".join(lines)
