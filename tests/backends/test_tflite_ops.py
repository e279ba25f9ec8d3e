"""Each operator the integer TFLite emitter lowers: the .tflite under LiteRT agrees with the QDQ ONNX
under onnxruntime to within 1 LSB on at least 99% of output elements."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.require import require_module

from tests.backends.qdq_models import const, feeds_for, one_op, quantize

rng = np.random.default_rng(42)
W = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.3  # noqa: E731

CASES = {
    "conv": lambda: one_op("Conv", [1, 3, 8, 8], [1, 4, 8, 8], [const("w", W(4, 3, 3, 3)), const("b", W(4))], ["w", "b"],
                           {"pads": [1, 1, 1, 1]}),
    "conv_stride_asym_pad_relu": lambda: one_op("Conv", [1, 2, 9, 7], [1, 5, 5, 4], [const("w", W(5, 2, 3, 3)), const("b", W(5))],
                                                ["w", "b"], {"pads": [1, 0, 1, 1], "strides": [2, 2]}, post="Relu"),
    "depthwise": lambda: one_op("Conv", [1, 4, 6, 6], [1, 4, 6, 6], [const("w", W(4, 1, 3, 3)), const("b", W(4))], ["w", "b"],
                                {"pads": [1, 1, 1, 1], "group": 4}),
    # the DB text detector's upsampling head: ONNX weights (C_in, C_out, k, k), per channel along axis 1
    "conv_transpose_s2_relu": lambda: one_op("ConvTranspose", [1, 6, 5, 5], [1, 4, 10, 10],
                                             [const("w", W(6, 4, 2, 2)), const("b", W(4))], ["w", "b"],
                                             {"strides": [2, 2]}, post="Relu"),
    "conv_transpose_same_pads": lambda: one_op("ConvTranspose", [1, 3, 4, 4], [1, 5, 8, 8], [const("w", W(3, 5, 3, 3))], ["w"],
                                               {"strides": [2, 2], "pads": [0, 0, 1, 1]}),
    "gemm": lambda: one_op("Gemm", [1, 16], [1, 8], [const("w", W(16, 8)), const("b", W(8))], ["w", "b"]),
    "gemm_transb": lambda: one_op("Gemm", [1, 16], [1, 8], [const("w", W(8, 16)), const("b", W(8))], ["w", "b"], {"transB": 1}),
    "matmul_3d": lambda: one_op("MatMul", [1, 5, 16], [1, 5, 8], [const("w", W(16, 8))], ["w"]),
    "add": lambda: one_op("Add", [1, 4, 5, 5], [1, 4, 5, 5], second_input=[1, 4, 5, 5]),
    "sub": lambda: one_op("Sub", [1, 8], [1, 8], second_input=[1, 8]),
    "mul_const": lambda: one_op("Mul", [1, 8], [1, 8], [const("c", W(8))], ["c"]),
    "maxpool": lambda: one_op("MaxPool", [1, 3, 8, 8], [1, 3, 4, 4], attrs={"kernel_shape": [2, 2], "strides": [2, 2]}),
    "maxpool_padded": lambda: one_op("MaxPool", [1, 3, 8, 8], [1, 3, 4, 4],
                                     attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "avgpool": lambda: one_op("AveragePool", [1, 3, 8, 8], [1, 3, 4, 4], attrs={"kernel_shape": [2, 2], "strides": [2, 2]}),
    "global_avgpool": lambda: one_op("GlobalAveragePool", [1, 6, 5, 5], [1, 6, 1, 1]),
    "reshape": lambda: one_op("Reshape", [1, 4, 3, 2], [1, 24], [const("s", np.asarray([1, 24]))], ["s"]),
    "flatten": lambda: one_op("Flatten", [1, 4, 3, 2], [1, 24]),
    "transpose": lambda: one_op("Transpose", [1, 4, 6], [1, 6, 4], attrs={"perm": [0, 2, 1]}),
    "softmax": lambda: one_op("Softmax", [1, 10], [1, 10]),
    "sigmoid": lambda: one_op("Sigmoid", [1, 16], [1, 16]),
    "tanh": lambda: one_op("Tanh", [1, 16], [1, 16]),
    "hardswish": lambda: one_op("HardSwish", [1, 16], [1, 16], opset=14),
    "hardsigmoid": lambda: one_op("HardSigmoid", [1, 16], [1, 16]),
    "concat": lambda: one_op("Concat", [1, 3, 4, 4], [1, 6, 4, 4], attrs={"axis": 1}, second_input=[1, 3, 4, 4]),
    "slice": lambda: one_op("Slice", [1, 8, 6], [1, 4, 6], [const("st", np.asarray([2])), const("en", np.asarray([6])),
                                                               const("ax", np.asarray([1]))], ["st", "en", "ax"]),
    "pad": lambda: one_op("Pad", [1, 2, 4, 4], [1, 2, 6, 6], [const("p", np.asarray([0, 0, 1, 1, 0, 0, 1, 1]))], ["p"]),
    "resize_nearest": lambda: one_op("Resize", [1, 2, 4, 4], [1, 2, 8, 8],
                                     [const("roi", np.zeros(0, np.float32)), const("sc", np.asarray([1, 1, 2, 2], np.float32))],
                                     ["roi", "sc"], {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                                     "nearest_mode": "floor"}),
    "layernorm": lambda: one_op("LayerNormalization", [1, 5, 16], [1, 5, 16],
                                [const("g", 1 + W(16)), const("beta", W(16))], ["g", "beta"], {"axis": -1}, opset=17),
    "where_const_mask": lambda: where_model(),
}


def where_model():
    """Where(constant mask, x, constant): the attention mask pattern."""
    from onnx import TensorProto, helper

    mask = const("mask", np.tril(np.ones((4, 4), dtype=bool)))
    fill = const("fill", np.asarray(-4.0, dtype=np.float32))
    node = helper.make_node("Where", ["mask", "x", "fill"], ["y"], name="op")
    graph = helper.make_graph([node], "where", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], initializer=[mask, fill])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(case, tmp_path):
    require_module("ai_edge_litert")
    from edgeship.targets.backends.tflite_backend import self_check, write_tflite

    qdq = quantize(CASES[case](), tmp_path)
    tflite, io, _ = write_tflite(qdq, tmp_path / "out")
    check = self_check(qdq, tflite, io, feeds_for(qdq))
    assert check["within_1_lsb_pct"] >= 99.0, check


def test_int16_activations_conv(tmp_path):
    """16x8: int16 activations, int8 weights, int64 bias."""
    require_module("ai_edge_litert")
    from edgeship.targets.backends.tflite_backend import self_check, write_tflite

    qdq = quantize(CASES["conv"](), tmp_path, activation="int16")
    tflite, io, _ = write_tflite(qdq, tmp_path / "out")
    assert io["inputs"][0]["dtype"] == "int16"
    check = self_check(qdq, tflite, io, feeds_for(qdq))
    assert check["within_1_lsb_pct"] >= 99.0, check


@pytest.mark.parametrize("case", ["conv_transpose_s2_relu", "conv_transpose_same_pads"])
def test_int16_activations_conv_transpose(case, tmp_path):
    """TRANSPOSE_CONV in 16x8 (int64 bias), as an Ethos-U target's int16 layers need it."""
    require_module("ai_edge_litert")
    from edgeship.targets.backends.tflite_backend import self_check, write_tflite

    qdq = quantize(CASES[case](), tmp_path, activation="int16")
    tflite, io, _ = write_tflite(qdq, tmp_path / "out")
    check = self_check(qdq, tflite, io, feeds_for(qdq))
    assert check["within_1_lsb_pct"] >= 99.0, check


