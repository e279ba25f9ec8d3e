"""Fit the roofline's Ethos-U factors to Vela's own figures.

Vela's cycle estimate is the best latency figure there is for an Ethos-U without the chip; the
roofline exists for what Vela does not see (a target without the backend installed, what-if
comparisons). Five factors are fitted per target: the MAC efficiency (fraction of peak) of dense ops
(convolutions, depthwise included, and FullyConnected) and of MatMul (two activations: attention), the elementwise unit's rate
(per output element, as a fraction of the MAC peak), a per-node overhead and a per-run overhead. The
roofline they scale already knows the two structural costs Vela's per-layer cycles show: MAC ops
count their reduction depth rounded up to the NPU's 8-channel granule (a depthwise conv or 1-channel
stem uses 1/8 of the MAC lanes), and elementwise ops are paced per element, not per FLOP at the MAC
peak (65% of Vela's time on the PP-OCR classifier, 38% on magika). A class no sample has takes the
dense figure (no evidence either way). Only the nodes Vela put on the NPU are compared, since its figure covers the NPU's
command stream only. The objective is the squared log ratio (2x too slow and 2x too fast weigh the
same), minimised by coordinate descent over grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EFFICIENCY_GRID = np.geomspace(2e-4, 1.0, 64)
PER_NODE_GRID_US = [0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
PER_RUN_GRID_US = [0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
CLASSES = ("default", "MatMul", "Elementwise")  # efficiency-table keys the fit sets
ROUNDS = 4


@dataclass
class Sample:
    """One model built for one target: its graph, the placement the build used, Vela's latency."""
    name: str
    graph: object  # targets.graphinfo.GraphInfo
    placement: dict  # the legalize section (Vela's placement applied)
    vela_ms: float


def cost_model(efficiency: dict, per_node_us: float, per_run_us: float) -> dict:
    return {"efficiency": {k: float(v) for k, v in efficiency.items()},
            "per_node_overhead_us": float(per_node_us), "per_run_overhead_us": float(per_run_us)}


def _view(profile, factors: dict):
    from edgeship.targets.calibrate import with_cost_model

    return with_cost_model(profile, factors)


def _terms(sample: Sample, profile) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """NPU nodes: compute us at 100% efficiency, memory us, efficiency class; overhead-bearing node count."""
    from edgeship.targets.costmodel import estimate, is_elementwise, node_work

    section = estimate(sample.graph, _view(profile, cost_model({k: 1.0 for k in CLASSES}, 0.0, 0.0)), sample.placement)
    absorbed = {r["name"] for r in sample.placement.get("nodes", []) if r.get("absorbed_into")}
    rows = [r for r in section["per_node"] if r.get("unit") == "accelerator" and r["name"] not in absorbed]
    classes = []
    for r in rows:
        node = sample.graph.by_name.get(r["name"])
        work = node_work(sample.graph, node) if node is not None else None
        if r["op_type"] == "MatMul":
            classes.append(1)
        elif work is not None and is_elementwise(work):
            classes.append(2)
        else:
            classes.append(0)
    compute = np.asarray([r["compute_us"] for r in rows], dtype=float)
    memory = np.asarray([r["memory_us"] for r in rows], dtype=float)
    counted = sum(1 for r in rows if r["op_type"] not in ("QuantizeLinear", "DequantizeLinear"))  # compiles_qdq_away
    return compute, memory, np.asarray(classes, dtype=int), counted


def npu_ms(sample: Sample, profile) -> float:
    """The roofline's time for the nodes Vela put on the NPU, plus the per-run overhead."""
    from edgeship.targets.costmodel import estimate

    section = estimate(sample.graph, profile, sample.placement)
    return sum(r["time_us"] for r in section["per_node"] if r.get("unit") == "accelerator") / 1000.0 + \
        section["per_run_overhead_ms"]


def fit(samples: list[Sample], profile) -> dict:
    """{cost_model, rows: [{model, vela_ms, estimate_ms (NPU nodes only, as Vela), ratio}], worst_ratio}."""
    if not samples:
        raise ValueError("no samples to fit")
    terms = [_terms(s, profile) for s in samples]
    vela_us = np.asarray([s.vela_ms * 1000.0 for s in samples])
    counts = np.asarray([t[3] for t in terms], dtype=float)

    def loss(eff: list[float], p: float, r: float) -> float:
        e = np.asarray(eff)
        body = np.asarray([np.sum(np.maximum(c / e[k], m)) if len(c) else 0.0 for c, m, k, _ in terms])
        est = body + counts * p + r
        return float(np.sum(np.log(np.maximum(est, 1e-9) / vela_us) ** 2))

    seen = [any(np.any(c[k == i] > 0) for c, _, k, _ in terms) for i in range(len(CLASSES))]
    eff, p, r = [0.3, 0.3, 0.01], 1.0, 0.0
    for _ in range(ROUNDS):
        for i in range(len(CLASSES)):
            if seen[i]:
                eff[i] = float(min(EFFICIENCY_GRID, key=lambda v: loss(eff[:i] + [v] + eff[i + 1:], p, r)))
        p, r = min(((a, b) for a in PER_NODE_GRID_US for b in PER_RUN_GRID_US), key=lambda ab: loss(eff, *ab))
    for i in range(1, len(CLASSES)):  # a class no sample has: no evidence, so the dense figure
        if not seen[i]:
            eff[i] = eff[0]
    factors = cost_model({k: round(v, 4) for k, v in zip(CLASSES, eff)}, p, r)
    rows = []
    for s in samples:
        est = npu_ms(s, _view(profile, factors))
        rows.append({"model": s.name, "vela_ms": round(s.vela_ms, 4), "estimate_ms": round(est, 4),
                     "ratio": round(est / s.vela_ms, 3) if s.vela_ms else math.nan})
    worst = max(max(x["ratio"], 1 / x["ratio"]) for x in rows)
    return {"cost_model": factors, "rows": rows, "worst_ratio": round(worst, 2)}


def leave_one_out(samples: list[Sample], profile) -> list[dict]:
    """Each model estimated with the factors fitted on the others: how the calibration generalises
    to a model it has not seen (the in-sample ratio of a 5-factor fit on 5 models flatters it)."""
    rows = []
    for i, s in enumerate(samples):
        factors = fit(samples[:i] + samples[i + 1:], profile)["cost_model"]
        est = npu_ms(s, _view(profile, factors))
        rows.append({"model": s.name, "vela_ms": round(s.vela_ms, 4), "estimate_ms": round(est, 4),
                     "ratio": round(est / s.vela_ms, 3) if s.vela_ms else math.nan})
    return rows
