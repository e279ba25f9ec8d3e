"""Stage `validate`: is the candidate good enough? Accuracy against the float reference, latency,
memory and size against every budget; one failed budget fails the build with a table.

Accuracy: the float reference (`ctx.float_model_path`) in onnxruntime and what ships (the candidate
ONNX in onnxruntime, or the lowered .tflite in LiteRT) on the validation inputs (the manifest's .npz,
else synthetic inputs - flagged as a weaker guarantee).
Latency: measured here when the target is this host (`measurable: true`), on the runtime that ships
the model (LiteRT for a lowered .tflite, onnxruntime otherwise): warm-up, repeated runs,
single thread and all threads (the budget is checked on the single-thread figures: what the device's
smoke test measures, and stable on a loaded build machine where all-thread runs fight for cores);
otherwise taken from the cost model (`ctx.report["estimate"]`). Memory: from the cost
model when it ran, else a static figure (weights + the largest activations). Per-op-type time from
onnxruntime's profiler goes into the report for the per-op plot.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx

from edgeship.errors import BudgetExceeded, BudgetRow, BuildError
from edgeship.pipelines import metrics
from edgeship.pipelines.data import sample_count, synthetic_inputs
from edgeship.stages import quant_goal, quant_measure
from edgeship.stages.base import BaseStage
from edgeship.stages.registry import register

DEFAULT_SAMPLES = 100
SYNTHETIC_SAMPLES = 32
PROFILE_RUNS = 20
HISTOGRAM_LIMIT = 500  # latency samples kept in the report for the distribution plot


def model_size_kb(path: Path) -> float:
    """The model file plus any external-data files beside it."""
    total = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    seen = set()
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                extra = path.parent / entry.value
                if extra.is_file():
                    total += extra.stat().st_size
    return total / 1024.0


def static_memory_kb(path: Path) -> float:
    """Weights + the two largest activations: a floor for peak memory when no cost model ran."""
    model = onnx.load(str(path))
    weights = sum(int(np.prod(t.dims)) * max(1, onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize)
                  for t in model.graph.initializer)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    sizes = []
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        t = vi.type.tensor_type
        dims = [d.dim_value for d in t.shape.dim]
        if t.elem_type and dims and all(d > 0 for d in dims):
            sizes.append(int(np.prod(dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize)
    sizes.sort(reverse=True)
    return (weights + sum(sizes[:2])) / 1024.0


def op_type_times(path: Path, feed: dict, runs: int, workdir: Path) -> dict[str, float]:
    """Mean milliseconds per run spent in each op type, from onnxruntime's profiler (all threads)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        sess = quant_measure.session(path, threads=0, profile_prefix=str(Path(tmp) / "profile"))
        quant_measure.time_runs(sess, feed, runs)
        trace = Path(sess.end_profiling())
        events = json.loads(trace.read_text())
    totals: dict[str, float] = defaultdict(float)
    for ev in events:
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            op = (ev.get("args") or {}).get("op_name", "?")
            totals[op] += float(ev.get("dur", 0)) / 1000.0
    return {op: round(ms / runs, 5) for op, ms in sorted(totals.items(), key=lambda kv: -kv[1])}


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def estimate_error(estimated_ms: float, measured_ms: float) -> dict:
    """The cost model held against the measurement on a target this host can run: how far off it is
    here is the best evidence of how far to trust its figures for chips that are not on the desk."""
    error = (estimated_ms - measured_ms) / measured_ms * 100 if measured_ms > 0 else None
    return {"estimated_ms": round(estimated_ms, 4), "measured_p50_ms": round(measured_ms, 4),
            "error_pct": None if error is None else round(error, 1), "compared_with": "single-thread p50"}


def report_html(section: dict) -> str:
    """The estimate and the measurement side by side, above the validate table of the HTML report."""
    cmp = (section.get("latency") or {}).get("estimate_vs_measured")
    if not cmp:
        return ""
    error = "n/a" if cmp["error_pct"] is None else f"{cmp['error_pct']:+.1f}%"
    return ("<table><tr><th>latency</th><th>cost model estimate</th><th>measured (single-thread p50)</th><th>error</th></tr>"
            f"<tr><td>this host</td><td>{cmp['estimated_ms']:.4g} ms</td><td>{cmp['measured_p50_ms']:.4g} ms</td>"
            f"<td>{error}</td></tr></table>")


