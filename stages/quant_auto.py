"""`quantization.mode: auto`: build candidates, measure them, keep the best that meets the accuracy budget.

Candidates: the float model; static int8 per-channel and per-tensor (those the target allows);
dynamic int8 where the target runs onnxruntime and the model has MatMuls; and, when no static
candidate meets the accuracy goal (`quant_goal`: per output, by task), the recovery of
`quant_recovery`: measured per-layer sensitivity, then the fewest float layers (targets that run
float) and the fewest int16-activation layers (16x8 targets), each built and scored like the rest.
An integer-only target never gets a float layer: if no integer candidate meets the goal the build
fails with a table of the layers that break it.

"Best" on a measurable target (this host) is the fastest *measured* p50 among those meeting the
budget, each candidate timed on the runtime that would ship it (quant_shipped: an emitted .tflite under
LiteRT on host-cpu-litert, the rest under onnxruntime): int8 QDQ is often slower than float on CPU for
small or depthwise-heavy models (onnxruntime #20052, #17389), so nothing is assumed. On a target we
cannot measure, the accelerator runs integer formats only, so the most-quantized candidate meeting the
budget wins (fewest float layers), float last.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import onnx

from edgeship.pipelines import metrics
from edgeship.pipelines.data import sample_count
from edgeship.stages import quant_goal, quant_measure, quant_ort, quant_recovery, quant_shipped

LATENCY_BUDGET_S = 1.5  # per candidate, split into interleaved rounds


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
        start = time.perf_counter()
        self.reference = quant_measure.run_all(ref_sess, eval_data)
        self.reference_seconds_per_sample = (time.perf_counter() - start) / max(1, sample_count(eval_data))
        self.names = quant_measure.output_names(ref_sess)
        self.metric_names = quant_goal.metric_names(goal)
        self.shipped = quant_shipped.ShippedRunner(ctx.target_data, work)

    def score(self, path: Path, kind: str = "static") -> dict:
        """Accuracy against the float reference, on the runtime that will run the candidate (quant_shipped)."""
        outs, runtime, note = self.shipped.outputs(path, self.eval_data, kind)
        comparison = metrics.compare(self.reference, outs, self.names, self.metric_names)
        return {**comparison, "scored_on": runtime, "scoring_note": note}

    def add(self, name: str, kind: str, path: Path, **facts) -> dict:
        start = time.perf_counter()
        comparison = self.score(path, kind)
        met, short = quant_goal.evaluate(self.goal, comparison)
        row = {"name": name, "kind": kind, "path": str(path), "accuracy": comparison["primary"],
               "meets_accuracy": met, "shortfall": round(short, 6), "scored_on": comparison["scored_on"],
               "size_kb": round(path.stat().st_size / 1024, 1), "latency_ms": None, **facts}
        if comparison["scoring_note"]:
            row["scoring_note"] = comparison["scoring_note"]
        if len(self.names) > 1:
            row["outputs"] = comparison["outputs"]
        row["score_s"] = round(time.perf_counter() - start, 3)
        self.rows.append(row)
        return row

    def trial(self, per_channel: bool, policy, nodes_to_quantize=None, int16_tensors=(), post=None) -> dict:
        """Build with onnxruntime's quantizer (then `post(path)`, e.g. bias correction) and score, without a
        row in the table (a search step)."""
        path = self.work / "trial.onnx"
        quant_ort.quantize_static_qdq(self.pre, path, policy, self.calib, self.cache, self.keep, per_channel,
                                      nodes_to_quantize=nodes_to_quantize, int16_tensors=list(int16_tensors))
        if post is not None:
            post(path)
        comparison = self.score(path)
        met, short = quant_goal.evaluate(self.goal, comparison)
        first = comparison["primary"]
        return {"meets": met, "shortfall": round(short, 6), self.goal["metric"]: first.get(self.goal["metric"]),
                "cosine": first.get("cosine"), "sqnr_db": first.get("sqnr_db"), "scored_on": comparison["scored_on"]}

    def static(self, name: str, per_channel: bool, exclude: list[str], policy=None, nodes_to_quantize=None,
               int16_tensors=(), post=None) -> dict:
        """Build, then `post(path) -> facts` (e.g. bias correction), and score: a row in the table."""
        policy = policy or self.policy
        path = self.work / f"{name}.onnx"
        quant_ort.quantize_static_qdq(self.pre, path, policy, self.calib, self.cache, exclude, per_channel,
                                      nodes_to_quantize=nodes_to_quantize, int16_tensors=list(int16_tensors))
        facts = {"per_channel": per_channel, "float_nodes": len(exclude), "activations": policy.activation_dtype}
        if post is not None:
            facts.update(post(path))
        if self.policy.power_of_two:
            from edgeship.stages.quantize import apply_power_of_two

            facts["power_of_two"] = apply_power_of_two(path)
        return self.add(name, "static", path, **facts)


def _measure_latency(rows: list[dict], feed: dict, shipped: quant_shipped.ShippedRunner) -> None:
    """Interleaved p50 (single thread) for every candidate on the runtime that would ship it (the one that
    scored it: LiteRT for an emitted .tflite, else onnxruntime), bounded by LATENCY_BUDGET_S each."""
    sessions = {r["name"]: shipped.timing_session(Path(r["path"]), r["scored_on"]) for r in rows}
    probe = {}
    for name, sess in sessions.items():
        quant_measure.time_runs(sess, feed, 2)
        probe[name] = max(1e-3, min(quant_measure.time_runs(sess, feed, 3)))
    slowest_ms = max(probe.values())
    runs = int(max(2, min(20, LATENCY_BUDGET_S * 1000 / slowest_ms / 5)))
    p50 = quant_measure.interleaved_sessions_p50(sessions, feed, rounds=5, runs=runs)
    for r in rows:
        r["latency_ms"], r["timed_on"] = round(p50[r["name"]], 4), r["scored_on"]


def _goal(ctx, cands_reference, names, float_path: Path) -> dict:
    return quant_goal.accuracy_goal(ctx.setting("model", "task"), ctx.setting("budget", "accuracy"), names,
                                    cands_reference, float_path)


def _recover(ctx, policy, goal, cands, statics: list[dict], keep: list[str], report: dict) -> list[dict]:
    """The recovery steps the policy and target allow, cheapest first (quant_recovery); returns the new rows."""
    base = sorted(statics, key=lambda r: r["shortfall"])[0]
    added = []
    # where latency is measured, a cheap step that meets the goal does not end the search: keeping a layer
    # float can be faster than an all-int8 model (kws: +float1 0.88x of float where +bc was 1.00x)
    enough = not ctx.target_data.get("measurable", False)
    if "calibration" in policy.recovery and policy.method == "minmax":
        row = quant_recovery.calibrated(cands, policy, base, report)
        if row is not None:
            added.append(row)
            if row["meets_accuracy"] and enough:
                return added
    for step, build in (("bias-correction", lambda b: quant_recovery.bias_corrected(cands, b, report)),
                        ("equalize", lambda b: quant_recovery.equalized(cands, policy, b, report))):
        if step in policy.recovery and not policy.power_of_two:
            row = build(base)
            if row is not None:
                added.append(row)
                if row["meets_accuracy"] and enough:
                    return added  # cheap recovery was enough
    # the searches rebuild from the float model with onnxruntime: they start from a plain int8 candidate
    ranking = quant_recovery.sensitivity(ctx, policy, goal, cands, base, report)
    if "float-layers" in policy.recovery and not policy.integer_only:
        row = quant_recovery.float_layers(cands, policy, base, ranking, report)
        added += [row] if row else []
    if "int16-layers" in policy.recovery and policy.int16_activations_allowed and policy.weight_dtype == "int8":
        row = quant_recovery.int16_layers(cands, policy, base, ranking, report)
        added += [row] if row else []
    report["ranking_for_failure"] = ranking[: quant_recovery.TABLE_LAYERS]
    return added


def choose(ctx, policy, src: Path, pre: Path, calib: dict, keep: list[str], work: Path, report: dict) -> Path | None:
    """Run auto; fills report["candidates"], returns the chosen model path (None: keep the float model)."""
    eval_data, source = evaluation_data(ctx)
    float_path = Path(ctx.float_model_path or src)
    ref_sess = quant_measure.session(float_path, threads=0)
    goal = _goal(ctx, quant_measure.run_all(ref_sess, eval_data), quant_measure.output_names(ref_sess), float_path)
    report["accuracy_goal"] = {**goal, "data": source, "samples": sample_count(eval_data),
                               "summary": quant_goal.describe(goal)}
    cands = Candidates(ctx, policy, pre, calib, keep, work, goal, eval_data)
    report["calibration_cache"] = "hit" if quant_recovery.reuse_calibration(ctx, policy, cands.cache) else "miss"
    cands.add("float", "float", float_path, float_nodes=_count_float_compute(src))
    statics = []
    if policy.per_channel_allowed:
        statics.append(cands.static("static-per-channel", True, keep))
    if policy.per_tensor_allowed:
        statics.append(cands.static("static-per-tensor", False, keep))
    for dtype in policy.alternative_activation_dtypes:  # e.g. S8S8 next to U8S8: which is faster depends on the CPU
        statics.append(cands.static(f"static-per-tensor-a{dtype}" if policy.per_tensor_allowed else f"static-per-channel-a{dtype}",
                                    not policy.per_tensor_allowed, keep, replace(policy, activation_dtype=dtype)))
    quant_recovery.keep_calibration(ctx, policy, cands.cache)
    if policy.dynamic_allowed and _has_op(pre, set(quant_ort.DYNAMIC_OP_TYPES)):
        path = work / "dynamic.onnx"
        quant_ort.quantize_dynamic_int8(pre, path, policy, keep, policy.per_channel_allowed)
        cands.add("dynamic", "dynamic", path, per_channel=policy.per_channel_allowed, float_nodes=None)

    if statics and not any(r["meets_accuracy"] for r in statics) and policy.recovery:
        _recover(ctx, policy, goal, cands, statics, keep, report)

    measurable = bool(ctx.target_data.get("measurable", False))
    eligible = [r for r in cands.rows if _integer(r)] if policy.integer_only else cands.rows
    meeting = [r for r in eligible if r["meets_accuracy"]]
    if policy.integer_only and not meeting:
        best_int = min(eligible, key=lambda r: r["shortfall"]) if eligible else None
        _finish(report, cands.rows, None, "no fully integer candidate met the accuracy goal")
        quant_recovery.fail_integer_only(ctx, goal, best_int, report.get("ranking_for_failure") or [])
    if measurable:
        _measure_latency(cands.rows, quant_measure.first_feed(eval_data), cands.shipped)
        best = min(meeting, key=lambda r: r["latency_ms"]) if meeting else cands.rows[0]
        runtimes = " or ".join(dict.fromkeys(r["timed_on"] for r in cands.rows))
        reason = (f"fastest measured p50 on this host (1 thread, each candidate on the runtime that ships it: "
                  f"{runtimes}) among candidates meeting {quant_goal.describe(goal)}")
    else:
        def preference(r):  # integer first, fewest float layers, fewest int16 layers, then accuracy
            return (r["kind"] == "float", r.get("float_nodes") or 0, len(r.get("int16_layers") or []),
                    r["kind"] != "static", r["shortfall"])
        best = min(meeting, key=preference) if meeting else cands.rows[0]
        reason = (f"target {ctx.target_name} is not measurable here: most-quantized candidate meeting "
                  f"{quant_goal.describe(goal)}")
    if not meeting:
        reason = "no candidate met the accuracy budget; float kept (validate will report it)"
    _finish(report, cands.rows, best, reason)
    return None if best["kind"] == "float" else Path(best["path"])


def _integer(row: dict) -> bool:
    """Fully integer: static, no float layer (keep_float or mixed float)."""
    return row["kind"] == "static" and not row.get("float_nodes")


def _finish(report: dict, rows: list[dict], best: dict | None, reason: str) -> None:
    for r in rows:
        r["selected"] = r is best
    report.pop("ranking_for_failure", None)
    report["candidates"] = [{k: v for k, v in r.items() if k != "path"} for r in rows]
    report["scored_on"] = {runtime: [r["name"] for r in rows if r["scored_on"] == runtime]
                           for runtime in dict.fromkeys(r["scored_on"] for r in rows)}
    if best is not None:
        report["selected"] = best["name"]
        report["layer_precision"] = best.get("layer_precision") or _uniform_precision(best)
    report["reason"] = reason


def _uniform_precision(row: dict) -> dict:
    """Per-layer precision of a candidate quantized uniformly (read by backends and the report)."""
    if row["kind"] != "static":
        return {}
    from edgeship.stages.quant_subset import quantized_nodes

    dtype = "int16" if row.get("activations") == "int16" else "int8"
    return {n: dtype for n in quantized_nodes(onnx.load(row["path"], load_external_data=False))}
