"""Read a QDQ ONNX model the way an integer backend needs it: which float tensors stand for which
integers (and with what scale/zero point), which inputs are quantized constants, and which nodes
compute.

onnxruntime's QDQ format wraps every quantized op in DequantizeLinear -> op -> QuantizeLinear; an
integer backend erases the wrappers and gives the op the integer tensors with those parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from edgeship.targets.backends.tflite_builder import QParams

QDQ = ("QuantizeLinear", "DequantizeLinear")
VIEW = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity")
ACTIVATIONS = ("Relu", "Clip")


@dataclass
class QConst:
    """An initializer behind a DequantizeLinear: integer values plus their quantization."""
    values: np.ndarray
    qparams: QParams

    def real(self) -> np.ndarray:
        scale = np.asarray(self.qparams.scale)
        zp = np.asarray(self.qparams.zero_point)
        if not self.qparams.per_tensor:
            shape = [1] * self.values.ndim
            shape[self.qparams.axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        # a +-inf constant quantized with an inf scale: the quantize stage removes them (stages/quant_finite.py);
        # a QDQ model from elsewhere, or one whose rewrite was refused, may still carry one
        with np.errstate(invalid="ignore", over="ignore"):
            real = (self.values.astype(np.float64) - zp) * scale
        return np.where(np.isnan(real), 0.0, real)


@dataclass
class QdqGraph:
    model: onnx.ModelProto
    nodes: list
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # float/int initializers and Constant outputs
    qconsts: dict[str, QConst] = field(default_factory=dict)  # DQ(initializer) outputs
    shapes: dict[str, list[int]] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)
    producer: dict[str, object] = field(default_factory=dict)
    consumers: dict[str, list] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    # quantization lookups ----------------------------------------------------------------------
    def _node_qparams(self, node) -> QParams:
        scale = self.consts[node.input[1]]
        zp = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros_like(scale, dtype=np.int8)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        return QParams.of(scale, zp, axis)

    def zero_point_dtype(self, node) -> str:
        if len(node.input) > 2 and node.input[2] in self.consts:
            return str(self.consts[node.input[2]].dtype)
        return "uint8"

    def qparams(self, name: str, _depth: int = 0) -> tuple[QParams, str] | None:
        """(qparams, integer dtype) a float tensor is carried with, or None when it stays float."""
        p = self.producer.get(name)
        if p is not None and p.op_type == "DequantizeLinear":
            return self._node_qparams(p), self.zero_point_dtype(p)
        for c in self.consumers.get(name, []):
            if c.op_type == "QuantizeLinear":
                return self._node_qparams(c), self.zero_point_dtype(c)
        if _depth > 8:
            return None
        for c in self.consumers.get(name, []):  # a view op passes quantization through unchanged
            if c.op_type in VIEW and c.input[0] == name:
                found = self.qparams(c.output[0], _depth + 1)
                if found:
                    return found
        if p is not None and p.op_type in VIEW:
            return self.qparams(p.input[0], _depth + 1)
        return None

    def only_consumer(self, name: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def attr(self, node, key: str, default=None):
        for a in node.attribute:
            if a.name == key:
                return onnx.helper.get_attribute_value(a)
        return default

    def shape(self, name: str) -> list[int]:
        if name in self.shapes:
            return self.shapes[name]
        if name in self.consts:
            return list(self.consts[name].shape)
        if name in self.qconsts:
            return list(self.qconsts[name].values.shape)
        raise KeyError(f"no static shape known for tensor {name!r} (pin dynamic dims in model.inputs)")


def load_qdq(path: Path) -> QdqGraph:
    model = onnx.load(str(path))
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # shape inference failing on an exotic op must not hide the nodes we can emit
        inferred = model
    g = QdqGraph(model=model, nodes=list(model.graph.node))
    for init in model.graph.initializer:
        g.consts[init.name] = numpy_helper.to_array(init)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            g.shapes[vi.name] = [int(d.dim_value) for d in tt.shape.dim]
        g.dtypes[vi.name] = tt.elem_type
    init_names = set(g.consts)
    g.inputs = [i.name for i in model.graph.input if i.name not in init_names]
    g.outputs = [o.name for o in model.graph.output]
    for node in g.nodes:
        for out in node.output:
            g.producer[out] = node
        for inp in node.input:
            if inp:
                g.consumers.setdefault(inp, []).append(node)
        if node.op_type == "Constant":
            value = next(a for a in node.attribute if a.name in ("value", "value_float", "value_int", "value_floats", "value_ints"))
            arr = numpy_helper.to_array(value.t) if value.name == "value" else np.asarray(onnx.helper.get_attribute_value(value))
            g.consts[node.output[0]] = arr
    for node in g.nodes:
        if node.op_type == "DequantizeLinear" and node.input[0] in g.consts:
            g.qconsts[node.output[0]] = QConst(g.consts[node.input[0]], g._node_qparams(node))
    return g