def check_budgets(budget: dict, measured: dict) -> list[dict]:
    """Each budget against its figure: [{metric, budget, measured, ok, by, source}] (None figure: unverified)."""
    checks = []

    def add(metric: str, bound: float, value: float | None, source: str, higher_is_better: bool = False, unit: str = ""):
        if value is None:
            checks.append({"metric": metric, "budget": bound, "measured": None, "ok": None, "by": "not measured",
                           "source": source})
            return
        ok = value >= bound if higher_is_better else value <= bound
        diff = (bound - value) if higher_is_better else (value - bound)
        pct = f" ({diff / bound * 100:+.0f}%)" if bound else ""
        by = f"{'short by' if higher_is_better else 'over by'} {_fmt(abs(diff))}{unit}{pct if not higher_is_better else ''}"
        checks.append({"metric": metric, "budget": bound, "measured": value, "ok": ok,
                       "by": by if not ok else f"ok, margin {_fmt(abs(diff))}{unit}", "source": source})

    for pct, bound in (budget.get("latency_ms") or {}).items():
        lat = measured.get("latency_ms") or {}
        add(f"latency_ms.{pct}", float(bound), lat.get(pct), measured.get("latency_source", "none"), unit=" ms")
    peak = (budget.get("memory_kb") or {}).get("peak")
    if peak is not None:
        add("memory_kb.peak", float(peak), measured.get("memory_kb"), measured.get("memory_source", "none"), unit=" KB")
    if budget.get("size_kb") is not None:
        add("size_kb", float(budget["size_kb"]), measured.get("size_kb"), "model file", unit=" KB")
    acc = budget.get("accuracy") or {}
    if acc:
        metric = acc.get("metric", "top1_agreement")
        value = (measured.get("accuracy") or {}).get(metric)
        higher = metrics.HIGHER_IS_BETTER[metric]
        bound = acc.get("min") if higher else acc.get("max")
        if bound is None:
            raise BuildError(f"budget.accuracy: {metric} needs {'min' if higher else 'max'}", stage="validate")
        add(f"accuracy.{metric}", float(bound), value, measured.get("data_source", ""), higher_is_better=higher)
    return checks


SYNTHETIC_WARNING = ("validation used synthetic inputs from the declared shapes (no validation.data): accuracy "
                     "against float is measured on random inputs - a weaker guarantee")


def validation_inputs(ctx) -> tuple[dict, dict]:
    """The validation arrays and where they came from; quantize's `auto` scores on exactly these."""
    samples = int(ctx.setting("validation", "samples", default=DEFAULT_SAMPLES))
    data = ctx.validation
    if data is not None:
        info = {"source": str(ctx.setting("validation", "data")), "synthetic": False,
                "samples": min(samples, sample_count(data))}
        return {k: v[:samples] for k, v in data.items()}, info
    n = min(samples, SYNTHETIC_SAMPLES)
    if SYNTHETIC_WARNING not in ctx.warnings:
        ctx.warnings.append(SYNTHETIC_WARNING)
    return synthetic_inputs(ctx.inputs, n, seed=2), {"source": "synthetic", "synthetic": True, "samples": n,
                                                     "warning": SYNTHETIC_WARNING}


def shipped_tflite(ctx) -> Path | None:
    from edgeship.stages.lower import lowered_files

    return lowered_files(ctx).get("model.tflite")


def shipped_size_kb(ctx, candidate: Path) -> float:
    """The size budget holds what ships: the lowered .tflite (Vela's compiled one where it made one) when
    the backend lowered the model, else the ONNX model with its external data."""
    from edgeship.stages.lower import lowered_files

    files = lowered_files(ctx)
    for name in ("model_vela.tflite", "model.tflite"):
        if name in files:
            return files[name].stat().st_size / 1024.0
    return model_size_kb(candidate)


def shipped_session(ctx, report: dict):
    """What ships is the reference: a LiteRT session on the lowered .tflite when the backend made one."""
    shipped = shipped_tflite(ctx)
    if shipped is None:
        return None
    from edgeship.targets.backends.litert_run import LiteRTSession

    report["candidate"], report["runtime"] = "model.tflite", "LiteRT"
    return LiteRTSession(shipped)


