"""Bias correction beyond the plain Conv: ConvTranspose (weights (C_in, C_out, k, k), spread over the strides)
and convs without a bias (one is added to be corrected)."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeship.stages import quant_equalize
from edgeship.stages.quant_measure import run_all, session


def test_conv_transpose_weight_error_is_its_output_mean_shift():
    """ConvTranspose weights are (C_in, C_out, k, k) and each input pixel spreads over stride x stride outputs:
    the predicted shift equals the measured mean shift of the output (no borders with kernel == stride)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (3, 2, 2, 2)).astype(np.float32)
    w_err = w + rng.normal(0, 0.05, w.shape).astype(np.float32)
    means = np.array([5.0, -2.0, 1.5])
    x = np.broadcast_to(means.reshape(1, 3, 1, 1), (1, 3, 4, 4)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", strides=[2, 2])

    def run(weights):
        graph = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
                                  [numpy_helper.from_array(weights, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    measured = (run(w_err) - run(w)).mean(axis=(0, 2, 3))
    predicted = quant_equalize.conv_weight_error_shift(node, w, w_err, means)
    np.testing.assert_allclose(predicted, measured, rtol=1e-4, atol=1e-5)


def test_a_conv_without_bias_gets_one_to_correct(tmp_path):
    """An FPN-style 1x1 conv with no bias, on inputs with a large mean: a zero int32 bias (scale = input scale x
    weight scale) is added behind a DequantizeLinear and corrected; the model stays valid and the mean error drops."""
    from types import SimpleNamespace

    from edgeship.stages.quant_ort import quantize_static_qdq

    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.5, (6, 6, 1, 1)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "nobias",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 5, 5])],
                              [numpy_helper.from_array(w, "w")])
    float_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    float_model.ir_version = 8
    onnx.save(float_model, str(tmp_path / "f.onnx"))
    data = {"x": (20 + rng.normal(0, 1, (16, 1, 6, 5, 5))).astype(np.float32)}
    policy = SimpleNamespace(activation_dtype="int16", weight_dtype="int8", activation_symmetric=True,
                             weight_symmetric=True, method="minmax", integer_only=True)
    quantize_static_qdq(tmp_path / "f.onnx", tmp_path / "q.onnx", policy, data, tmp_path / "cal.json", [], True)
    qdq = onnx.load(str(tmp_path / "q.onnx"))
    conv = next(n for n in qdq.graph.node if n.op_type == "Conv")
    means = {conv.input[0]: quant_equalize.channel_means(data["x"])}
    assert quant_equalize.correct_biases(qdq, float_model, means) == 1
    onnx.checker.check_model(qdq)
    onnx.save(qdq, str(tmp_path / "bc.onnx"))
    ref = run_all(session(tmp_path / "f.onnx", threads=1), data)[0]
    before = run_all(session(tmp_path / "q.onnx", threads=1), data)[0]
    after = run_all(session(tmp_path / "bc.onnx", threads=1), data)[0]
    mean_error = lambda out: np.abs((out - ref).mean(axis=(0, 1, 3, 4))).max()  # noqa: E731
    assert mean_error(after) < 0.2 * mean_error(before)
