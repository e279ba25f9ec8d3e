"""`quantization.mode: auto`: build candidates, measure them, keep the best that meets the accuracy budget.

Candidates: the float model; static int8 per-channel and per-tensor (those the target allows);
dynamic int8 where the target runs onnxruntime and the model has MatMuls; and, when no static
candidate meets the budget, the best static one with its most sensitive layers kept in float
(1, 2, 4, ... layers, by measured per-layer sensitivity) until one does.

"Best" on a measurable target (this host) is the fastest *measured* p50 among those meeting the
budget: int8 QDQ is often slower than float on CPU for small or depthwise-heavy models (onnxruntime
#20052, #17389), so nothing is assumed. On a target we cannot measure, the accelerator runs integer
formats only, so the most-quantized candidate meeting the budget wins (fewest float layers), float last.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import onnx

from edgeship.pipelines import metrics
from edgeship.pipelines.data import sample_count, strided
from edgeship.stages import quant_measure, quant_ort
from edgeship.stages.quant_sensitivity import rank_nodes

SENSITIVITY_SAMPLES = 8
MAX_KEEP_FLOAT_STEPS = 6  # 1, 2, 4, 8, 16, 32 layers
LATENCY_BUDGET_S = 1.5  # per candidate, split into interleaved rounds


def accuracy_goal(ctx) -> dict:
    """The accuracy budget auto must meet: the manifest's, else a default by task."""
    acc = ctx.setting("budget", "accuracy") or {}
    task = ctx.setting("model", "task")
    metric = acc.get("metric") or ("top1_agreement" if task in (None, "classification") else "cosine")
    if metrics.HIGHER_IS_BETTER[metric]:
        bound = acc.get("min", 0.99 if metric in ("top1_agreement", "cosine") else 30.0)
    else:
        bound = acc.get("max", 0.1)
    return {"metric": metric, "bound": float(bound), "direction": "min" if metrics.HIGHER_IS_BETTER[metric] else "max",
            "from_manifest": bool(acc)}


def evaluation_data(ctx) -> tuple[dict, str]:
    """Exactly the inputs validate will use, so the candidate auto keeps is the one validate passes."""
    from edgeship.stages.validate import validation_inputs

    data, info = validation_inputs(ctx)
    return data, info["source"]


def _has_op(path: Path, ops: set[str]) -> bool:
    return any(n.op_type in ops for n in onnx.load(str(path), load_external_data=False).graph.node)