def timing_sessions(ctx, candidate: Path) -> tuple[object, object, str]:
    """(single-thread, all-thread) sessions on the runtime that ships the model, and its name: the
    .tflite under LiteRT (its default XNNPACK delegate) when lower made one, else the ONNX under onnxruntime."""
    shipped = shipped_tflite(ctx)
    if shipped is not None:
        from edgeship.targets.backends.litert_run import LiteRTSession

        return (LiteRTSession(shipped, threads=1), LiteRTSession(shipped, threads=quant_measure.all_threads()),
                "LiteRT (XNNPACK)")
    return quant_measure.session(candidate, threads=1), quant_measure.session(candidate, threads=0), "onnxruntime"


@register
class ValidateStage(BaseStage):
    name = "validate"
    version = "5"  # 4: latency timed on the shipped runtime (LiteRT for a .tflite); 5: size of the shipped file
    uses_target = True

    def config(self, ctx) -> dict:
        return {"budget": ctx.setting("budget", default={}), "validation": ctx.setting("validation", default={}),
                "task": ctx.setting("model", "task")}

    def input_digests(self, ctx) -> dict:
        digests = super().input_digests(ctx)
        digests["float_model"] = ctx.digests.get("float_model", "")
        digests["validation"] = ctx.data_digest("validation")
        estimate = ctx.report.get("estimate") or {}
        digests["estimate"] = [estimate.get("latency_ms"), estimate.get("peak_memory_kb")]
        from edgeship.stages.lower import lowered_files

        digests["shipped"] = ctx.file_digest("shipped_tflite", lowered_files(ctx).get("model.tflite"))
        return digests

    @staticmethod
    def _labels(ctx, n: int):
        """Ground-truth labels stored as `_labels` in the validation .npz (optional): accuracy, not just agreement."""
        rel = ctx.setting("validation", "data")
        if not rel:
            return None
        try:
            with np.load(ctx.resolve(rel), allow_pickle=False) as archive:
                labels = archive["_labels"] if "_labels" in archive.files else None
        except Exception:  # noqa: BLE001 - the data file itself was validated already
            return None
        if labels is None or labels.ndim != 1 or len(labels) < n or not np.issubdtype(labels.dtype, np.integer):
            return None
        return labels[:n]

    def run(self, ctx):
        if ctx.model_path is None:
            raise BuildError("no model to validate: the import stage must run first", stage=self.name)
        candidate = Path(ctx.model_path)
        reference = Path(ctx.float_model_path or candidate)
        report: dict = {"candidate": candidate.name, "reference": reference.name}
        ctx.report[self.name] = report
        data, report["data"] = validation_inputs(ctx)

        ref_sess = quant_measure.session(reference, threads=0)
        cand_sess = shipped_session(ctx, report) or quant_measure.session(candidate, threads=0)
        names = quant_measure.output_names(ref_sess)
        if names != quant_measure.output_names(cand_sess):
            raise BuildError(f"candidate outputs {quant_measure.output_names(cand_sess)} differ from the "
                             f"reference's {names}", stage=self.name)
        ref_out, cand_out = quant_measure.run_all(ref_sess, data), quant_measure.run_all(cand_sess, data)
        goal = quant_goal.accuracy_goal(ctx.setting("model", "task"), ctx.setting("budget", "accuracy"), names, ref_out, reference)
        wanted = quant_goal.metric_names(goal)
        accuracy = metrics.compare(ref_out, cand_out, names, wanted)
        report["accuracy"] = accuracy
        report["accuracy_metric"] = {"summary": quant_goal.describe(goal), "meets": quant_goal.evaluate(goal, accuracy)[0],
                                     "outputs": goal["outputs"]}
        primary = np.asarray(ref_out[0], dtype=np.float64)
        if not np.all(np.isfinite(primary)):
            ctx.warnings.append("validate: the float reference gives non-finite outputs on the validation inputs: "
                                "accuracy figures are not meaningful")
        elif primary.size and float(np.ptp(primary)) == 0.0:
            ctx.warnings.append("validate: the float reference's output is constant on the validation inputs "
                                "(e.g. placeholder weights): top-1 agreement is vacuous")
        labels = self._labels(ctx, sample_count(data))
        if labels is not None and ctx.setting("model", "task", default="classification") == "classification":
            report["labels"] = {"float": float(np.mean(ref_out[0].reshape(len(labels), -1).argmax(-1) == labels)),
                                "candidate": float(np.mean(cand_out[0].reshape(len(labels), -1).argmax(-1) == labels)),
                                "samples": int(len(labels))}
        measured: dict = {"accuracy": accuracy["primary"], "data_source": report["data"]["source"],
                          "size_kb": round(shipped_size_kb(ctx, candidate), 2)}
        report["size_kb"] = measured["size_kb"]

        estimate = ctx.report.get("estimate") or {}
        feed = quant_measure.first_feed(data)
        if ctx.target_data.get("measurable"):
            warmup = int(ctx.setting("validation", "latency", "warmup", default=10))
            runs = int(ctx.setting("validation", "latency", "runs", default=50))
            single_sess, multi_sess, runtime = timing_sessions(ctx, candidate)
            single = quant_measure.latency(single_sess, feed, warmup, runs)
            multi = quant_measure.latency(multi_sess, feed, warmup, runs)
            report["latency"] = {
                "source": "measured on this host", "runtime": runtime,
                "single_thread": {**quant_measure.percentiles(single), "threads": 1,
                                  "samples_ms": [round(t, 4) for t in single[:HISTOGRAM_LIMIT]]},
                "all_threads": {**quant_measure.percentiles(multi), "threads": quant_measure.all_threads(),
                                "samples_ms": [round(t, 4) for t in multi[:HISTOGRAM_LIMIT]]},
            }
            if runtime != "onnxruntime":  # onnxruntime's per-op profile of the QDQ ONNX is not what ships
                report["op_time_ms"] = {}
                report["op_time_note"] = f"no per-op profile: the shipped model runs on {runtime}"
            else:
                try:
                    report["op_time_ms"] = op_type_times(candidate, feed, min(PROFILE_RUNS, runs), ctx.workdir)
                except Exception as exc:  # noqa: BLE001 - the profile is a plot, not a verdict
                    report["op_time_ms"] = {}
                    ctx.warnings.append(f"validate: onnxruntime profiling failed ({type(exc).__name__})")
            measured["latency_ms"] = {k: report["latency"]["single_thread"][k] for k in ("p50", "p95", "p99")}
            measured["latency_source"] = "measured (single thread)"
            if estimate.get("latency_ms") is not None:
                report["latency"]["estimate_vs_measured"] = estimate_error(
                    float(estimate["latency_ms"]), float(report["latency"]["single_thread"]["p50"]))
        elif estimate.get("latency_ms") is not None:
            value = float(estimate["latency_ms"])
            measured["latency_ms"] = {"p50": value, "p95": value, "p99": value}
            measured["latency_source"] = "estimated (cost model)"
            report["latency"] = {"source": "estimated by the cost model", "latency_ms": value}
        else:
            report["latency"] = {"source": "none: target not measurable here and no estimate stage ran"}
        if estimate.get("peak_memory_kb") is not None:
            measured["memory_kb"], measured["memory_source"] = float(estimate["peak_memory_kb"]), "estimated (cost model)"
        else:
            measured["memory_kb"], measured["memory_source"] = round(static_memory_kb(candidate), 2), "static (weights + largest activations)"
        report["memory_kb"] = {"peak": measured["memory_kb"], "source": measured["memory_source"]}

        checks = check_budgets(ctx.setting("budget", default={}) or {}, measured)
        report["budgets"] = checks
        for c in checks:
            if c["ok"] is None:
                ctx.warnings.append(f"budget {c['metric']} not verified: {c['source']}")
        lat = measured.get("latency_ms") or {}
        ctx.extra["validate"] = {"latency_p50_ms": lat.get("p50"), "latency_p95_ms": lat.get("p95"),
                                 "latency_source": measured.get("latency_source"), "accuracy": accuracy["primary"]}
        failed = [c for c in checks if c["ok"] is False]
        report["passed"] = not failed
        if failed:
            raise BudgetExceeded([BudgetRow(c["metric"], _fmt(c["budget"]), _fmt(c["measured"]), c["by"]) for c in failed])
        return ctx
