"""The roofline's Ethos-U structure (pinned without Vela): MAC reductions are rounded up to the NPU's
8-channel granule, elementwise ops are paced per output element, and the Vela fit recovers known
factors and leaves a class it has no evidence for at the dense figure."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeship.targets import load_target
from edgeship.targets.backends.vela_calibration import Sample, fit, leave_one_out, npu_ms
from edgeship.targets.calibrate import with_cost_model
from edgeship.targets.costmodel import estimate, node_work, padded_flops
from edgeship.targets.graphinfo import GraphInfo
from edgeship.targets.profileview import ProfileView

E84 = "infineon-psoc-edge-e84"


def _conv_graph(c_in: int, group: int = 1, c_out: int = 16, hw: int = 10) -> GraphInfo:
    w = numpy_helper.from_array(np.ones((c_out, c_in // group, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1] * 4, group=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return GraphInfo(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _unary_graph(op: str, shape=(1, 16, 10, 10)) -> GraphInfo:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="op")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return GraphInfo(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _compute_us(g: GraphInfo, profile, name: str) -> float:
    return next(r["compute_us"] for r in estimate(g, profile)["per_node"] if r["name"] == name)


def test_reduction_depth_rounds_up_to_the_granule():
    g = _conv_graph(c_in=3)
    work = node_work(g, g.by_name["conv"])
    assert work.reduce_depth == 3
    assert padded_flops(work, 8) == work.flops * 8 // 3
    assert padded_flops(work, None) == work.flops
    dw = _conv_graph(c_in=16, group=16)
    assert node_work(dw, dw.by_name["conv"]).reduce_depth == 1


def test_depthwise_and_one_channel_convs_cost_as_8_deep_on_ethos_u_only():
    e84, host = load_target(E84), load_target("host-cpu")
    shallow, deep, dw = _conv_graph(1, hw=64), _conv_graph(8, hw=64), _conv_graph(16, group=16, hw=64)
    # on the U55 a 1-channel conv uses 1/8 of the MAC lanes: it takes as long as an 8-channel one
    assert np.isclose(_compute_us(shallow, e84, "conv"), _compute_us(deep, e84, "conv"))
    # a depthwise conv over 16 channels runs like a dense 8-in conv to 16 outputs (same padded MACs)
    assert np.isclose(_compute_us(dw, e84, "conv"), _compute_us(deep, e84, "conv"))
    # a CPU has no such granule: 8x fewer MACs, 8x less time
    assert np.isclose(_compute_us(deep, host, "conv"), 8 * _compute_us(shallow, host, "conv"), rtol=1e-3)


def test_elementwise_ops_are_paced_per_element_on_ethos_u():
    e84 = load_target(E84)
    add_like, tanh = _unary_graph("Relu"), _unary_graph("Tanh")
    elements = 16 * 10 * 10
    peak, _ = ProfileView(e84).peak_ops_per_s("accelerator", "float32")  # the graph is float: the profile's fallback
    expected = 2 * elements / peak / e84.data["cost_model"]["efficiency"]["Elementwise"] * 1e6
    assert np.isclose(_compute_us(tanh, e84, "op"), _compute_us(add_like, e84, "op"))  # not 4x (Tanh's FLOPs)
    assert np.isclose(_compute_us(tanh, e84, "op"), expected, rtol=1e-3)
    without = with_cost_model(e84, {"efficiency": {"default": 0.5}})
    assert np.isclose(_compute_us(tanh, without, "op"), 4 * _compute_us(add_like, without, "op"), rtol=0.02)


def _samples(profile, factors: dict) -> list[Sample]:
    """Models whose 'Vela' latency is the roofline's under known factors."""
    truth = with_cost_model(profile, factors)
    out = []
    for name, g in (("stem", _conv_graph(1)), ("dense", _conv_graph(32, c_out=64, hw=16)),
                    ("dw", _conv_graph(32, group=32, hw=16)), ("tanh", _unary_graph("Tanh", (1, 64, 32, 32))),
                    ("relu", _unary_graph("Relu", (1, 32, 16, 16)))):
        placement = {"nodes": [{"name": n.name, "unit": "accelerator"} for n in g.active_nodes()]}  # as Vela placed it
        out.append(Sample(name, g, placement, npu_ms(Sample(name, g, placement, 1.0), truth)))
    return out


def test_vela_fit_recovers_known_factors_and_holds_out():
    e84 = load_target(E84)
    factors = {"efficiency": {"default": 0.5087, "MatMul": 0.0151, "Elementwise": 0.0059},
               "per_node_overhead_us": 0.5, "per_run_overhead_us": 2.0}
    samples = _samples(e84, factors)
    fitted = fit(samples, e84)
    assert fitted["worst_ratio"] <= 1.2, fitted  # grids and coordinate descent: close, not exact
    eff = fitted["cost_model"]["efficiency"]
    assert abs(np.log(eff["default"] / 0.5087)) < 0.15 and abs(np.log(eff["Elementwise"] / 0.0059)) < 0.15
    assert eff["MatMul"] == eff["default"]  # no two-activation MatMul in the samples: no evidence, dense figure
    held = leave_one_out(samples, e84)
    assert [r["model"] for r in held] == [s.name for s in samples]
    assert max(max(r["ratio"], 1 / r["ratio"]) for r in held) <= 1.5, held
