"""The example workloads: made deterministically in code, v2 differs only in the last layer, and
every example manifest builds end to end through the real stages."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeship.errors import BudgetExceeded

from tests.support.require import require_module

from .helpers import EXAMPLES, MODELS, build

HEADS = {"kws": {"/head/fc.weight", "/head/fc.bias"}, "fraud": {"/w3", "/b3"}, "llm": {"/lm_head.weight"}}


def _weights(path: Path) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_make_all_is_deterministic(tmp_path):
    for out in (tmp_path / "a", tmp_path / "b"):
        subprocess.run([sys.executable, str(EXAMPLES / "make_all.py"), "--out", str(out)], check=True,
                       capture_output=True, timeout=300)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 * 4  # per example: v1 + v2 models, calib + eval data
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


@pytest.mark.parametrize("name", ["kws", "fraud", "llm"])
def test_v2_changes_only_the_last_layer(examples_dir, tmp_path, name):
    from .helpers import make_example

    make_example(name, examples_dir[name], variant="v2")
    model_file = MODELS[name][0]
    v1 = _weights(examples_dir[name] / "models" / model_file)
    v2 = _weights(examples_dir[name] / "models" / model_file.replace(".onnx", "-v2.onnx"))
    assert v1.keys() == v2.keys()
    changed = {k for k in v1 if not np.array_equal(v1[k], v2[k])}
    assert changed and changed <= HEADS[name]


@pytest.mark.parametrize("manifest", sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.glob("*/pipeline*.yaml")))
def test_example_manifests_build(manifest):
    """Every example pipeline, all stages but package (the CLI builds those; package is the build-core's)."""
    result = build(EXAMPLES / manifest, stages=("import", "normalize", "optimize", "quantize", "legalize",
                                                "estimate", "validate"))
    if isinstance(result.error, BudgetExceeded):  # latency depends on the machine's load: not asserted
        assert all(r.metric.startswith("latency_ms") for r in result.error.rows), result.error
    else:
        assert result.ok, result.error
    checks = result.ctx.report["validate"]["budgets"]
    assert checks and all(c["ok"] is not False for c in checks if not c["metric"].startswith("latency_ms"))


def test_llm_u85_example_lowers_mixed_precision_through_vela():
    """The decoder on arm-ethos-u85: auto's mixed int8/int16 candidate goes through Vela (one activation
    type per TFLite op, constants included) and validates under LiteRT."""
    require_module("ethosu.vela")
    require_module("ai_edge_litert")
    result = build(EXAMPLES / "llm" / "pipeline-u85.yaml", stages=("import", "normalize", "optimize", "quantize",
                                                                  "legalize", "lower", "estimate", "validate"))
    assert result.ok, result.error  # latency here is the cost model's estimate: not load-dependent
    report = result.ctx.report
    assert set(report["quantize"]["layer_precision"].values()) == {"int8", "int16"}
    assert report["lower"]["self_check"]["within_1_lsb_pct"] >= 99.0, report["lower"]["self_check"]
    assert report["validate"]["accuracy"]["primary"]["cosine"] >= 0.99


def test_host_build_reports_estimate_beside_measurement():
    """On the one target this host can measure, the report holds the cost model to account."""
    from edgeship.stages.validate import report_html

    result = build(EXAMPLES / "kws" / "pipeline.yaml", stages=("import", "normalize", "optimize", "quantize",
                                                               "legalize", "estimate", "validate"))
    section = result.ctx.report["validate"]
    cmp = section["latency"]["estimate_vs_measured"]
    assert cmp["estimated_ms"] == round(result.ctx.report["estimate"]["latency_ms"], 4)
    assert cmp["measured_p50_ms"] == round(section["latency"]["single_thread"]["p50"], 4)
    expected = (cmp["estimated_ms"] - cmp["measured_p50_ms"]) / cmp["measured_p50_ms"] * 100
    assert abs(cmp["error_pct"] - expected) < 0.5
    assert "cost model estimate" in report_html(section)
