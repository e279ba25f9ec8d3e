"""The optimize stage's rewrites (stages/fusions.py): each one fires on the pattern it names, leaves the
graph alone where it cannot prove the rewrite safe, and keeps the outputs (checked in onnxruntime)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeship.stages import fusions
from edgeship.stages.optimize import optimize_model
from tests.support.require import require_module

ort = require_module("onnxruntime")


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _model(nodes, inits, x_shape, y_shape, opset=17, outputs=("y",)):
    graph = helper.make_graph(nodes, "g", [_f32("x", x_shape)], [_f32(o, y_shape) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _ops(model):
    return [n.op_type for n in model.graph.node]


def _rewritten(model, rewrite):
    """(copy of model after `rewrite`, rewrite count)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out, rewrite(out)


def _assert_same_outputs(before, after, x, rtol=1e-6):
    for a, b in zip(_run(before, x), _run(after, x)):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-6)


X = np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype(np.float32) * 3


def _conv(name, inp, out, channels=4, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    inits = [_init(f"{name}.w", rng.standard_normal((channels, 4, 1, 1)) * 0.5)]
    inputs = [inp, f"{name}.w"]
    if bias:
        inits.append(_init(f"{name}.b", rng.standard_normal(channels) * 0.5))
        inputs.append(f"{name}.b")
    return helper.make_node("Conv", inputs, [out], name=name, kernel_shape=[1, 1]), inits


def hard_swish_block():
    """Paddle's hard-swish: x * clip(x + 3, 0, 6) / 6."""
    nodes = [helper.make_node("Add", ["x", "three"], ["a"], name="add"),
             helper.make_node("Clip", ["a", "zero", "six"], ["c"], name="clip"),
             helper.make_node("Mul", ["x", "c"], ["m"], name="mul"),
             helper.make_node("Div", ["m", "six"], ["y"], name="div")]
    inits = [_init("three", 3.0), _init("zero", 0.0), _init("six", 6.0)]
    return _model(nodes, inits, [1, 4, 6, 6], [1, 4, 6, 6])


def test_divide_by_constant_becomes_multiply_by_reciprocal():
    model = hard_swish_block()
    after, count = _rewritten(model, fusions.divide_by_constant_as_multiply)
    assert count == 1
    assert _ops(after) == ["Add", "Clip", "Mul", "Mul"]
    _assert_same_outputs(model, after, X)


def test_divide_by_constant_shares_nothing_with_other_readers():
    """`six` is also Clip's bound: the Div gets its own reciprocal, Clip keeps 6."""
    after, _ = _rewritten(hard_swish_block(), fusions.divide_by_constant_as_multiply)
    clip = next(n for n in after.graph.node if n.op_type == "Clip")
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    assert float(inits[clip.input[2]]) == 6.0


@pytest.mark.parametrize("divisor", [0.0, np.inf, 1e-45])
def test_divide_left_alone_when_the_reciprocal_is_not_finite(divisor):
    node = helper.make_node("Div", ["x", "d"], ["y"], name="div")
    model = _model([node], [_init("d", divisor)], [1, 4, 6, 6], [1, 4, 6, 6])
    assert _rewritten(model, fusions.divide_by_constant_as_multiply)[1] == 0


def test_divide_by_a_runtime_tensor_is_left_alone():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Div", ["x", "r"], ["y"], name="div")]
    assert _rewritten(_model(nodes, [], [1, 4, 6, 6], [1, 4, 6, 6]), fusions.divide_by_constant_as_multiply)[1] == 0


def se_gate(opset=17, bias=True, alpha=0.2, beta=0.5):
    """The squeeze-excitation gate: x * HardSigmoid(Conv(x))."""
    conv, inits = _conv("gate", "x", "g", bias=bias)
    nodes = [conv, helper.make_node("HardSigmoid", ["g"], ["h"], name="hsig", alpha=alpha, beta=beta),
             helper.make_node("Mul", ["x", "h"], ["y"], name="scale")]
    return _model(nodes, inits, [1, 4, 6, 6], [1, 4, 6, 6], opset=opset)


@pytest.mark.parametrize("opset,bias,alpha,beta", [(17, True, 0.2, 0.5), (17, False, 1 / 6, 0.5), (10, True, 0.2, 0.5)])
def test_hard_sigmoid_folds_into_the_conv(opset, bias, alpha, beta):
    model = se_gate(opset, bias, alpha, beta)
    after, count = _rewritten(model, fusions.fold_hard_sigmoid_into_conv)
    assert count == 1
    assert _ops(after) == ["Conv", "Clip", "Mul"]
    onnx.checker.check_model(after)
    _assert_same_outputs(model, after, X, rtol=1e-5)


def test_hard_sigmoid_stays_when_the_conv_output_has_another_reader():
    conv, inits = _conv("gate", "x", "g")
    nodes = [conv, helper.make_node("HardSigmoid", ["g"], ["h"], name="hsig"),
             helper.make_node("Add", ["g", "h"], ["y"], name="also_reads_g")]
    model = _model(nodes, inits, [1, 4, 6, 6], [1, 4, 6, 6])
    assert _rewritten(model, fusions.fold_hard_sigmoid_into_conv)[1] == 0


def test_conv_batchnorm_add_mul_fold_into_one_conv():
    conv, inits = _conv("c", "x", "c0")
    rng = np.random.default_rng(1)
    inits += [_init("bn.s", rng.uniform(0.5, 2, 4)), _init("bn.b", rng.standard_normal(4)),
              _init("bn.m", rng.standard_normal(4)), _init("bn.v", rng.uniform(0.5, 2, 4)),
              _init("add.c", rng.standard_normal((1, 4, 1, 1))), _init("mul.c", rng.uniform(0.5, 2, (4, 1, 1)))]
    nodes = [conv, helper.make_node("BatchNormalization", ["c0", "bn.s", "bn.b", "bn.m", "bn.v"], ["c1"], name="bn"),
             helper.make_node("Add", ["c1", "add.c"], ["c2"], name="add"),
             helper.make_node("Mul", ["mul.c", "c2"], ["y"], name="mul")]
    model = _model(nodes, inits, [1, 4, 6, 6], [1, 4, 6, 6])
    after = onnx.ModelProto()
    after.CopyFrom(model)
    counts = optimize_model(after)
    assert _ops(after) == ["Conv"]
    assert counts["fuse_conv_batchnorm"] == counts["fuse_conv_add"] == counts["fuse_conv_mul"] == 1
    _assert_same_outputs(model, after, X, rtol=1e-5)


def test_identity_cast_reshape_and_relu_cleanups():
    inits = [numpy_helper.from_array(np.array([1, 4, 36], dtype=np.int64), "s1"),
             numpy_helper.from_array(np.array([1, 4, 6, 6], dtype=np.int64), "s2")]
    nodes = [helper.make_node("Identity", ["x"], ["i"], name="id"),
             helper.make_node("Cast", ["i"], ["d"], name="up", to=TensorProto.DOUBLE),
             helper.make_node("Cast", ["d"], ["f"], name="down", to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["f", "s1"], ["r1"], name="r1"),
             helper.make_node("Reshape", ["r1", "s2"], ["r2"], name="r2"),
             helper.make_node("Relu", ["r2"], ["a"], name="relu_a"),
             helper.make_node("Relu", ["a"], ["y"], name="relu_b")]
    model = _model(nodes, inits, [1, 4, 6, 6], [1, 4, 6, 6])
    after = onnx.ModelProto()
    after.CopyFrom(model)
    optimize_model(after)
    assert _ops(after) == ["Relu"]
    _assert_same_outputs(model, after, X)


def test_matmul_add_becomes_gemm():
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Add", ["m", "b"], ["y"], name="add")]
    model = _model(nodes, [_init("w", rng.standard_normal((8, 3))), _init("b", rng.standard_normal(3))], [2, 8], [2, 3])
    after, count = _rewritten(model, fusions.fuse_matmul_add)
    assert count == 1 and _ops(after) == ["Gemm"]
    x = rng.standard_normal((2, 8)).astype(np.float32)
    _assert_same_outputs(model, after, x, rtol=1e-5)


def test_mobilenet_v3_blocks_leave_no_div_or_hard_sigmoid():
    """hard-swish and the SE gate together, through every pass: only ops with quantized kernels remain."""
    conv, inits = _conv("gate", "hs", "g", seed=3)
    block = hard_swish_block()
    nodes = list(block.graph.node)
    nodes[-1].output[0] = "hs"
    nodes += [conv, helper.make_node("HardSigmoid", ["g"], ["h"], name="hsig"),
              helper.make_node("Mul", ["hs", "h"], ["y"], name="scale")]
    model = _model(nodes, list(block.graph.initializer) + inits, [1, 4, 6, 6], [1, 4, 6, 6])
    after = onnx.ModelProto()
    after.CopyFrom(model)
    counts = optimize_model(after)
    assert counts["divide_by_constant_as_multiply"] == 1 and counts["fold_hard_sigmoid_into_conv"] == 1
    assert not {"Div", "HardSigmoid"} & set(_ops(after))
    _assert_same_outputs(model, after, X, rtol=1e-5)


def test_every_conv_batchnorm_pair_folds_not_only_one_per_round():
    """A pass once folded a single pair per round (a stale node after the first rewrite), so a network
    with 30 BatchNorms (PP-OCR's classifier) kept 25 of them after the optimizer's 5 rounds."""
    rng = np.random.default_rng(4)
    nodes, inits, prev = [], [], "x"
    for i in range(8):
        conv, conv_inits = _conv(f"c{i}", prev, f"c{i}.out", seed=i)
        inits += conv_inits + [_init(f"bn{i}.s", rng.uniform(0.5, 2, 4)), _init(f"bn{i}.b", rng.standard_normal(4)),
                               _init(f"bn{i}.m", rng.standard_normal(4)), _init(f"bn{i}.v", rng.uniform(0.5, 2, 4))]
        out = "y" if i == 7 else f"bn{i}.out"
        nodes += [conv, helper.make_node("BatchNormalization", [f"c{i}.out", f"bn{i}.s", f"bn{i}.b", f"bn{i}.m", f"bn{i}.v"],
                                         [out], name=f"bn{i}")]
        prev = out
    model = _model(nodes, inits, [1, 4, 6, 6], [1, 4, 6, 6])
    after = onnx.ModelProto()
    after.CopyFrom(model)
    counts = optimize_model(after)
    assert counts["fuse_conv_batchnorm"] == 8
    assert _ops(after) == ["Conv"] * 8
    _assert_same_outputs(model, after, X, rtol=1e-4)
