"""Per-layer sensitivity measured end to end, and the search for the fewest layers to leave out of int8.

Why end to end, one layer at a time: ranking layers by the SQNR of their own outputs did not find what
mattered on real networks (keeping 1 to 32 "sensitive" nodes in float did not move the cosine of a
MobileNetV3), and keeping one layer in float out of an all-int8 model says nothing when several
layers break it together (magika: a LayerNorm computed as E[x^2] - E[x]^2 and a decomposed softmax).
So each quantizable layer is quantized *alone* (the rest float; the same scales as the full int8
model, by graph surgery: `quant_subset.compose`) and the task's outputs are compared with float on the
validation data: its relative output noise energy (10^(-SQNR/10)) and the task metric.

The search then adds layers to int8 cheapest-damage-per-MAC first and bisects for the largest set that
still meets the goal (accuracy is near-monotone in the set); a layer's MACs are what int8 saves on
an integer unit. The rest stay float (host) or go to int16 activations (integer-only targets with 16x8).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from edgeship.pipelines import metrics
from edgeship.stages import quant_goal
from edgeship.stages.quant_measure import run_all
from edgeship.stages.quant_subset import compose, quantized_nodes

MAX_BISECT_STEPS = 8


def session_for(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 0
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # one session per layer: build fast
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def output_noise(comparison: dict) -> float:
    """Mean relative noise energy over the outputs (0 = identical to float)."""
    values = [10 ** (-min(o["sqnr_db"], metrics.SQNR_CEILING_DB) / 10) for o in comparison["outputs"].values()]
    return float(np.mean(values)) if values else 0.0


def layer_macs(model_path: Path) -> dict[str, int]:
    """MACs per node (0 for elementwise ops), from the cost model's shape inference."""
    from edgeship.targets.costmodel import node_macs_flops
    from edgeship.targets.graphinfo import GraphInfo

    try:
        g = GraphInfo(onnx.load(str(model_path)))
        return {n.name: int(node_macs_flops(g, n)[0]) for n in g.nodes if n.name}
    except Exception:  # noqa: BLE001 - costs only order the search; without them it still works
        return {}


class Scorer:
    """Runs composed models on the validation data and holds them to the goal."""

    def __init__(self, float_model: onnx.ModelProto, data: Mapping[str, np.ndarray], names: Sequence[str],
                 reference: Sequence[np.ndarray], goal: dict):
        self.float_model, self.data, self.names, self.reference, self.goal = float_model, data, names, reference, goal
        self.wanted = quant_goal.metric_names(goal)
        self.evaluations = 0

    def score(self, choices: Mapping[str, onnx.ModelProto]) -> dict:
        self.evaluations += 1
        outs = run_all(session_for(compose(self.float_model, choices)), self.data)
        comparison = metrics.compare(self.reference, outs, self.names, self.wanted)
        met, short = quant_goal.evaluate(self.goal, comparison)
        first = comparison["primary"]
        return {"meets": met, "shortfall": short, "noise": output_noise(comparison),
                self.goal["metric"]: first.get(self.goal["metric"]), "cosine": first.get("cosine"),
                "sqnr_db": first.get("sqnr_db")}


def rank_layers(scorer: Scorer, qdq: onnx.ModelProto, macs: Mapping[str, int]) -> list[dict]:
    """Every quantized layer, most damaging first: [{node, op_type, macs, noise, <metric>, cosine, sqnr_db, meets}]."""
    ops = {n.name: n.op_type for n in qdq.graph.node}
    rows = []
    for name in quantized_nodes(qdq):
        s = scorer.score({name: qdq})
        rows.append({"node": name, "op_type": ops.get(name, "?"), "macs": int(macs.get(name, 0)),
                     **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in s.items() if k != "shortfall"},
                     "noise": float(f"{s['noise']:.4g}")})
    rows.sort(key=lambda r: (-r["noise"], r["node"]))
    return rows


def int8_order(ranking: Sequence[dict]) -> list[str]:
    """Layers in the order int8 should take them: most MACs per unit of damage first, free layers first of all."""
    def key(r):
        return (-(r["macs"] + 1) / (r["noise"] + 1e-12), r["node"])
    return [r["node"] for r in sorted(ranking, key=key)]


def largest_passing_prefix(order: Sequence[str], evaluate: Callable[[list[str]], dict]) -> tuple[int, list[dict]]:
    """Bisect the largest k whose first k layers in `order` (quantized) meet the goal; returns (k, trials)."""
    trials: list[dict] = []
    lo, hi = 0, len(order)  # invariant: prefix lo passes (0: nothing quantized = float), hi unknown
    full = evaluate(list(order))
    trials.append({"k": len(order), **full})
    if full["meets"]:
        return len(order), trials
    hi = len(order) - 1
    for _ in range(MAX_BISECT_STEPS):
        if lo >= hi:
            break
        mid = (lo + hi + 1) // 2
        result = evaluate(list(order[:mid]))
        trials.append({"k": mid, **result})
        if result["meets"]:
            lo = mid
        else:
            hi = mid - 1
    return lo, trials
