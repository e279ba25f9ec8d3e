"""Roofline cost model: per-node work (MACs, FLOPs, bytes) from inferred shapes, per-node time
against a target's peak compute and bandwidth, transfer cost at partition boundaries, and peak
memory (weights + the largest set of activations alive at once, from a liveness pass).

Conventions (the tests pin them exactly):
- FLOPs = 2 x MACs for Conv/ConvTranspose/MatMul/Gemm (bias adds are not counted);
  elementwise ops: 1 per output element; pools: 1 per window element per output; Softmax: 3 per element.
- bytes = every data input + every output, at the size the hardware stores them (int8 inside a Q/DQ
  group) + every weight read by the node (int8 for a folded DequantizeLinear weight).
  View ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout) move no bytes.
- A fused epilogue (Relu after Conv, ...) adds its FLOPs to its producer and moves no bytes.
- On an accelerator whose MAC array reduces a fixed number of input channels at a time (Ethos-U: 8),
  a MAC op's FLOPs are counted with its reduction depth rounded up to that granule (`padded_flops`).
- A profile with an `Elementwise` efficiency costs elementwise ops on the accelerator per output element
  (2 ops each) under that efficiency: NPUs run them on an elementwise unit, not the MAC array.
- node time = max(FLOPs / (peak x efficiency[op]), bytes / (bandwidth x bandwidth_efficiency)) + overhead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgeship.targets.graphinfo import QDQ_OPS, VIEW_OPS, GraphInfo, NodeInfo
from edgeship.targets.profileview import ProfileView

ELEMENTWISE_FLOPS = {
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Relu": 1, "LeakyRelu": 2, "PRelu": 2, "Clip": 2, "Max": 1, "Min": 1,
    "Sum": 1, "Mean": 1, "Sigmoid": 4, "HardSigmoid": 3, "HardSwish": 4, "Tanh": 4, "Exp": 4, "Log": 4, "Sqrt": 2,
    "Pow": 4, "Erf": 4, "Gelu": 8, "Neg": 1, "Abs": 1, "Reciprocal": 1, "Where": 1, "Equal": 1, "Greater": 1,
    "Less": 1, "Not": 1, "And": 1, "Or": 1, "Cast": 1, "QuantizeLinear": 2, "DequantizeLinear": 2,
    "BatchNormalization": 2, "InstanceNormalization": 5, "LayerNormalization": 5, "Softplus": 4, "Elu": 4,
    "Selu": 4, "Floor": 1, "Ceil": 1, "Round": 1, "Sign": 1, "Mod": 1,
}
REDUCE_OPS = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceProd", "GlobalAveragePool",
              "GlobalMaxPool", "ArgMax", "ArgMin"}


@dataclass
class NodeWork:
    """What one node computes and moves, independent of any target."""

    name: str
    op_type: str
    fmt: str
    macs: int
    flops: int
    bytes_in: int
    bytes_out: int
    weight_bytes: int
    shape_known: bool
    dram_bytes: int | None = None  # bytes through external memory when on-chip memory keeps some (None: all)
    depthwise: bool = False  # a Conv with one input channel per group
    reduce_depth: int = 0  # length of each MAC's reduction along channels (Conv: C_in per group; MatMul: K)
    elements: int = 0  # output elements (what an NPU's elementwise unit is paced by)

    @property
    def bytes(self) -> int:
        return self.bytes_in + self.bytes_out + self.weight_bytes

    @property
    def external_bytes(self) -> int:
        return self.bytes if self.dram_bytes is None else self.dram_bytes


def _prod(values) -> int:
    return int(np.prod(list(values), dtype=np.int64)) if values else 1


def _numel(g: GraphInfo, name: str) -> int | None:
    t = g.info(name)
    return None if t is None else t.numel


def _shape(g: GraphInfo, name: str):
    t = g.info(name)
    return None if t is None else t.shape


def node_macs_flops(g: GraphInfo, n: NodeInfo) -> tuple[int, int, bool]:
    """(MACs, FLOPs, shape_known) of one node, not counting fused epilogues."""
    op = n.op_type
    ins = [i for i in n.node.input]
    out = n.node.output[0] if n.node.output else ""
    out_shape = _shape(g, out)
    out_numel = _numel(g, out)
    if op in VIEW_OPS:
        return 0, 0, True
    if op == "Conv" or op == "ConvInteger":
        w = _shape(g, ins[1])
        if w is None or out_shape is None:
            return 0, 0, False
        macs = _prod(out_shape) * _prod(w[1:])  # N*M*out_spatial * (C/g)*k...
        return macs, 2 * macs, True
    if op == "ConvTranspose":
        x, w = _shape(g, ins[0]), _shape(g, ins[1])
        if x is None or w is None:
            return 0, 0, False
        macs = _prod(x) * _prod(w[1:])  # N*C*in_spatial * (M/g)*k...
        return macs, 2 * macs, True
    if op in ("MatMul", "MatMulInteger"):
        a = _shape(g, ins[0])
        if a is None or out_shape is None:
            return 0, 0, False
        k = a[-1] if len(a) >= 1 else 1
        macs = _prod(out_shape) * k
        return macs, 2 * macs, True
    if op == "Gemm":
        a = _shape(g, ins[0])
        if a is None or out_shape is None:
            return 0, 0, False
        k = a[0] if n.attrs.get("transA", 0) else a[1]
        macs = _prod(out_shape) * k
        return macs, 2 * macs, True
    if op in ("MaxPool", "AveragePool", "LpPool"):
        if out_numel is None:
            return 0, 0, False
        return 0, out_numel * _prod(n.attrs.get("kernel_shape", [1])), True
    if op in REDUCE_OPS:
        x = _numel(g, ins[0]) if ins else None
        return (0, x, True) if x is not None else (0, 0, False)
    if op == "Softmax" or op == "LogSoftmax":
        return (0, 3 * out_numel, True) if out_numel is not None else (0, 0, False)
    if op == "LRN":
        size = int(n.attrs.get("size", 1))
        return (0, out_numel * (size + 3), True) if out_numel is not None else (0, 0, False)
    if op in ELEMENTWISE_FLOPS:
        return (0, ELEMENTWISE_FLOPS[op] * out_numel, True) if out_numel is not None else (0, 0, False)
    # data movement (Concat, Transpose, Slice, Gather, Pad, Resize, ...): bytes, no arithmetic
    return 0, 0, out_numel is not None


def node_work(g: GraphInfo, n: NodeInfo) -> NodeWork:
    """Work of an active node, with the FLOPs of the epilogues fused into it."""
    macs, flops, known = node_macs_flops(g, n)
    for other in g.fused_children.get(n.name, []):
        _, f, k = node_macs_flops(g, other)
        flops += f
        known = known and k
    if n.op_type in VIEW_OPS:
        bytes_in = bytes_out = weight = 0
    else:
        bytes_in = sum(g.effective_bytes(i, n) or 0 for i in g.data_inputs(n))
        last = _fused_output(g, n)
        bytes_out = sum(g.effective_bytes(o, n) or 0 for o in last)
        weight = sum(g.weight_bytes_of(w) for w in dict.fromkeys(g.weight_inputs(n)))
        for other in g.fused_children.get(n.name, []):
            weight += sum(g.weight_bytes_of(w) for w in g.weight_inputs(other))
    return NodeWork(n.name, n.op_type, g.compute_format(n), int(macs), int(flops), int(bytes_in), int(bytes_out),
                    int(weight), known, depthwise=_is_depthwise(g, n), reduce_depth=_reduce_depth(g, n),
                    elements=sum(_numel(g, o) or 0 for o in _fused_output(g, n)))


def _is_depthwise(g: GraphInfo, n: NodeInfo) -> bool:
    if n.op_type != "Conv" or int(n.attrs.get("group", 1)) <= 1 or len(n.node.input) < 2:
        return False
    w = _shape(g, n.node.input[1])
    return bool(w) and len(w) > 1 and w[1] == 1


def _reduce_depth(g: GraphInfo, n: NodeInfo) -> int:
    """Channels each output's MACs reduce over (0: not a MAC op or shape unknown)."""
    shape = _shape(g, n.node.input[1]) if n.op_type in ("Conv", "ConvInteger") and len(n.node.input) > 1 else None
    if shape is not None and len(shape) > 1:
        return int(shape[1])
    if n.op_type in ("MatMul", "MatMulInteger", "Gemm") and n.node.input:
        a = _shape(g, n.node.input[0])
        if a:
            return int(a[0] if n.op_type == "Gemm" and n.attrs.get("transA", 0) else a[-1])
    return 0


