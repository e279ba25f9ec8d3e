"""Cross-layer equalization keeps the float function and balances channel ranges; bias correction
removes the per-channel mean shift int8 weights cause."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeship.stages import quant_equalize
from edgeship.stages.quant_measure import run_all, session


def _chain(path, activation: str | None, depthwise_first: bool):
    """x(1,8,12,12) -> conv1 (3x3; depthwise or regular) -> act -> conv2 (1x1 pointwise) -> conv3 (depthwise) -> y."""
    rng = np.random.default_rng(0)
    c = 8
    w1 = rng.normal(0, 1, (c, 1 if depthwise_first else c, 3, 3)).astype(np.float32)
    w1 *= np.logspace(-2, 1, c, dtype=np.float32).reshape(-1, 1, 1, 1)  # channel ranges over three decades
    w2 = rng.normal(0, 1, (c, c, 1, 1)).astype(np.float32)
    w3 = rng.normal(0, 1, (c, 1, 3, 3)).astype(np.float32) * np.logspace(1, -1, c, dtype=np.float32).reshape(-1, 1, 1, 1)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"),
                                                        (rng.normal(0, 1, c).astype(np.float32), "b1"),
                                                        (rng.normal(0, 1, c).astype(np.float32), "b2"))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                              group=c if depthwise_first else 1)]
    prev = "c1"
    if activation:
        nodes.append(helper.make_node(activation, [prev], ["a1"], name="act1"))
        prev = "a1"
    nodes.append(helper.make_node("Conv", [prev, "w2", "b2"], ["c2"], name="conv2"))
    nodes.append(helper.make_node("Conv", ["c2", "w3"], ["y"], name="conv3", pads=[1, 1, 1, 1], group=c))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 12, 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return model


def _ranges(model, name, axis):
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))
    return np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)


def test_equalization_preserves_the_float_outputs_and_balances_ranges(tmp_path):
    data = {"x": np.random.default_rng(1).normal(size=(4, 1, 8, 12, 12)).astype(np.float32)}
    for activation, depthwise in ((None, True), ("Relu", True), ("Relu", False), ("LeakyRelu", False)):
        model = _chain(tmp_path / "m.onnx", activation, depthwise)
        before = run_all(session(tmp_path / "m.onnx"), data)[0]
        spread_before = _ranges(model, "w1", 0).max() / _ranges(model, "w1", 0).min()
        facts = quant_equalize.equalize(model)
        assert facts["pairs"] == 2  # conv1 -> conv2 and conv2 -> conv3 (pointwise -> depthwise)
        onnx.save(model, str(tmp_path / "eq.onnx"))
        after = run_all(session(tmp_path / "eq.onnx"), data)[0]
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
        r1, r2 = _ranges(model, "w1", 0), _ranges(model, "w2", 1)
        assert r1.max() / r1.min() < spread_before / 10  # the three decades are mostly gone
        np.testing.assert_allclose(r1, r2, rtol=0.35)  # ranges balanced across the pair (last pass moves conv2 again)


def test_clip_and_shared_outputs_are_left_alone(tmp_path):
    model = _chain(tmp_path / "m.onnx", "Relu", True)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Sigmoid"  # not positively homogeneous: scaling would change the function
    facts = quant_equalize.equalize(model)
    assert facts["pairs"] == 1  # only conv2 -> conv3 remains


def test_bias_correction_removes_the_expected_weight_error():
    """conv y = W x + b, 2 in / 2 out channels, 1x1; int8 weights off by known amounts, input means known."""
    w = np.array([[1.00, 2.00], [0.50, -1.00]], np.float32).reshape(2, 2, 1, 1)
    wq = np.array([[51, 99], [25, -50]], np.int8).reshape(2, 2, 1, 1)  # scale 0.02: errors +0.02, -0.02, 0, 0
    def qdq_model():
        graph = helper.make_graph(
            [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w_dq"], name="dq_w", axis=0),
             helper.make_node("DequantizeLinear", ["bq", "bs"], ["b_dq"], name="dq_b", axis=0),
             helper.make_node("Conv", ["x", "w_dq", "b_dq"], ["y"], name="conv")],
            "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
            [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.full(2, 0.02, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(2, np.int8), "wz"),
             numpy_helper.from_array(np.array([1000, -500], np.int32), "bq"),
             numpy_helper.from_array(np.full(2, 0.001, np.float32), "bs")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    float_graph = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")], "f",
                                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
                                    [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1.0, -0.5], np.float32), "b")])
    model = qdq_model()
    means = {"x": np.array([3.0, 2.0])}  # E[x0] = 3, E[x1] = 2
    # channel 0: (+0.02 * 3) + (-0.02 * 2) = +0.02 -> 20 bias steps of 0.001; channel 1: no error
    assert quant_equalize.correct_biases(model, helper.make_model(float_graph), means) == 1
    bias = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "bq"))
    assert bias.tolist() == [1000 - 20, -500]
    np.testing.assert_allclose(quant_equalize.weight_error_shift(w, wq.astype(np.float64) * 0.02, means["x"], 1),
                               [0.02, 0.0], atol=1e-9)


def test_depthwise_weight_error_uses_its_own_channel():
    w = np.zeros((3, 1, 1, 1))
    wq = np.array([1.0, 2.0, 3.0]).reshape(3, 1, 1, 1)
    shift = quant_equalize.weight_error_shift(w, wq, np.array([10.0, 20.0, 30.0]), group=3)
    assert shift.tolist() == [10.0, 40.0, 90.0]


def test_channel_means_per_output_channel():
    values = np.zeros((3, 1, 2, 2, 2))
    values[:, :, 1] = 4.0
    assert quant_equalize.channel_means(values).tolist() == [0.0, 4.0]


def test_calibration_range_is_chosen_per_tensor_by_held_out_error():
    from edgeship.stages import quant_calib

    rng = np.random.default_rng(0)
    uniform = rng.uniform(-1, 1, 20000)
    method, (lo, hi), errors = quant_calib.choose(uniform[:10000], uniform[10000:], symmetric=False)
    assert method == "minmax" and errors["minmax"] <= min(errors.values())  # every level is in use: keep the range
    fit, held = rng.uniform(-1, 1, 20000), rng.uniform(-1, 1, 20000)
    fit[7] = 200.0  # one spurious spike in the calibration half stretches min-max 100x; the held-out half has none
    method, (lo, hi), errors = quant_calib.choose(fit, held, symmetric=False)
    assert method == "percentile" and hi < 2.0 and errors[method] < errors["minmax"] / 100
