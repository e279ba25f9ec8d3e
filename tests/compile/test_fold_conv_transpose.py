"""ConvTranspose folds like Conv (stages/fusions.py): a bias Add and a BatchNormalization after the DB detector's
upsampling (weights (C_in, C_out, k, k): output channels on axis 1), next to a chain of Conv affine blocks."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeship.stages.fusions import fuse_conv_add, fuse_conv_batchnorm, fuse_conv_mul

rng = np.random.default_rng(7)


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _affine_chain_model() -> onnx.ModelProto:
    """Three Conv -> Mul(scalar) -> Add(scalar) blocks (PP-LCNet's learnable affine blocks), then
    ConvTranspose -> Add(per-channel bias) -> BatchNormalization -> Relu (the DB detector's head)."""
    nodes, inits, x = [], [], "x"
    for i in range(3):
        inits += [_init(f"w{i}", rng.normal(0, 0.3, (4, 4, 3, 3))), _init(f"b{i}", rng.normal(0, 0.1, 4)),
                  _init(f"s{i}", [1.0 + 0.2 * i]), _init(f"t{i}", [0.1 * i - 0.05])]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Mul", [f"s{i}", f"c{i}"], [f"m{i}"], name=f"mul{i}"),
                  helper.make_node("Add", [f"m{i}", f"t{i}"], [f"a{i}"], name=f"add{i}")]
        x = f"a{i}"
    inits += [_init("wt", rng.normal(0, 0.3, (4, 2, 2, 2))), _init("bt", rng.normal(0, 0.1, (1, 2, 1, 1))),
              _init("g", rng.uniform(0.5, 1.5, 2)), _init("beta", rng.normal(0, 0.1, 2)),
              _init("mean", rng.normal(0, 0.1, 2)), _init("var", rng.uniform(0.5, 1.5, 2))]
    nodes += [helper.make_node("ConvTranspose", [x, "wt"], ["ct"], name="deconv", strides=[2, 2]),
              helper.make_node("Add", ["ct", "bt"], ["ctb"], name="deconv_bias"),
              helper.make_node("BatchNormalization", ["ctb", "g", "beta", "mean", "var"], ["bn"], name="bn"),
              helper.make_node("Relu", ["bn"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 12, 12])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_affine_ops_after_conv_and_conv_transpose_fold_and_keep_the_function():
    model = _affine_chain_model()
    x = rng.normal(0, 1, (1, 4, 6, 6)).astype(np.float32)
    before = _run(model, x)
    counts = {"mul": fuse_conv_mul(model), "add": fuse_conv_add(model), "bn": fuse_conv_batchnorm(model)}
    assert counts == {"mul": 3, "add": 4, "bn": 1}  # three scalar Adds and the ConvTranspose's bias Add
    assert [n.op_type for n in model.graph.node] == ["Conv"] * 3 + ["ConvTranspose", "Relu"]
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-4, atol=1e-4)