def _count_float_compute(path: Path) -> int:
    return sum(1 for n in onnx.load(str(path), load_external_data=False).graph.node
               if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose"))


class Candidates:
    """Builds candidate models, scores their accuracy against the float reference, keeps the table."""

    def __init__(self, ctx, policy, pre: Path, calib: dict, keep: list[str], work: Path, goal: dict, eval_data: dict):
        self.ctx, self.policy, self.pre, self.calib, self.keep, self.work = ctx, policy, pre, calib, keep, work
        self.goal, self.eval_data = goal, eval_data
        self.cache = work / "calibration.json"
        self.rows: list[dict] = []
        ref_sess = quant_measure.session(ctx.float_model_path or pre, threads=0)
        self.reference = quant_measure.run_all(ref_sess, eval_data)
        self.names = quant_measure.output_names(ref_sess)
        self.metric_names = metrics.default_metrics(ctx.setting("model", "task"))
        if goal["metric"] not in self.metric_names:
            self.metric_names.append(goal["metric"])

    def score(self, path: Path) -> dict:
        outs = quant_measure.run_all(quant_measure.session(path, threads=0), self.eval_data)
        return metrics.compare(self.reference, outs, self.names, self.metric_names)["primary"]

    def add(self, name: str, kind: str, path: Path, **facts) -> dict:
        start = time.perf_counter()
        accuracy = self.score(path)
        value = accuracy[self.goal["metric"]]
        row = {"name": name, "kind": kind, "path": str(path), "accuracy": accuracy,
               "meets_accuracy": metrics.meets(self.goal["metric"], value, self.goal["bound"]),
               "size_kb": round(path.stat().st_size / 1024, 1), "latency_ms": None, **facts}
        row["score_s"] = round(time.perf_counter() - start, 3)
        self.rows.append(row)
        return row

    def static(self, name: str, per_channel: bool, exclude: list[str], policy=None) -> dict:
        policy = policy or self.policy
        path = self.work / f"{name}.onnx"
        quant_ort.quantize_static_qdq(self.pre, path, policy, self.calib, self.cache, exclude, per_channel)
        facts = {"per_channel": per_channel, "float_nodes": len(exclude), "activations": policy.activation_dtype}
        if self.policy.power_of_two:
            from edgeship.stages.quantize import apply_power_of_two

            facts["power_of_two"] = apply_power_of_two(path)
        return self.add(name, "static", path, **facts)


def _measure_latency(rows: list[dict], feed: dict) -> None:
    """Interleaved p50 (single thread) for every candidate, bounded by LATENCY_BUDGET_S each."""
    paths = {r["name"]: Path(r["path"]) for r in rows}
    probe = {}
    for name, path in paths.items():
        sess = quant_measure.session(path, threads=1)
        quant_measure.time_runs(sess, feed, 2)
        probe[name] = max(1e-3, min(quant_measure.time_runs(sess, feed, 3)))
    slowest_ms = max(probe.values())
    runs = int(max(2, min(20, LATENCY_BUDGET_S * 1000 / slowest_ms / 5)))
    p50 = quant_measure.interleaved_p50(paths, feed, rounds=5, runs=runs, threads=1)
    for r in rows:
        r["latency_ms"] = round(p50[r["name"]], 4)


def choose(ctx, policy, src: Path, pre: Path, calib: dict, keep: list[str], work: Path, report: dict) -> Path | None:
    """Run auto; fills report["candidates"], returns the chosen model path (None: keep the float model)."""
    goal = accuracy_goal(ctx)
    eval_data, source = evaluation_data(ctx)
    report["accuracy_goal"] = {**goal, "data": source, "samples": sample_count(eval_data)}
    cands = Candidates(ctx, policy, pre, calib, keep, work, goal, eval_data)
    cands.add("float", "float", Path(ctx.float_model_path or src), float_nodes=_count_float_compute(src))
    statics = []
    if policy.per_channel_allowed:
        statics.append(cands.static("static-per-channel", True, keep))
    if policy.per_tensor_allowed:
        statics.append(cands.static("static-per-tensor", False, keep))
    for dtype in policy.alternative_activation_dtypes:  # e.g. S8S8 next to U8S8: which is faster depends on the CPU
        statics.append(cands.static(f"static-per-tensor-a{dtype}" if policy.per_tensor_allowed else f"static-per-channel-a{dtype}",
                                    not policy.per_tensor_allowed, keep, replace(policy, activation_dtype=dtype)))
    if policy.dynamic_allowed and _has_op(pre, set(quant_ort.DYNAMIC_OP_TYPES)):
        path = work / "dynamic.onnx"
        quant_ort.quantize_dynamic_int8(pre, path, policy, keep, policy.per_channel_allowed)
        cands.add("dynamic", "dynamic", path, per_channel=policy.per_channel_allowed, float_nodes=None)

    if statics and not any(r["meets_accuracy"] for r in statics) and not policy.integer_only:
        higher = metrics.HIGHER_IS_BETTER[goal["metric"]]
        base = sorted(statics, key=lambda r: r["accuracy"][goal["metric"]], reverse=higher)[0]
        ranking = rank_nodes(Path(ctx.float_model_path or pre), Path(base["path"]), strided(eval_data, SENSITIVITY_SAMPLES), work)
        report["sensitivity"] = ranking[:20]
        order = [r["node"] for r in ranking if r["node"] not in keep]
        k = 1
        for _ in range(MAX_KEEP_FLOAT_STEPS if order else 0):
            if k > len(order):
                k = len(order)
            exclude = keep + order[:k]
            row = cands.static(f"{base['name']}+float{k}", base["per_channel"], exclude,
                               replace(policy, activation_dtype=base["activations"]))
            row["kept_float"] = order[:k]
            if row["meets_accuracy"] or k == len(order):
                break
            k *= 2

    measurable = bool(ctx.target_data.get("measurable", False))
    meeting = [r for r in cands.rows if r["meets_accuracy"] and (r["kind"] == "static" or not policy.integer_only)]
    if measurable:
        _measure_latency(cands.rows, quant_measure.first_feed(eval_data))
        best = min(meeting, key=lambda r: r["latency_ms"]) if meeting else cands.rows[0]
        reason = (f"fastest measured p50 on this host among candidates meeting {goal['metric']} "
                  f"{goal['direction']} {goal['bound']}")
    else:
        def preference(r):  # integer first, fewest float layers, then accuracy
            is_float = r["kind"] == "float"
            return (is_float, r.get("float_nodes") or 0, r["kind"] != "static", -r["accuracy"][goal["metric"]])
        best = min(meeting, key=preference) if meeting else cands.rows[0]
        reason = (f"target {ctx.target_name} is not measurable here: most-quantized candidate meeting "
                  f"{goal['metric']} {goal['direction']} {goal['bound']}")
    if not meeting and policy.integer_only and statics:  # float cannot ship on this backend: best integer one
        higher = metrics.HIGHER_IS_BETTER[goal["metric"]]
        best = sorted(statics, key=lambda r: r["accuracy"][goal["metric"]], reverse=higher)[0]
        reason = (f"no candidate met the accuracy budget; {ctx.target_name}'s backend runs integer models only, so the "
                  "most accurate fully integer one is kept (validate will report the miss)")
    elif not meeting:
        reason = "no candidate met the accuracy budget; float kept (validate will report it)"
    for r in cands.rows:
        r["selected"] = r is best
    report["candidates"] = [{k: v for k, v in r.items() if k != "path"} for r in cands.rows]
    report["selected"] = best["name"]
    report["reason"] = reason
    return None if best["kind"] == "float" else Path(best["path"])
