"""One-op float ONNX models, quantized to QDQ by onnxruntime the way the quantize stage does."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def one_op(op: str, x_shape, y_shape, inits=(), extra_inputs=(), attrs=None, pre_relu=False, post=None,
           second_input=None, opset: int = 13) -> onnx.ModelProto:
    """x -> [Relu] -> op(x, *extra_inputs) -> [post op] -> y."""
    nodes = []
    x = "x"
    if pre_relu:
        nodes.append(helper.make_node("Relu", ["x"], ["x_relu"], name="pre"))
        x = "x_relu"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    args = [x]
    if second_input is not None:
        inputs.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, second_input))
        args.append("x2")
    args += list(extra_inputs)
    out = "y" if post is None else "mid"
    nodes.append(helper.make_node(op, args, [out], name="op", **(attrs or {})))
    if post is not None:
        nodes.append(helper.make_node(post, [out], ["y"], name="post"))
    graph = helper.make_graph(nodes, "one_op", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def quantize(model: onnx.ModelProto, folder: Path, activation: str = "int8", samples: int = 16, seed: int = 0,
             exclude: tuple[str, ...] = (), int16_tensors: tuple[str, ...] = ()) -> Path:
    """`int16_tensors`: activations made symmetric int16 in an otherwise `activation` model (auto's mixed precision)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgeship.stages.quant_ort import op_types_to_quantize

    folder.mkdir(parents=True, exist_ok=True)
    src, dst = folder / "float.onnx", folder / "qdq.onnx"
    onnx.save(model, str(src))
    rng = np.random.default_rng(seed)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    data = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(samples)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(data)

        def get_next(self):
            return next(self.it, None)

    act = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8, "int16": QuantType.QInt16}[activation]
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=act, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": activation == "int16", "WeightSymmetric": True,
                                   "ForceQuantizeNoInputCheck": True,
                                   "TensorQuantOverrides": {t: [{"quant_type": QuantType.QInt16, "symmetric": True}]
                                                            for t in int16_tensors}},
                    op_types_to_quantize=op_types_to_quantize(SimpleNamespace(integer_only=True)),
                    nodes_to_exclude=list(exclude))
    return dst


def feeds_for(path: Path, n: int = 4, seed: int = 1) -> list[dict]:
    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    return [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(n)]