def test_unsupported_op_is_a_per_node_reason(tmp_path):
    require_module("ai_edge_litert")
    from edgeship.targets.backends.tflite_emit import unsupported_nodes

    model = one_op("Conv", [1, 4, 6, 6], [1, 4, 6, 6], [const("w", W(4, 2, 3, 3)), const("b", W(4))], ["w", "b"],
                   {"pads": [1, 1, 1, 1], "group": 2})
    problems = unsupported_nodes(quantize(model, tmp_path))
    assert list(problems) == ["op"]
    assert "grouped Conv" in problems["op"].message and problems["op"].fix


def test_division_of_activations_runs_in_float_and_matches(tmp_path):
    require_module("ai_edge_litert")
    from edgeship.targets.backends.tflite_backend import self_check, write_tflite

    qdq = quantize(one_op("Div", [1, 8], [1, 8], second_input=[1, 8]), tmp_path)
    tflite, io, _ = write_tflite(qdq, tmp_path / "out")
    feeds = [{k: np.abs(v) + 0.5 for k, v in f.items()} for f in feeds_for(qdq)]
    assert self_check(qdq, tflite, io, feeds)["within_1_lsb_pct"] >= 99.0


def test_image_input_is_stored_nhwc_so_a_conv_needs_no_transpose(tmp_path):
    require_module("ai_edge_litert")
    from edgeship.targets.backends.tflite_emit import emit

    result = emit(quantize(CASES["conv"](), tmp_path))
    assert result.io["inputs"][0]["perm"] == [0, 2, 3, 1] and result.io["inputs"][0]["tflite_shape"] == [1, 8, 8, 3]
    assert len(result.op_origin) == 1  # CONV_2D alone: the layout change happened once, at the input


def test_a_layer_kept_in_float_runs_as_a_float_island(tmp_path):
    """auto's "+floatN" candidates and keep_float leave a Conv in float: DEQUANTIZE, float CONV_2D, QUANTIZE."""
    require_module("ai_edge_litert")
    from edgeship.targets.backends.tflite_backend import self_check, write_tflite

    from onnx import TensorProto, helper

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="first", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "w2", "b2"], ["c"], name="op", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c", "w3", "b3"], ["y"], name="last", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "kept", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              initializer=[const("w1", W(4, 3, 3, 3)), const("b1", W(4)), const("w2", W(4, 4, 3, 3)),
                                           const("b2", W(4)), const("w3", W(4, 4, 3, 3)), const("b3", W(4))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    qdq = quantize(model, tmp_path, exclude=("op",))
    tflite, io, facts = write_tflite(qdq, tmp_path / "out")
    assert facts["operators"] >= 3  # DEQUANTIZE, CONV_2D (float), QUANTIZE
    assert self_check(qdq, tflite, io, feeds_for(qdq))["within_1_lsb_pct"] >= 99.0
