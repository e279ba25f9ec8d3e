"""Mixed int8/int16 models (auto's int16 layers on Ethos-U): at each boundary the emitter QUANTIZEs between
int8 and int16 so every TFLite operator sees one activation type; LiteRT prepares the file and agrees with
onnxruntime's QDQ to within 1 LSB, and Vela keeps every operator on the NPU."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.backends.qdq_models import const, feeds_for, quantize
from tests.backends.test_backends import FULL
from tests.support.require import require_module

rng = np.random.default_rng(7)
W = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.3  # noqa: E731


def _model(nodes, x_shape, y_shape, inits):
    graph = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def mlp():
    """int8 Relu input, int16 Relu output; int16 MatMul input, int8 MatMul output."""
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"], name="fc1"), helper.make_node("Relu", ["h0"], ["r0"], name="relu"),
             helper.make_node("MatMul", ["r0", "w1"], ["h1"], name="fc2"), helper.make_node("MatMul", ["h1", "w2"], ["y"], name="fc3")]
    return _model(nodes, [1, 16], [1, 8], [const("w0", W(16, 16)), const("w1", W(16, 16)), const("w2", W(16, 8))]), ("r0", "h1")


def conv_skip():
    """A residual Add of an int16 branch and an int8 skip, with an int8 output."""
    pads = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1", **pads),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2", "b2"], ["c"], name="conv2", **pads),
             helper.make_node("Add", ["c", "h"], ["s"], name="add"),
             helper.make_node("Conv", ["s", "w3", "b3"], ["y"], name="conv3", **pads)]
    inits = [const("w1", W(4, 3, 3, 3)), const("b1", W(4)), const("w2", W(4, 4, 3, 3)), const("b2", W(4)),
             const("w3", W(4, 4, 3, 3)), const("b3", W(4))]
    return _model(nodes, [1, 3, 8, 8], [1, 4, 8, 8], inits), ("r", "c")


def two_inputs():
    """Two activation inputs, one int8 and one int16, into Mul, Sub and Concat, plus the constants an
    elementwise op takes in its activation type (Mul by an int8 scale in an int16 layer: the llm-u85 decoder;
    Div by a constant, written as MUL by its reciprocal)."""
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="fc"),
             helper.make_node("Mul", ["h", "x2"], ["m"], name="gate"),
             helper.make_node("Mul", ["m", "c"], ["s"], name="scale"),
             helper.make_node("Sub", ["s", "x2"], ["d"], name="sub"),
             helper.make_node("Div", ["s", "c2"], ["v"], name="div"),
             helper.make_node("Concat", ["v", "d", "k"], ["cat"], name="cat", axis=1),
             helper.make_node("MatMul", ["cat", "w1"], ["y"], name="out")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 16]) for n in ("x", "x2")]
    inits = [const("w0", W(16, 16)), const("c", np.float32(0.125)), const("c2", np.float32(3.0)), const("k", W(1, 16)), const("w1", W(48, 8))]
    graph = helper.make_graph(nodes, "two_inputs", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model, ("h", "m", "s", "v")


def activation_matmul():
    """MatMul of two activations (BATCH_MATMUL): an int16 one by an int8 one."""
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="fc"),
             helper.make_node("MatMul", ["h", "x2"], ["y"], name="bmm")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8]),
              helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 8, 4])]
    graph = helper.make_graph(nodes, "activation_matmul", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4])], initializer=[const("w0", W(8, 8))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model, ("h",)


def _activation_types(tflite) -> list[tuple[bool, set[str]]]:
    """Per operator: (is it a QUANTIZE, the integer types of its activations)."""
    from ai_edge_litert import schema_py_generated as S

    model = S.ModelT.InitFromPackedBuf(tflite.read_bytes(), 0)
    sub = model.subgraphs[0]
    names = {v: k for k, v in vars(S.TensorType).items() if not k.startswith("_")}
    types = []
    for op in sub.operators:
        tensors = [sub.tensors[i] for i in list(op.inputs) + list(op.outputs) if i >= 0]
        requantize = model.operatorCodes[op.opcodeIndex].builtinCode == S.BuiltinOperator.QUANTIZE
        types.append((requantize, {names[t.type] for t in tensors if model.buffers[t.buffer].data is None
                      and names[t.type] in ("INT8", "INT16")}))
    return types


MODELS = [mlp, conv_skip, two_inputs, activation_matmul]


@pytest.mark.parametrize("make", MODELS, ids=[m.__name__ for m in MODELS])
def test_mixed_model_has_one_activation_type_per_op_and_matches(make, tmp_path):
    require_module("ai_edge_litert")
    from edgeship.targets.backends.tflite_backend import self_check, write_tflite

    model, int16 = make()
    qdq = quantize(model, tmp_path, int16_tensors=int16)
    tflite, io, _ = write_tflite(qdq, tmp_path / "out")
    per_op = _activation_types(tflite)
    assert set().union(*(types for _, types in per_op)) == {"INT8", "INT16"}  # really mixed
    assert all(len(types) == 1 for requantize, types in per_op if not requantize), per_op
    check = self_check(qdq, tflite, io, feeds_for(qdq))
    assert check["within_1_lsb_pct"] >= 99.0, check


def test_auto_mixed_precision_lowers_for_ethos_u85(tmp_path):
    """The sensitive MLP auto gives int16 layers on arm-ethos-u85, through lower and validate with Vela."""
    require_module("ethosu.vela")
    require_module("ai_edge_litert")
    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress, build as run_build
    from tests.quant.test_recovery import _pipeline

    manifest = _pipeline(tmp_path, "arm-ethos-u85")
    result = run_build(load_documents(manifest)[0], target="arm-ethos-u85", stages=list(FULL), use_cache=False,
                       progress=Progress(quiet=True))
    assert result.ok, result.error
    precision = set(result.ctx.report["quantize"]["layer_precision"].values())
    assert precision == {"int8", "int16"}
    lower = result.ctx.report["lower"]
    assert lower["self_check"]["within_1_lsb_pct"] >= 99.0, lower["self_check"]
    assert lower["operators"]["cpu"] == 0, lower["placement"]
    assert result.ctx.report["validate"]["passed"]


@pytest.mark.parametrize("make", MODELS, ids=[m.__name__ for m in MODELS])
def test_mixed_model_stays_on_the_ethos_u85_npu(make, tmp_path):
    require_module("ethosu.vela")
    require_module("ai_edge_litert")
    from edgeship.targets.backends.tflite_backend import write_tflite
    from edgeship.targets.backends.vela import VelaBackend, parse_console

    model, int16 = make()
    tflite, _, _ = write_tflite(quantize(model, tmp_path, int16_tensors=int16), tmp_path / "out")
    ops, reasons = parse_console(VelaBackend("ethos-u85-256", "Ethos_U85_SYS_DRAM_High", "Dedicated_Sram").run_vela(tflite, tmp_path / "vela"))
    assert ops and all(op["unit"] == "NPU" for op in ops), (ops, reasons)
