"""The quantize stage through the real runner: modes, calibration methods, auto, constraints, errors."""

import numpy as np
import onnx
import pytest

from edgeship.errors import BuildError, ManifestError
from edgeship.stages import quant_pow2

from .helpers import build, write_pipeline


def ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_static_calibration_methods(examples_dir, tmp_path, method):
    manifest = write_pipeline(tmp_path, examples_dir["kws"], "kws",
                              quantization={"mode": "static", "calibration": {"method": method}})
    result = build(manifest, stages=("import", "quantize"))
    assert result.ok, result.error
    report = result.ctx.report["quantize"]
    assert report["calibration"]["method"] == method and report["calibration"]["synthetic"] is False
    assert "QuantizeLinear" in ops(result.ctx.model_path) and "DequantizeLinear" in ops(result.ctx.model_path)
    assert report["selected"] == "static-per-channel"


def test_mode_none_keeps_the_model(examples_dir, tmp_path):
    manifest = write_pipeline(tmp_path, examples_dir["fraud"], "fraud", quantization={"mode": "none"})
    result = build(manifest, stages=("import", "quantize"))
    assert result.ok and "QuantizeLinear" not in ops(result.ctx.model_path)
    assert result.ctx.report["quantize"]["selected"] == "float"


def test_dynamic_quantizes_matmuls(examples_dir, tmp_path):
    manifest = write_pipeline(tmp_path, examples_dir["llm"], "llm", quantization={"mode": "dynamic"}, calib=False)
    result = build(manifest, stages=("import", "quantize"))
    assert result.ok, result.error
    found = ops(result.ctx.model_path)
    assert "DynamicQuantizeLinear" in found or "DynamicQuantizeMatMul" in found or "MatMulInteger" in found


def test_keep_float_globs_leave_nodes_unquantized(examples_dir, tmp_path):
    manifest = write_pipeline(tmp_path, examples_dir["kws"], "kws",
                              quantization={"mode": "static", "keep_float": ["/head/*", "/nothing/*"]})
    result = build(manifest, stages=("import", "normalize", "optimize", "quantize"))
    assert result.ok, result.error
    report = result.ctx.report["quantize"]["keep_float"]
    assert report["nodes"] == ["/head/fc"] and report["unmatched_globs"] == ["/nothing/*"]
    model = onnx.load(str(result.ctx.model_path))
    initializers = {t.name: t for t in model.graph.initializer}
    head = next(n for n in model.graph.node if n.name == "/head/fc")
    assert initializers[head.input[1]].data_type == onnx.TensorProto.FLOAT  # the weight stays float
    assert any("/nothing/*" in w for w in result.ctx.warnings)


def test_synthetic_calibration_is_flagged(examples_dir, tmp_path):
    manifest = write_pipeline(tmp_path, examples_dir["fraud"], "fraud", quantization={"mode": "static"},
                              calib=False, evaluation=False)
    result = build(manifest, stages=("import", "quantize", "validate"))
    assert result.ok, result.error
    assert result.ctx.report["quantize"]["calibration"]["synthetic"] is True
    assert result.ctx.report["validate"]["data"]["synthetic"] is True
    assert any("weaker guarantee" in w for w in result.ctx.warnings)


def test_auto_on_host_measures_candidates(examples_dir, tmp_path):
    manifest = write_pipeline(tmp_path, examples_dir["kws"], "kws", quantization={"mode": "auto"},
                              budget={"accuracy": {"metric": "top1_agreement", "min": 0.9}})
    result = build(manifest, stages=("import", "normalize", "optimize", "quantize", "validate"))
    assert result.ok, result.error
    report = result.ctx.report["quantize"]
    names = [c["name"] for c in report["candidates"]]
    assert names[:3] == ["float", "static-per-channel", "static-per-tensor"]
    assert all(c["latency_ms"] > 0 and "top1_agreement" in c["accuracy"] for c in report["candidates"])
    chosen = next(c for c in report["candidates"] if c["selected"])
    assert chosen["name"] == report["selected"] and chosen["meets_accuracy"]
    meeting = [c for c in report["candidates"] if c["meets_accuracy"]]
    assert chosen["latency_ms"] == min(c["latency_ms"] for c in meeting)  # fastest that meets, as measured


def test_auto_keeps_sensitive_layers_float_when_int8_falls_short(examples_dir, tmp_path):
    # the fraud model's raw inputs span four decades: fully int8 misses the budget on the DPU
    manifest = write_pipeline(tmp_path, examples_dir["fraud"], "fraud", target="amd-kria-k26-dpu",
                              quantization={"mode": "auto"}, budget={"accuracy": {"metric": "sqnr_db", "min": 25}},
                              validation={"samples": 200})
    result = build(manifest, stages=("import", "quantize", "validate"))
    assert result.ok, result.error
    report = result.ctx.report["quantize"]
    assert [c["name"] for c in report["candidates"]][:2] == ["float", "static-per-tensor"]  # DPU: no per-channel
    layers = report["sensitivity"]["layers"]  # measured end to end, most damaging first
    assert layers and layers[0]["node"].startswith("/scale/")
    chosen = next(c for c in report["candidates"] if c["selected"])
    assert "+float" in chosen["name"] and chosen["meets_accuracy"]
    assert quant_pow2.non_power_of_two_scales(onnx.load(str(result.ctx.model_path))) == []
    assert "not measurable" in report["reason"]


def test_per_channel_on_old_opset_is_refused(examples_dir, tmp_path):
    model = onnx.load(str(examples_dir["fraud"] / "models" / "fraud-mlp.onnx"))
    model.opset_import[0].version = 11  # Gemm/Relu/Sub/Mul are unchanged between 11 and 13
    old = tmp_path / "old"
    (old / "models").mkdir(parents=True)
    (old / "data").mkdir()
    onnx.save(model, str(old / "models" / "fraud-mlp.onnx"))
    for f in ("calib.npz", "eval.npz"):
        (old / "data" / f).write_bytes((examples_dir["fraud"] / "data" / f).read_bytes())
    manifest = write_pipeline(tmp_path, old, "fraud", quantization={"mode": "static", "weights": {"granularity": "per-channel"}})
    result = build(manifest, stages=("import", "quantize"))
    assert isinstance(result.error, BuildError) and "opset >= 13" in str(result.error)


def test_bad_calibration_file_points_at_the_manifest(examples_dir, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, audio=np.zeros((4, 10, 49), np.float32))
    manifest = write_pipeline(tmp_path, examples_dir["kws"], "kws",
                              quantization={"mode": "static", "calibration": {"data": str(bad)}})
    with pytest.raises(ManifestError) as err:  # refused when the manifest is loaded, as `edgeship validate` does
        build(manifest, stages=("import", "quantize"))
    text = str(err.value)
    assert text.startswith(str(manifest)) and "quantization.calibration.data" in text and "bad.npz" in text


def test_auto_keeps_float_for_formats_the_quantizer_does_not_emit(examples_dir, tmp_path):
    manifest = write_pipeline(tmp_path, examples_dir["fraud"], "fraud", target="dmatrix-corsair", quantization={"mode": "auto"})
    result = build(manifest, stages=("import", "quantize"))
    assert result.ok, result.error
    report = result.ctx.report["quantize"]
    assert report["selected"] == "float" and any("mxint8" in n for n in report["notes"])
    assert "QuantizeLinear" not in ops(result.ctx.model_path)
