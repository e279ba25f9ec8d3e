"""Small ONNX models made in code (onnx.helper) for build tests: no downloads, seconds to build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_mlp(path: Path, features: int = 8, classes: int = 4, batch="N") -> Path:
    """x[batch, features] -> Gemm -> Relu -> Gemm -> y[batch, classes]; `batch` may be a dim name (dynamic)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((features, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, classes)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("MatMul", ["hr", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "tiny_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])],
                              [w1, w2])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def scalar_control_flow(path: Path, frames: int = 6, bins: int = 4) -> Path:
    """audio[1, frames, bins] float + rate (0-d int64) + steps (0-d int64), with an If and a Loop.

    If: rate > 8000 picks a scale of 0.5 or 2.0 for the audio. Loop: adds the scaled audio to itself
    `steps` times (trip count from the int64 input). Output: the frame sums, [1, frames].
    """
    f32 = TensorProto.FLOAT
    half = helper.make_tensor("half", f32, [], [0.5])
    two = helper.make_tensor("two", f32, [], [2.0])
    then_graph = helper.make_graph([helper.make_node("Constant", [], ["s_then"], value=half)], "then", [],
                                   [helper.make_tensor_value_info("s_then", f32, [])])
    else_graph = helper.make_graph([helper.make_node("Constant", [], ["s_else"], value=two)], "else", [],
                                   [helper.make_tensor_value_info("s_else", f32, [])])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
         helper.make_node("Add", ["acc_in", "scaled"], ["acc_out"], name="body_add")],
        "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", f32, [1, frames, bins])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", f32, [1, frames, bins])])
    inits = [numpy_helper.from_array(np.array(8000, dtype=np.int64), "threshold"),
             numpy_helper.from_array(np.array(True), "keep_going"),
             numpy_helper.from_array(np.array([2], dtype=np.int64), "sum_axes")]
    nodes = [
        helper.make_node("Greater", ["rate", "threshold"], ["is_fast"], name="is_fast"),
        helper.make_node("If", ["is_fast"], ["scale"], name="pick_scale", then_branch=then_graph, else_branch=else_graph),
        helper.make_node("Mul", ["audio", "scale"], ["scaled"], name="scale_audio"),
        helper.make_node("Loop", ["steps", "keep_going", "scaled"], ["acc"], name="accumulate", body=body),
        helper.make_node("ReduceSum", ["acc", "sum_axes"], ["frame_sums"], name="frame_sums", keepdims=0),
    ]
    graph = helper.make_graph(nodes, "scalar_control_flow",
                              [helper.make_tensor_value_info("audio", f32, [1, frames, bins]),
                               helper.make_tensor_value_info("rate", TensorProto.INT64, []),
                               helper.make_tensor_value_info("steps", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("frame_sums", f32, [1, frames])], inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def write_manifest(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def pipeline_doc(model: str, inputs: dict, *, name: str = "p", quantization: dict | None = None,
                 validation: dict | None = None, **extra) -> dict:
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": name},
           "model": {"path": model, "inputs": inputs}, "target": "host-cpu",
           "quantization": quantization or {"mode": "none"},
           "validation": {"samples": 4, "latency": {"warmup": 1, "runs": 3}, **(validation or {})}}
    doc.update(extra)
    return doc