def padded_flops(work: NodeWork, granule: int | None) -> int:
    """FLOPs the MAC array spends when it reduces `granule` channels at a time: the reduction depth is
    rounded up to a multiple of it (depth 1 -> 8x the MACs, depth 64 -> unchanged)."""
    if not granule or not work.macs or work.reduce_depth <= 0:
        return work.flops
    padded = -(-work.reduce_depth // granule) * granule
    return work.flops + 2 * work.macs * (padded - work.reduce_depth) // work.reduce_depth


def _fused_output(g: GraphInfo, n: NodeInfo) -> list[str]:
    """Outputs the node really writes: those of the last epilogue fused into it."""
    outs = [o for o in n.node.output if o]
    for other in g.fused_children.get(n.name, []):
        outs = [o for o in other.node.output if o]
    return outs


def _on_chip(g: GraphInfo, n: NodeInfo, work: NodeWork, sram: int, weights_on_chip: bool) -> NodeWork:
    """The bytes an accelerator node moves through external memory: activations up to half the
    on-chip memory (double-buffered) stay on chip; weights too when all of them fit in the other half."""
    def spilled(names: list[str]) -> int:
        sizes = [g.effective_bytes(t, n) or 0 for t in names]
        return sum(s for s in sizes if s > sram // 2)

    if n.op_type in VIEW_OPS:
        return work
    work.dram_bytes = spilled(g.data_inputs(n)) + spilled(_fused_output(g, n)) + (0 if weights_on_chip else work.weight_bytes)
    return work


# -- memory ------------------------------------------------------------------------------------------------
def weight_bytes(g: GraphInfo) -> int:
    """Bytes of every constant the running graph reads (stored size: int8 weights stay int8)."""
    seen: dict[str, int] = {}
    for n in g.nodes:
        if n.folded or n.absorbed:
            continue
        for w in g.weight_inputs(n):
            if w not in seen:
                seen[w] = g.weight_bytes_of(w)
    return sum(seen.values())


def _alias(g: GraphInfo) -> dict[str, str]:
    """Tensors that are the same buffer as another (absorbed Q/DQ, fused epilogues, views)."""
    alias: dict[str, str] = {}
    for n in g.nodes:
        if n.folded or not n.node.input or not n.node.output:
            continue
        if n.absorbed or n.fused_into or n.op_type in VIEW_OPS:
            src = n.node.input[0]
            alias[n.node.output[0]] = alias.get(src, src)
    return alias


def peak_activation_bytes(g: GraphInfo) -> tuple[int, str]:
    """Largest sum of activation bytes alive at once (executing nodes in graph order).

    A tensor lives from the step that produces it (graph inputs: from the start) to its last
    reader (graph outputs: to the end); while a node runs, its inputs and outputs are both alive.
    Returns (bytes, name of the node at the peak).
    """
    alias = _alias(g)
    root = lambda t: alias.get(t, t)  # noqa: E731
    steps = [n for n in g.nodes if n.active]
    size: dict[str, int] = {}
    born: dict[str, int] = {}
    dies: dict[str, int] = {}
    end = len(steps)
    for name in g.graph_inputs:
        born[name] = -1
    for idx, n in enumerate(steps):
        for o in _fused_output(g, n):
            born.setdefault(root(o), idx)
        for i in g.data_inputs(n):
            dies[root(i)] = idx
    for o in g.graph_outputs:
        dies[root(o)] = end
    for t in born:
        quant = None
        prod = g.real_producer(t)
        if prod is not None and prod.quant_format:
            quant = prod
        size[t] = g.effective_bytes(t, quant) or 0
        # a float tensor that an absorbed Q turns into int8 on the way out is held as int8
        for c in g.consumers.get(t, []):
            if c.absorbed and c.op_type == "QuantizeLinear" and quant is None:
                size[t] = min(size[t], g.effective_bytes(c.node.output[0]) or size[t])
    # sweep: a tensor adds its size at max(born, 0) and leaves after its last step
    delta = [0] * (end + 1)
    for t, nbytes in size.items():
        first, last = max(born[t], 0), max(dies.get(t, born[t]), born[t])
        if last < 0 or first > end - 1:
            continue
        delta[first] += nbytes
        delta[min(last, end - 1) + 1] -= nbytes
    peak, at, live = 0, "", 0
    for idx, n in enumerate(steps):
        live += delta[idx]
        if live > peak:
            peak, at = live, n.name
    return peak, at


# -- time --------------------------------------------------------------------------------------------------
@dataclass
class NodeEstimate:
    name: str
    op_type: str
    unit: str  # accelerator | host
    fmt: str
    macs: int
    flops: int
    bytes: int
    compute_us: float
    memory_us: float
    time_us: float
    bound: str  # compute | memory | overhead
    partition: int | None
    shape_known: bool

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["intensity"] = round(self.intensity, 4)
        d["achieved_gops"] = round(self.flops / self.time_us / 1e3, 4) if self.time_us > 0 else 0.0
        for k in ("compute_us", "memory_us", "time_us"):
            d[k] = round(d[k], 3)
        return d


QUANTIZED_NAMES = {"Conv": "QLinearConv", "MatMul": "QLinearMatMul", "Gemm": "QGemm"}


def efficiency_key(work: NodeWork) -> str:
    """The efficiency-table key of a node: a Conv/MatMul/Gemm inside a Q/DQ group is the quantized
    op (QLinearConv, QLinearMatMul, QGemm), whose efficiency differs from the float kernel's; the
    cost model falls back to the float op's entry when the table has no quantized one."""
    if work.fmt in ("int8", "uint8") and work.op_type in QUANTIZED_NAMES:
        return QUANTIZED_NAMES[work.op_type]
    return work.op_type


def is_elementwise(work: NodeWork) -> bool:
    """An elementwise arithmetic or activation op that is not (de)quantization."""
    return work.op_type in ELEMENTWISE_FLOPS and work.op_type not in QDQ_OPS and not work.macs


def compiles_qdq_away(profile: ProfileView) -> bool:
    from edgeship.targets.backends import integer_only

    return integer_only(profile.data)


def node_time(work: NodeWork, unit: str, profile: ProfileView) -> tuple[float, float, float, str, str]:
    """(compute_us, memory_us, total_us, bound, note) for one node on one unit."""
    fmt = work.fmt
    if work.depthwise and fmt in ("int8", "uint8") and profile.unit_is_cpu(unit):
        # a depthwise conv has no channel reduction for the CPU's int8 dot-product instructions
        # (VNNI / SDOT reduce 4 int8 products along K): it runs at the float rate, not the int8 one
        fmt = "float32"
    peak, note = profile.peak_ops_per_s(unit, fmt)
    key = efficiency_key(work)
    if work.depthwise and profile.has_efficiency("DepthwiseConv"):  # NPUs reach a fraction of their dense rate
        key = "DepthwiseConv"
    flops = padded_flops(work, profile.reduction_granule()) if unit == "accelerator" else work.flops
    if unit == "accelerator" and is_elementwise(work) and profile.has_efficiency("Elementwise"):
        # an NPU's elementwise unit (Ethos-U: add/mul with rescale, LUT activations) is paced per output
        # element, not by the MAC array: one MAC-equivalent per element at the class's efficiency
        key, flops = "Elementwise", 2 * work.elements
    eff = profile.efficiency(key) if profile.has_efficiency(key) else profile.efficiency(work.op_type)
    compute_us = flops / (peak * eff) * 1e6 if (peak and flops) else 0.0
    bw = profile.bandwidth_bytes_per_s()
    memory_us = work.external_bytes / (bw * profile.bandwidth_efficiency()) * 1e6 if (bw and work.external_bytes) else 0.0
    overhead = profile.per_node_overhead_us()
    if work.op_type in QDQ_OPS and unit == "accelerator" and compiles_qdq_away(profile):
        overhead = 0.0  # an integer compiler (Vela, the TFLite emitter) folds (de)quantization into its neighbours
    body = max(compute_us, memory_us)
    bound = "overhead" if body < overhead else ("compute" if compute_us >= memory_us else "memory")
    return compute_us, memory_us, body + overhead, bound, note


def transfer_us(nbytes: int, profile: ProfileView) -> float:
    bw = profile.host_link_bytes_per_s()
    lat = profile.host_link_latency_us()
    return lat + (nbytes / bw * 1e6 if bw else 0.0)


def estimate(g: GraphInfo, profile, placement: dict | None = None) -> dict:
    """The `estimate` report section: per node, per partition, per op type, total; peak memory.

    `placement` is the legalize section (from placement.legalize); without it every node runs on
    the accelerator (the unit the profile calls accelerator; on CPU targets that is the CPU).
    """
    profile = profile if isinstance(profile, ProfileView) else ProfileView(profile)
    where = {row["name"]: row for row in (placement or {}).get("nodes", [])}
    notes: set[str] = set()
    rows: list[NodeEstimate] = []
    sram = profile.sram_bytes()
    weights_on_chip = bool(sram) and weight_bytes(g) <= sram // 2
    if sram:
        notes.add(f"on-chip memory {sram // 1024} KiB: tensors up to {sram // 2048} KiB stay on chip"
                  + ("; all weights resident on chip" if weights_on_chip else "; weights stream from external memory"))
    unknown: list[str] = []
    for n in g.active_nodes():
        placed = where.get(n.name, {})
        if placed.get("absorbed_into"):  # a backend computes it inside another node's operators (e.g. GATHER)
            continue
        unit = placed.get("unit", "accelerator")
        if unit == "rejected":
            unit = "host"
        work = node_work(g, n)
        if placed.get("runs_as"):
            work.fmt = placed["runs_as"]
        if unit == "accelerator" and sram:
            work = _on_chip(g, n, work, sram, weights_on_chip)
        if not work.shape_known:
            unknown.append(n.name)
        c_us, m_us, t_us, bound, note = node_time(work, unit, profile)
        if note:
            notes.add(note)
        rows.append(NodeEstimate(n.name, n.op_type, unit, work.fmt, work.macs, work.flops, work.bytes, c_us, m_us,
                                 t_us, bound, placed.get("partition"), work.shape_known))
    transfers = (placement or {}).get("transfers", [])
    transfer_rows = [dict(t, time_us=round(transfer_us(t["bytes"], profile), 3)) for t in transfers]
    if transfer_rows and not profile.host_link_bytes_per_s() and not profile.host_link_latency_us():
        notes.add(f"host link figures not public: {len(transfer_rows)} transfer(s) not costed")
    compute_total = sum(r.time_us for r in rows)
    transfer_total = sum(t["time_us"] for t in transfer_rows)
    per_run = profile.per_run_overhead_us()
    total_us = compute_total + transfer_total + per_run

    partitions = []
    for p in (placement or {}).get("partitions", []):
        members = [r for r in rows if r.partition == p["id"]]
        partitions.append({"id": p["id"], "nodes": len(members), "time_us": round(sum(r.time_us for r in members), 3),
                           "flops": sum(r.flops for r in members)})
    by_op: dict[str, dict] = {}
    for r in rows:
        agg = by_op.setdefault(r.op_type, {"op_type": r.op_type, "count": 0, "time_us": 0.0, "flops": 0})
        agg["count"] += 1
        agg["time_us"] += r.time_us
        agg["flops"] += r.flops
    for agg in by_op.values():
        agg["time_us"] = round(agg["time_us"], 3)

    wbytes = weight_bytes(g)
    act_peak, at = peak_activation_bytes(g)
    if unknown:
        notes.add(f"{len(unknown)} node(s) with unknown shapes costed as overhead only: {', '.join(unknown[:5])}")
    return {
        "target": profile.name,
        "latency_ms": round(total_us / 1000.0, 4),
        "compute_ms": round(compute_total / 1000.0, 4),
        "transfer_ms": round(transfer_total / 1000.0, 4),
        "per_run_overhead_ms": round(per_run / 1000.0, 4),
        "peak_memory_kb": round((wbytes + act_peak) / 1024.0, 3),
        "peak_memory_bytes": int(wbytes + act_peak),
        "weights_kb": round(wbytes / 1024.0, 2),
        "peak_activations_kb": round(act_peak / 1024.0, 2),
        "peak_at": at,
        "macs": sum(r.macs for r in rows),
        "flops": sum(r.flops for r in rows),
        "per_node": [r.as_dict() for r in rows],
        "per_op_type": sorted(by_op.values(), key=lambda a: -a["time_us"]),
        "partitions": partitions,
        "transfers": len(transfer_rows),
        "transfer_list": transfer_rows,
        "roofs": profile.roofs(),
        "calibrated": profile.calibrated(),
        "notes": sorted(notes),
    }
