"""The validate stage: metrics against float, measured or estimated latency, every budget checked."""

import os
import subprocess
import sys

from edgeship.errors import BudgetExceeded
from edgeship.stages.validate import check_budgets

from .helpers import build, write_pipeline


def test_host_measures_latency_and_profiles_ops(examples_dir, tmp_path):
    manifest = write_pipeline(tmp_path, examples_dir["kws"], "kws", quantization={"mode": "static"},
                              budget={"latency_ms": {"p50": 500, "p95": 1000}, "size_kb": 1024,
                                      "accuracy": {"metric": "top1_agreement", "min": 0.5}})
    result = build(manifest)
    assert result.ok, result.error
    report = result.ctx.report["validate"]
    for mode in ("single_thread", "all_threads"):
        assert 0 < report["latency"][mode]["p50"] <= report["latency"][mode]["p95"]
    assert len(report["latency"]["single_thread"]["samples_ms"]) == len(report["latency"]["all_threads"]["samples_ms"]) == 10
    assert report["op_time_ms"] and any(op.startswith("QLinear") or op == "Conv" for op in report["op_time_ms"])
    assert {"top1_agreement", "cosine", "sqnr_db", "max_abs_error"} <= set(report["accuracy"]["primary"])
    assert [c["metric"] for c in report["budgets"]] == ["latency_ms.p50", "latency_ms.p95", "size_kb", "accuracy.top1_agreement"]
    assert all(c["ok"] for c in report["budgets"]) and report["passed"]
    assert result.ctx.extra["validate"]["latency_p95_ms"] > 0
    assert report["labels"]["samples"] == 32 and report["labels"]["float"] > 0.8  # eval.npz carries _labels


def test_failed_budgets_raise_a_table(examples_dir, tmp_path):
    manifest = write_pipeline(tmp_path, examples_dir["kws"], "kws", quantization={"mode": "static"},
                              budget={"latency_ms": {"p95": 0.000001}, "accuracy": {"metric": "sqnr_db", "min": 90}})
    result = build(manifest)
    assert isinstance(result.error, BudgetExceeded)
    rows = {r.metric: r for r in result.error.rows}
    assert set(rows) == {"latency_ms.p95", "accuracy.sqnr_db"}
    assert rows["latency_ms.p95"].by.startswith("over by") and rows["accuracy.sqnr_db"].by.startswith("short by")
    assert result.ctx.report["validate"]["passed"] is False


def test_not_measurable_target_takes_the_estimate(examples_dir, tmp_path):
    manifest = write_pipeline(tmp_path, examples_dir["kws"], "kws", target="infineon-psoc-edge-e84",
                              quantization={"mode": "static"}, budget={"latency_ms": {"p95": 1000}, "memory_kb": {"peak": 100000}})
    result = build(manifest, stages=("import", "quantize", "validate"))  # no estimate stage: unverified
    assert result.ok, result.error
    assert any("latency_ms.p95 not verified" in w for w in result.ctx.warnings)
    result = build(manifest, stages=("import", "normalize", "optimize", "quantize", "legalize", "estimate", "validate"))
    assert result.ok, result.error
    checks = {c["metric"]: c for c in result.ctx.report["validate"]["budgets"]}
    assert checks["latency_ms.p95"]["source"].startswith("estimated") and checks["latency_ms.p95"]["ok"]
    assert checks["memory_kb.peak"]["source"].startswith("estimated")


def test_check_budgets_directions():
    checks = check_budgets({"accuracy": {"metric": "max_abs_error", "max": 0.1}, "memory_kb": {"peak": 10}},
                           {"accuracy": {"max_abs_error": 0.5}, "memory_kb": 5, "memory_source": "static"})
    by = {c["metric"]: c for c in checks}
    assert by["memory_kb.peak"]["ok"] and not by["accuracy.max_abs_error"]["ok"]


def test_cli_exits_1_with_the_budget_table(examples_dir, tmp_path):
    manifest = write_pipeline(tmp_path, examples_dir["fraud"], "fraud", quantization={"mode": "none"},
                              budget={"latency_ms": {"p50": 0.000001}})
    proc = subprocess.run([sys.executable, "-m", "edgeship", "build", str(manifest), "--no-cache", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=dict(os.environ), cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout + proc.stderr
    assert "latency_ms.p50" in out and "over by" in out and "Traceback" not in out
