"""The models `edgeship calibrate` measures: small ones made here in code (each stresses one kind of
op: dense conv, depthwise conv, residual adds, MatMul chains, attention-like blocks) plus the
onnx package's light_* backend test models (real CNN topologies, weights generated at load time).
Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# vgg19 is left out by default: ~550 MB of weights and ~20 GFLOPs per run on a shared 2-core box
LIGHT_DEFAULT = ["squeezenet", "shufflenet", "bvlc_alexnet", "zfnet512", "inception_v1", "resnet50",
                 "densenet121", "inception_v2"]


@dataclass
class CalibrationModel:
    name: str
    model: onnx.ModelProto
    inputs: dict  # input name -> shape


def _weight(rng, name: str, shape) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, group: int = 1, relu: bool = True) -> str:
        w = self.name("w")
        b = self.name("b")
        self.inits.append(_weight(self.rng, w, (c_out, c_in // group, k, k)))
        self.inits.append(_weight(self.rng, b, (c_out,)))
        y = self.name("conv")
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], name=y, kernel_shape=[k, k], strides=[stride, stride],
                                           pads=[k // 2] * 4, group=group))
        if relu:
            r = self.name("relu")
            self.nodes.append(helper.make_node("Relu", [y], [r], name=r))
            return r
        return y

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        y = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [y], name=y, **attrs))
        return y

    def matmul(self, x: str, k: int, n: int) -> str:
        w = self.name("w")
        self.inits.append(_weight(self.rng, w, (k, n)))
        return self.op("MatMul", [x, w])

    def model(self, name: str, x_shape, out: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeship-calibration")

        return model


def conv_stack() -> CalibrationModel:
    b = _Builder(1)
    y = b.conv("x", 3, 32, 3, stride=2)
    y = b.conv(y, 32, 64, 3)
    y = b.conv(y, 64, 64, 3, stride=2)
    y = b.conv(y, 64, 128, 3)
    y = b.op("GlobalAveragePool", [y])
    return CalibrationModel("conv-stack", b.model("conv-stack", (1, 3, 128, 128), y), {"x": [1, 3, 128, 128]})


def depthwise_blocks() -> CalibrationModel:
    b = _Builder(2)
    y = b.conv("x", 3, 32, 3, stride=2)
    for c_in, c_out in ((32, 64), (64, 128), (128, 128)):
        y = b.conv(y, c_in, c_in, 3, group=c_in)  # depthwise
        y = b.conv(y, c_in, c_out, 1)  # pointwise
    y = b.op("GlobalAveragePool", [y])
    return CalibrationModel("depthwise", b.model("depthwise", (1, 3, 160, 160), y), {"x": [1, 3, 160, 160]})


def residual_blocks() -> CalibrationModel:
    b = _Builder(3)
    y = b.conv("x", 3, 32, 3)
    for _ in range(3):
        z = b.conv(y, 32, 32, 3)
        z = b.conv(z, 32, 32, 3, relu=False)
        y = b.op("Relu", [b.op("Add", [y, z])])
    y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    return CalibrationModel("residual", b.model("residual", (1, 3, 96, 96), y), {"x": [1, 3, 96, 96]})


def mlp() -> CalibrationModel:
    b = _Builder(4)
    y = b.op("Relu", [b.matmul("x", 512, 1024)])
    y = b.op("Relu", [b.matmul(y, 1024, 1024)])
    y = b.op("Relu", [b.matmul(y, 1024, 1024)])
    y = b.matmul(y, 1024, 16)
    return CalibrationModel("mlp", b.model("mlp", (32, 512), y), {"x": [32, 512]})


def attention_block() -> CalibrationModel:
    b = _Builder(5)
    seq, dim = 128, 256
    q = b.matmul("x", dim, dim)
    k = b.matmul("x", dim, dim)
    v = b.matmul("x", dim, dim)
    kt = b.op("Transpose", [k], perm=[0, 2, 1])
    scores = b.op("Softmax", [b.op("MatMul", [q, kt])], axis=-1)
    ctx = b.op("MatMul", [scores, v])
    y = b.op("Add", ["x", b.matmul(ctx, dim, dim)])
    y = b.op("Relu", [b.matmul(y, dim, dim * 2)])
    y = b.matmul(y, dim * 2, dim)
    return CalibrationModel("attention", b.model("attention", (1, seq, dim), y), {"x": [1, seq, dim]})


def tiny_mlp() -> CalibrationModel:
    """Microseconds of work: what is left is per-node overhead (pins `per_node_overhead_us`)."""
    b = _Builder(6)
    y = b.op("Relu", [b.matmul("x", 32, 64)])
    y = b.op("Relu", [b.matmul(y, 64, 64)])
    y = b.op("Sigmoid", [b.matmul(y, 64, 1)])
    return CalibrationModel("tiny-mlp", b.model("tiny-mlp", (1, 32), y), {"x": [1, 32]})


def tiny_conv() -> CalibrationModel:
    b = _Builder(7)
    y = b.conv("x", 1, 8, 3)
    y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.conv(y, 8, 8, 3)
    y = b.op("GlobalAveragePool", [y])
    return CalibrationModel("tiny-conv", b.model("tiny-conv", (1, 1, 16, 16), y), {"x": [1, 1, 16, 16]})


def builtin_models() -> list[CalibrationModel]:
    return [conv_stack(), depthwise_blocks(), residual_blocks(), mlp(), attention_block(), tiny_mlp(), tiny_conv()]


def quantized(cm: CalibrationModel, seed: int = 0) -> CalibrationModel | None:
    """The model as int8 QDQ (uint8 activations, int8 per-channel weights: onnxruntime's x86-64
    recommendation), calibrated on a few random inputs - what the quantize stage produces, for
    measuring how fast this machine really runs int8. None when onnxruntime cannot quantize it."""
    import tempfile

    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError:
        return None
    rng = np.random.default_rng(seed)
    samples = [{name: rng.standard_normal(shape).astype(np.float32) for name, shape in cm.inputs.items()} for _ in range(4)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(samples)

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="edgeship-calib-q-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(cm.model, str(src))
        import logging

        logging.disable(logging.WARNING)  # onnxruntime.quantization's "consider pre-processing" advice
        try:
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            model = onnx.load(str(dst))
        except Exception:
            return None
        finally:
            logging.disable(logging.NOTSET)
    return CalibrationModel(f"{cm.name}-int8", model, cm.inputs)


def int8_models() -> list[CalibrationModel]:
    """int8 QDQ versions of the built-in models that have real compute."""
    out = [quantized(m) for m in (conv_stack(), depthwise_blocks(), residual_blocks(), mlp())]
    return [m for m in out if m is not None]


def light_dir() -> Path:
    return Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"


def light_models(names: list[str] | None = None) -> list[CalibrationModel]:
    out = []
    for short in names or LIGHT_DEFAULT:
        path = light_dir() / f"light_{short}.onnx"
        if not path.is_file():
            continue
        model = onnx.load(str(path))
        inits = {i.name for i in model.graph.initializer}
        inputs = {i.name: [d.dim_value or 1 for d in i.type.tensor_type.shape.dim] for i in model.graph.input if i.name not in inits}
        out.append(CalibrationModel(f"light_{short}", model, inputs))
    return out


def default_models(include_light: bool = True, include_int8: bool = True) -> list[CalibrationModel]:
    return builtin_models() + (int8_models() if include_int8 else []) + (light_models() if include_light else [])
