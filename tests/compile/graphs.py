"""Hand-built ONNX graphs whose FLOPs, bytes and peak memory are known exactly (worked out in the tests)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def w(name, shape, dtype=np.float32, seed=0):
    arr = (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(dtype)
    return numpy_helper.from_array(arr, name)


def conv_model() -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv(4x3x3x3, bias, pad 1) -> y[1,4,8,8]."""
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv0", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return _model([node], [f32("x", [1, 3, 8, 8])], [f32("y", [1, 4, 8, 8])], [w("w", (4, 3, 3, 3)), w("b", (4,))])


def matmul_chain() -> onnx.ModelProto:
    """x[2,16] @ W1[16,32] -> h[2,32] @ W2[32,8] -> y[2,8]."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm0"), helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm1")]
    return _model(nodes, [f32("x", [2, 16])], [f32("y", [2, 8])], [w("w1", (16, 32)), w("w2", (32, 8))])


def residual_block() -> onnx.ModelProto:
    """x -> conv1 -> relu1 -> conv2 -> add(x, .) -> relu2 -> y, all [1,4,8,8], convs 3x3 4->4 no bias."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["x", "c2"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu2"),
    ]
    return _model(nodes, [f32("x", [1, 4, 8, 8])], [f32("y", [1, 4, 8, 8])], [w("w1", (4, 4, 3, 3)), w("w2", (4, 4, 3, 3), seed=1)])


def qdq_conv() -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(DQ(w int8)) -> Q -> DQ -> y: the conv runs in int8."""
    inits = [
        numpy_helper.from_array(np.ones((4, 3, 3, 3), np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w_q", "s", "zp"], ["wd"], name="dq_w"),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["cq"], name="q_out"),
        helper.make_node("DequantizeLinear", ["cq", "s", "zp"], ["y"], name="dq_out"),
    ]
    return _model(nodes, [f32("x", [1, 3, 8, 8])], [f32("y", [1, 4, 8, 8])], inits)


def conv_lrn_conv(kernel2: int = 3) -> onnx.ModelProto:
    """conv1 -> relu -> LRN -> conv2 -> relu2: an op in the middle that NPUs rarely run."""
    pad = kernel2 // 2
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("LRN", ["r1"], ["n"], name="lrn0", size=3),
        helper.make_node("Conv", ["n", "w2"], ["c2"], name="conv2", kernel_shape=[kernel2, kernel2], pads=[pad] * 4),
        helper.make_node("Relu", ["c2"], ["y"], name="relu2"),
    ]
    return _model(nodes, [f32("x", [1, 4, 8, 8])], [f32("y", [1, 4, 8, 8])],
                  [w("w1", (4, 4, 3, 3)), w("w2", (4, 4, kernel2, kernel2), seed=1)])


def npu_profile(fallback: bool = True, sram_kb=None, dram_mb=512, **limits) -> dict:
    """A small chip profile dict: an NPU running Conv/Relu/MaxPool in float32 and int8, a host CPU beside it."""
    return {
        "apiVersion": "edgeship/v1", "kind": "Target",
        "metadata": {"name": "test-npu", "vendor": "test"},
        "chip": {"family": "t", "part": "t", "class": "npu"},
        "compute": {"accelerator": {"name": "npu", "peak_tops": {"int8": 2.0, "float32": 0.5}},
                    "host": {"name": "cpu", "peak_tops": {"float32": 0.1}}},
        "memory": {"sram_kb": sram_kb, "dram_mb": dram_mb, "bandwidth_gb_s": 10.0, "host_link_gb_s": 1.0, "host_link_latency_us": 20},
        "formats": ["int8", "float32"],
        "quantization": {"dtypes": ["int8"], "symmetric_only": True, "granularity": ["per-tensor"], "power_of_two_scales": False},
        "operators": {"Conv": dict(limits), "Relu": {}, "MaxPool": {}},
        "host_fallback": {"enabled": fallback, "ops": "any" if fallback else []},
        "runtime": {"kind": "vendor", "execution_provider": None, "toolchain": "t"},
        "cost_model": {"efficiency": {"default": 0.5}, "per_node_overhead_us": 0, "bandwidth_efficiency": 1.0},
        "measurable": False,
        "sources": [{"figure": "compute", "url": "https://example.com"}],
    }
