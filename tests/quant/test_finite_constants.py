"""±inf constants (masks, jax's `max(-inf, reduce_max(x))` softmax seed) made finite before quantization:
onnxruntime's quantizer gives them an inf scale, which made magika's QDQ model score cosine 0.1 vs float."""

from __future__ import annotations

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from edgeship.stages import quant_finite
from edgeship.stages.onnx_util import run_samples
from tests.quant.helpers import build


def _masked_softmax() -> onnx.ModelProto:
    """MatMul -> Add(mask with -inf) -> the stable softmax jax exports (Max with a -inf seed)."""
    mask = np.zeros((1, 16), np.float32)
    mask[0, 12:] = -np.inf
    weights = np.random.default_rng(1).normal(size=(16, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(mask, "mask"), numpy_helper.from_array(np.array(-np.inf, np.float32), "neg_inf"),
             numpy_helper.from_array(weights, "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "mask"], ["masked"], name="add_mask"),
             helper.make_node("ReduceMax", ["masked"], ["rmax"], keepdims=1, name="rmax"),
             helper.make_node("Max", ["neg_inf", "rmax"], ["stable"], name="max_neg_inf"),
             helper.make_node("Sub", ["masked", "stable"], ["shifted"], name="sub"),
             helper.make_node("Exp", ["shifted"], ["e"], name="exp"),
             helper.make_node("ReduceSum", ["e"], ["s"], keepdims=1, name="rsum"),
             helper.make_node("Div", ["e", "s"], ["y"], name="div")]
    graph = helper.make_graph(nodes, "masked_softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _samples(n: int = 16) -> dict:
    return {"x": (3 * np.random.default_rng(0).normal(size=(n, 1, 16))).astype(np.float32)}


def _nonfinite(model: onnx.ModelProto) -> list[str]:
    return [t.name for t in model.graph.initializer
            if t.data_type == TensorProto.FLOAT and not np.isfinite(numpy_helper.to_array(t)).all()]


def _cosine(a, b) -> float:
    a = np.concatenate([o[0].ravel() for o in a]).astype(np.float64)
    b = np.nan_to_num(np.concatenate([o[0].ravel() for o in b]).astype(np.float64))
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_rewrite_removes_the_identity_max_and_bounds_the_mask_without_changing_the_float_outputs():
    model, samples = _masked_softmax(), _samples()
    new, done = quant_finite.rewrite(model, samples)
    assert done["removed"] == ["Max max_neg_inf"]
    bound = done["replaced"]["mask"]
    assert bound >= 128 and np.log2(bound).is_integer()
    assert _nonfinite(new) == [] and "neg_inf" not in {t.name for t in new.graph.initializer}
    mask = numpy_helper.to_array(next(t for t in new.graph.initializer if t.name == "mask"))
    assert mask[0, 12:].tolist() == [-bound] * 4 and not mask[0, :12].any()
    before, after = run_samples(model, samples), run_samples(new, samples)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(before, after))  # bit for bit
    assert not np.any(after[0][0][0, 12:])  # masked entries still exactly 0


def test_a_model_without_infinite_constants_is_left_alone(tmp_path):
    model = _masked_softmax()
    for t in model.graph.initializer:
        if t.name in ("mask", "neg_inf"):
            t.CopyFrom(numpy_helper.from_array(np.nan_to_num(numpy_helper.to_array(t), neginf=-1e4), t.name))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert quant_finite.make_finite(path, _samples()) == {}


def test_a_rewrite_that_would_change_the_float_outputs_is_not_applied(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    onnx.save(_masked_softmax(), str(path))
    monkeypatch.setattr(quant_finite, "finite_bound", lambda peak: 1.0)  # too small: masked entries leak
    done = quant_finite.make_finite(path, _samples())
    assert done["applied"] is False and "kept" in done["reason"]
    assert _nonfinite(onnx.load(str(path))) == ["mask", "neg_inf"]


def test_quantize_stage_gives_a_qdq_model_that_tracks_float(tmp_path):
    onnx.save(_masked_softmax(), str(tmp_path / "masked.onnx"))
    np.savez(tmp_path / "calib.npz", **_samples())
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": "masked"},
           "model": {"path": str(tmp_path / "masked.onnx"), "inputs": {"x": [1, 16]}, "task": "classification"},
           "target": "host-cpu",
           "quantization": {"mode": "static", "calibration": {"data": str(tmp_path / "calib.npz"), "samples": 16,
                                                              "method": "minmax"}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    result = build(tmp_path / "p.yaml", stages=("import", "normalize", "optimize", "quantize"))
    assert result.ok, result.error
    assert result.ctx.report["quantize"]["finite_constants"]["applied"] is True
    qdq = onnx.load(str(result.ctx.model_path))
    assert _nonfinite(qdq) == []  # no inf scale, no inf constant
    samples = _samples(8)
    assert _cosine(run_samples(result.ctx.float_model_path, samples), run_samples(qdq, samples)) >= 0.99
