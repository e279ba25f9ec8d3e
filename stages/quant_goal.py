"""The accuracy goal a quantized model is held to: which metric, per output, with which bound, and why.

Top-1 agreement is only meaningful on class scores: on a detector's `(1, 84, 2100)` boxes x classes
it measured 0.04 for a candidate whose cosine was 0.9999. So the metric follows the task:
`model.task` when the manifest says it, else inferred per output from what the float model
produces - class probabilities (a Softmax producer, or non-negative rows summing to 1 over a
small last axis) get top-1 agreement, everything else cosine (with SQNR reported beside it).
A manifest `budget.accuracy` applies to the first output (what validate checks); every other
output keeps its own default, so a multi-output model is held on all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from edgeship.pipelines import metrics

CLASS_TASKS = ("classification", "generative")  # class scores / next-token logits: top-1 is meaningful
DENSE_TASKS = ("detection", "segmentation", "regression", "embedding", "generic", "other")
DEFAULT_BOUND = {"top1_agreement": 0.99, "cosine": 0.99, "sqnr_db": 30.0}
MAX_CLASSES = 4096  # a last axis longer than this is not a class-score vector we can recognise
SOFTMAX_OPS = {"Softmax", "LogSoftmax"}


def softmax_outputs(model_path: Path) -> set[str]:
    """Graph outputs produced by a Softmax/LogSoftmax (through shape-only ops)."""
    model = onnx.load(str(model_path), load_external_data=False)
    producers = {o: n for n in model.graph.node for o in n.output}
    found = set()
    for out in model.graph.output:
        node = producers.get(out.name)
        for _ in range(8):  # bounded walk through Reshape/Identity/Flatten/Squeeze
            if node is None or node.op_type not in ("Reshape", "Identity", "Flatten", "Squeeze"):
                break
            node = producers.get(node.input[0])
        if node is not None and node.op_type in SOFTMAX_OPS:
            found.add(out.name)
    return found


def looks_like_class_scores(values: np.ndarray, from_softmax: bool) -> tuple[bool, str]:
    """(is class scores, why) for one output's float values stacked `(N, ...)`."""
    if values.ndim < 2 or values.shape[-1] < 2:
        return False, "not a vector per sample"
    classes = values.shape[-1]
    if from_softmax:
        return True, f"produced by Softmax over {classes} classes"
    if classes > MAX_CLASSES:
        return False, f"last axis of {classes} is too long for class scores"
    rows = np.asarray(values, dtype=np.float64).reshape(-1, classes)
    if rows.size and np.all(np.isfinite(rows)) and rows.min() >= -1e-6 and np.allclose(rows.sum(-1), 1.0, atol=1e-3):
        return True, f"non-negative rows summing to 1 over {classes} classes (probabilities)"
    return False, "values are not per-class probabilities"


def _entry(metric: str, bound: float, why: str) -> dict:
    higher = metrics.HIGHER_IS_BETTER[metric]
    return {"metric": metric, "bound": float(bound), "direction": "min" if higher else "max", "why": why}


def accuracy_goal(task: str | None, budget: dict | None, names: Sequence[str], reference: Sequence[np.ndarray],
                  model_path: Path) -> dict:
    """{task, inferred, outputs: {name: {metric, bound, direction, why}}, metric, bound, direction} (the last
    three: the first output's, what a single-number view shows)."""
    budget = budget or {}
    soft = softmax_outputs(model_path)
    outputs = {}
    for i, (name, values) in enumerate(zip(names, reference)):
        if i == 0 and budget.get("metric"):
            metric = budget["metric"]
            bound = budget.get("min" if metrics.HIGHER_IS_BETTER[metric] else "max")
            bound = DEFAULT_BOUND.get(metric, 0.1) if bound is None else bound
            outputs[name] = _entry(metric, bound, "budget.accuracy in the manifest")
        elif task in CLASS_TASKS:
            outputs[name] = _entry("top1_agreement", 0.99, f"model.task: {task}")
        elif task in DENSE_TASKS:
            outputs[name] = _entry("cosine", 0.99, f"model.task: {task} (top-1 is meaningless on these outputs)")
        else:
            is_class, why = looks_like_class_scores(np.asarray(values), name in soft)
            outputs[name] = (_entry("top1_agreement", 0.99, f"inferred classification: {why}") if is_class
                             else _entry("cosine", 0.99, f"inferred generic output: {why}"))
    first = outputs[names[0]] if names else _entry("cosine", 0.99, "no outputs")
    return {"task": task or "inferred", "inferred": task is None, "outputs": outputs, "from_manifest": bool(budget),
            "metric": first["metric"], "bound": first["bound"], "direction": first["direction"]}


def metric_names(goal: dict) -> list[str]:
    """Every metric to compute: the goal's, plus cosine and SQNR always (the report shows them)."""
    wanted = ["cosine", "sqnr_db", "max_abs_error"]
    for entry in goal["outputs"].values():
        if entry["metric"] not in wanted:
            wanted.insert(0, entry["metric"])
    return wanted


def evaluate(goal: dict, comparison: dict) -> tuple[bool, float]:
    """(every output meets its bound, worst shortfall in the metric's units; <= 0 when met)."""
    worst = float("-inf")
    for name, entry in goal["outputs"].items():
        value = comparison["outputs"].get(name, {}).get(entry["metric"])
        if value is None:
            continue
        worst = max(worst, metrics.shortfall(entry["metric"], value, entry["bound"]))
    worst = 0.0 if worst == float("-inf") else worst
    return worst <= 0, worst


def describe(goal: dict) -> str:
    """One line for reports: `output: metric >= bound (why)` per output."""
    parts = []
    for name, e in goal["outputs"].items():
        parts.append(f"{name}: {e['metric']} {'>=' if e['direction'] == 'min' else '<='} {e['bound']:g} ({e['why']})")
    return "; ".join(parts)
