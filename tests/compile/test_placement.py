"""Legalization: placement with reasons, partitions, host round trips, and the no-fallback failure."""

import onnx
import pytest

from edgeship.errors import LegalizeError
from edgeship.pipelines.context import BuildContext
from edgeship.stages.estimate import EstimateStage
from edgeship.stages.legalize import LegalizeStage
from edgeship.targets.graphinfo import GraphInfo
from edgeship.targets.placement import legalize
from edgeship.targets.profile import TargetProfile

from .graphs import conv_lrn_conv, conv_model, npu_profile, qdq_conv


def units(section):
    return {r["name"]: r["unit"] for r in section["nodes"]}


def test_unsupported_op_falls_back_and_splits_partitions():
    section = legalize(GraphInfo(conv_lrn_conv()), npu_profile())
    assert units(section) == {"conv1": "accelerator", "lrn0": "host", "conv2": "accelerator"}
    lrn = next(r for r in section["nodes"] if r["name"] == "lrn0")
    assert lrn["reasons"][0]["kind"] == "unsupported-op"
    assert [p["nodes"] for p in section["partitions"]] == [["conv1"], ["conv2"]]
    assert section["host_round_trips"] == 1
    # x host->acc, r1 acc->host, n host->acc, y acc->host
    assert [(t["tensor"], t["from"], t["to"]) for t in section["transfers"]] == [
        ("x", "host", "accelerator"), ("r1", "accelerator", "host"), ("n", "host", "accelerator"), ("y", "accelerator", "host")]
    assert section["accelerator_pct"] == pytest.approx(66.7)


def test_attribute_limit_sends_node_to_host():
    section = legalize(GraphInfo(conv_lrn_conv(kernel2=5)), npu_profile(kernel_max=3))
    conv2 = next(r for r in section["nodes"] if r["name"] == "conv2")
    assert conv2["unit"] == "host"
    assert conv2["reasons"][0]["kind"] == "attribute" and "kernel" in conv2["reasons"][0]["message"]


def test_dtype_and_memory_reasons():
    prof = npu_profile(sram_kb=0.5, dram_mb=None)  # 512 bytes on chip and no DRAM to tile through
    prof["formats"] = ["int8"]
    section = legalize(GraphInfo(conv_model()), prof)
    kinds = {r["kind"] for r in section["nodes"][0]["reasons"]}
    assert kinds == {"dtype", "memory"}  # float32 on an int8-only NPU; a 1024-byte float output
    # the quantized conv is fine: int8, and its int8 tensors (192 and 256 bytes) fit on chip
    q = legalize(GraphInfo(qdq_conv()), prof)
    assert units(q)["conv0"] == "accelerator"
    assert len(q["partitions"]) == 1


def ctx_for(tmp_path, model, profile):
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return BuildContext(pipeline=None, spec={"target": profile["metadata"]["name"], "budget": {"latency_ms": {"p95": 1}}},
                        target=TargetProfile(profile), workdir=tmp_path, model_path=path,
                        inputs={"x": {"shape": [1, 4, 8, 8], "dtype": "float32"}})


def test_no_fallback_target_fails_naming_the_node(tmp_path):
    ctx = ctx_for(tmp_path, conv_lrn_conv(), npu_profile(fallback=False))
    with pytest.raises(LegalizeError) as err:
        LegalizeStage().run(ctx)
    text = str(err.value)
    assert "lrn0" in text and "LRN" in text and "not in the accelerator's operator list" in text
    assert text.startswith("legalize: 1 node(s) cannot run on test-npu")
    assert ctx.report["legalize"]["rejected"][0]["name"] == "lrn0"


def test_stages_write_report_sections(tmp_path):
    ctx = ctx_for(tmp_path, conv_lrn_conv(), npu_profile())
    ctx = LegalizeStage().run(ctx)
    ctx = EstimateStage().run(ctx)
    est = ctx.report["estimate"]
    for key in ("latency_ms", "peak_memory_kb", "per_node", "partitions", "transfers"):
        assert key in est
    assert est["transfers"] == 4 and len(est["partitions"]) == 2
    from edgeship.stages.estimate import budget_check

    assert "budget" not in est  # the budget is not part of the estimate (nor of its cache key)
    assert budget_check(est, ctx.spec["budget"])["latency_ms.p95"]["ok"] is True
    import json

    json.dumps(ctx.report)  # JSON-serialisable
    from edgeship.stages import estimate, legalize as legalize_mod
    import xml.dom.minidom

    for html in (legalize_mod.report_html(ctx.report["legalize"]), estimate.report_html(est)):
        xml.dom.minidom.parseString(f"<root>{html}</root>")  # well-formed fragments
        assert "<svg" in html and "nan" not in html and "inf" not in html


def test_epilogue_fuses_only_where_the_accelerator_runs_it():
    from edgeship.targets.graphinfo import load_graph

    prof = npu_profile()
    del prof["operators"]["Relu"]
    g = load_graph(conv_lrn_conv(), profile=prof)
    assert g.by_name["relu1"].fused_into is None  # the NPU has no Relu: it cannot hide it in the Conv
    section = legalize(g, prof)
    assert units(section)["relu1"] == "host"
    assert load_graph(conv_lrn_conv(), profile=npu_profile()).by_name["relu1"].fused_into == "conv1"


def test_float32_downcasts_on_a_bf16_accelerator():
    prof = npu_profile(fallback=False)
    prof["formats"] = ["int8", "bf16"]
    prof["compute"]["accelerator"]["peak_tops"] = {"int8": 2.0, "bf16": 1.0}
    section = legalize(GraphInfo(conv_model()), prof)
    assert section["nodes"][0]["unit"] == "accelerator" and section["nodes"][0]["runs_as"] == "bf16"
    assert section["notes"] and "bf16" in section["notes"][0]
    prof["formats"] = ["int8"]  # an int8-only chip cannot: a dtype reason
    assert legalize(GraphInfo(conv_model()), prof)["nodes"][0]["reasons"][0]["kind"] == "dtype"
