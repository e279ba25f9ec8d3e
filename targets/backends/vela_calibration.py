"""Fit the roofline's Ethos-U factors to Vela's own figures.

Vela's cycle estimate is the best latency figure there is for an Ethos-U without the chip; the
roofline exists for what Vela does not see (a target without the backend installed, what-if
comparisons). Four factors are fitted per target: the MAC efficiency of dense ops and of depthwise
convolutions (fractions of peak: Vela reports 6-70% utilisation per layer, depthwise at the low
end), a per-node overhead and a per-run overhead. The objective is the squared log ratio, so 2x too
slow and 2x too fast weigh the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EFFICIENCY_GRID = np.geomspace(0.005, 1.0, 48)
PER_NODE_GRID_US = [0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
PER_RUN_GRID_US = [0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]


@dataclass
class Sample:
    """One model built for one target: its graph, the placement the build used, Vela's latency."""
    name: str
    graph: object  # targets.graphinfo.GraphInfo
    placement: dict  # the legalize section (Vela's placement applied)
    vela_ms: float


def cost_model(dense: float, depthwise: float, per_node_us: float, per_run_us: float) -> dict:
    return {"efficiency": {"default": float(dense), "DepthwiseConv": float(depthwise)},
            "per_node_overhead_us": float(per_node_us), "per_run_overhead_us": float(per_run_us)}


def _view(profile, factors: dict):
    from edgeship.targets.calibrate import with_cost_model

    return with_cost_model(profile, factors)


def _terms(sample: Sample, profile) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Per node: compute us at 100% efficiency, memory us, depthwise mask; transfers us; node count."""
    from edgeship.targets.costmodel import estimate, node_work

    section = estimate(sample.graph, _view(profile, cost_model(1.0, 1.0, 0.0, 0.0)), sample.placement)
    rows = section["per_node"]
    depthwise = np.asarray([bool(node_work(sample.graph, sample.graph.by_name[r["name"]]).depthwise)
                            if r["name"] in sample.graph.by_name else False for r in rows])
    compute = np.asarray([r["compute_us"] for r in rows], dtype=float)
    memory = np.asarray([r["memory_us"] for r in rows], dtype=float)
    return compute, memory, depthwise, float(section["transfer_ms"]) * 1000.0, len(rows)


def fit(samples: list[Sample], profile) -> dict:
    """{cost_model, rows: [{model, vela_ms, estimate_ms, ratio}], worst_ratio}."""
    if not samples:
        raise ValueError("no samples to fit")
    terms = [_terms(s, profile) for s in samples]
    vela_us = np.asarray([s.vela_ms * 1000.0 for s in samples])
    counts = np.asarray([t[4] for t in terms], dtype=float)
    best = None
    for e_dense in EFFICIENCY_GRID:
        for e_dw in EFFICIENCY_GRID:
            body = np.asarray([np.sum(np.maximum(np.where(dw, c / e_dw, c / e_dense), m)) + tr
                               for c, m, dw, tr, _ in terms])
            for p in PER_NODE_GRID_US:
                for r in PER_RUN_GRID_US:
                    est = body + counts * p + r
                    loss = float(np.sum(np.log(np.maximum(est, 1e-9) / vela_us) ** 2))
                    if best is None or loss < best[0]:
                        best = (loss, float(e_dense), float(e_dw), p, r)
    _, e_dense, e_dw, p, r = best
    factors = cost_model(round(e_dense, 4), round(e_dw, 4), p, r)
    rows = []
    from edgeship.targets.costmodel import estimate

    for s in samples:
        est = float(estimate(s.graph, _view(profile, factors), s.placement)["latency_ms"])
        rows.append({"model": s.name, "vela_ms": round(s.vela_ms, 4), "estimate_ms": round(est, 4),
                     "ratio": round(est / s.vela_ms, 3) if s.vela_ms else math.nan})
    worst = max(max(x["ratio"], 1 / x["ratio"]) for x in rows)
    return {"cost_model": factors, "rows": rows, "worst_ratio": round(worst, 2)}
