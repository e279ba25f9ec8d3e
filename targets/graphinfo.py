"""What the cost model and the legalizer need to know about an ONNX graph, computed once.

Shapes come from ONNX shape inference (with input dims pinned), constants are propagated
(initializers, Constant nodes and any node whose inputs are all constant are *folded*: they cost
nothing at run time and their outputs are weights), Q/DQ pairs around an op mark that op as
running in the quantized format, and activations that an accelerator fuses into the producing
Conv/Gemm (Relu, Clip, BatchNormalization, ...) are marked as fused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, shape_inference

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
INDEX_FORMATS = {"int64", "int32", "bool"}  # shape arithmetic and indices, not a numeric compute format
# ops whose result is only a view of the input: no compute, no memory traffic
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
# activations/affines a Conv/Gemm/MatMul kernel applies to its output in registers (CPU and NPU alike)
FUSABLE_EPILOGUES = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "BatchNormalization", "HardSwish"}
FUSING_PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}

FORMAT_OF_ELEM = {
    onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16",
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "int8", onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.UINT16: "int16", onnx.TensorProto.INT32: "int32", onnx.TensorProto.DOUBLE: "fp64",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.BOOL: "bool",
}


def elem_size(elem_type: int) -> int:
    try:
        return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except Exception:  # undefined / string types
        return 4


@dataclass
class TensorInfo:
    name: str
    shape: tuple | None  # None when unknown; dims are ints (unknown dims make the shape None)
    elem_type: int

    @property
    def numel(self) -> int | None:
        if self.shape is None:
            return None
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int | None:
        n = self.numel
        return None if n is None else n * elem_size(self.elem_type)


@dataclass
class NodeInfo:
    index: int
    node: onnx.NodeProto
    name: str
    op_type: str
    folded: bool = False  # all inputs constant: computed once at load, its outputs are weights
    absorbed: bool = False  # a Q/DQ that belongs to a quantized op (no work of its own on an accelerator)
    fused_into: str | None = None  # name of the producer this epilogue runs inside
    quant_format: str | None = None  # "int8"/"int16" when the op sits between DQ and Q
    attrs: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """A node that is placed and costed on its own."""
        return not (self.folded or self.absorbed or self.fused_into)


class GraphInfo:
    """Tensors, constants and node roles of one model (inferred once; read by placement and cost model)."""

    def __init__(self, model: onnx.ModelProto, input_shapes: dict | None = None, fusable=None, owned: bool = False):
        """`fusable(epilogue_op, producer_op) -> bool` says which epilogues the target fuses into
        which producers (default: any of FUSABLE_EPILOGUES into any of FUSING_PRODUCERS);
        `owned=True` lets pinning edit `model` in place instead of a copy."""
        self.fusable = fusable or (lambda op_type, producer: True)
        model = _pin_inputs(model, input_shapes or {}, copy=not owned)
        try:
            model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:
            pass  # partial shapes are still useful; unknown ones are reported per node
        self.model = model
        graph = model.graph
        self.tensors: dict[str, TensorInfo] = {}
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            self.tensors[vi.name] = _tensor_info(vi)
        self.initializers = {init.name: init for init in graph.initializer}
        for init in graph.initializer:
            self.tensors[init.name] = TensorInfo(init.name, tuple(int(d) for d in init.dims), init.data_type)
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        unknown = [o for n in graph.node for o in n.output if o and (o not in self.tensors or self.tensors[o].shape is None)]
        if unknown:
            self.tensors.update(_shapes_by_running(model, unknown))
        self.graph_outputs = [o.name for o in graph.output]
        self.nodes = [
            NodeInfo(i, n, n.name or f"{n.op_type}_{i}", n.op_type, attrs={a.name: helper.get_attribute_value(a) for a in n.attribute})
            for i, n in enumerate(graph.node)
        ]
        self.producer: dict[str, NodeInfo] = {}
        self.consumers: dict[str, list[NodeInfo]] = {}
        for info in self.nodes:
            for out in info.node.output:
                if out:
                    self.producer[out] = info
            for inp in info.node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(info)
        self.constants: set[str] = set(self.initializers)
        self._fold_constants()
        self._mark_qdq()
        self._mark_fusions()
        self.by_name = {n.name: n for n in self.nodes}
        self.fused_children: dict[str, list[NodeInfo]] = {}
        for n in self.nodes:
            if n.fused_into:
                self.fused_children.setdefault(n.fused_into, []).append(n)

    # -- roles -----------------------------------------------------------------------------------
    def _fold_constants(self) -> None:
        for info in self.nodes:  # graph order is topological
            ins = [i for i in info.node.input if i]
            if info.op_type == "Constant" or (ins and all(i in self.constants for i in ins)):
                info.folded = True
                self.constants.update(o for o in info.node.output if o)

    def _mark_qdq(self) -> None:
        """DQ -> op -> Q: the op runs quantized; the Q/DQ around it are absorbed into it."""
        for info in self.nodes:
            if info.folded or info.op_type in QDQ_OPS:
                continue
            data_ins = [i for i in info.node.input if i and i not in self.constants]
            from_dq = [i for i in data_ins if self._op_of(i) == "DequantizeLinear"]
            outs = [o for o in info.node.output if o]
            consumers = [c for o in outs for c in self.consumers.get(o, [])]
            if not data_ins or len(from_dq) != len(data_ins):
                continue
            if not consumers or any(c.op_type != "QuantizeLinear" for c in consumers):
                continue
            if any(o in self.graph_outputs for o in outs):
                continue
            q_elem = self.tensors.get(consumers[0].node.output[0])
            fmt = FORMAT_OF_ELEM.get(q_elem.elem_type, "int8") if q_elem else "int8"
            info.quant_format = fmt
        quantized = {n.name for n in self.nodes if n.quant_format}
        for info in self.nodes:
            if info.folded or info.op_type not in QDQ_OPS:
                continue
            if info.op_type == "DequantizeLinear":
                consumers = self.consumers.get(info.node.output[0], [])
                if consumers and all(c.name in quantized for c in consumers):
                    info.absorbed = True
            else:
                src = self.producer.get(info.node.input[0])
                if src is not None and src.name in quantized:
                    info.absorbed = True

    def _mark_fusions(self) -> None:
        names = {n.name: n for n in self.nodes}
        for info in self.nodes:
            if not info.active or info.op_type not in FUSABLE_EPILOGUES:
                continue
            data_ins = [i for i in info.node.input if i and i not in self.constants]
            if len(data_ins) != 1:
                continue
            producer = self.real_producer(data_ins[0])
            if producer is not None and producer.fused_into:  # Conv -> BatchNormalization -> Relu
                producer = names[producer.fused_into]
            if producer is None or producer.op_type not in FUSING_PRODUCERS or not producer.active:
                continue
            folds = info.op_type == "BatchNormalization" and producer.op_type in ("Conv", "ConvTranspose")
            if not folds and not self.fusable(info.op_type, producer.op_type):
                continue  # (folding BatchNormalization into conv weights needs no hardware support)
            if len(self.consumers.get(data_ins[0], [])) != 1 or data_ins[0] in self.graph_outputs:
                continue
            info.fused_into = producer.name

    # -- queries ---------------------------------------------------------------------------------
    def _op_of(self, tensor: str) -> str | None:
        p = self.producer.get(tensor)
        return p.op_type if p else None

    def real_producer(self, tensor: str) -> NodeInfo | None:
        """The node that really computes `tensor`, looking through absorbed Q/DQ."""
        p = self.producer.get(tensor)
        while p is not None and p.absorbed:
            p = self.producer.get(p.node.input[0])
        return p

    def active_nodes(self) -> list[NodeInfo]:
        return [n for n in self.nodes if n.active]

    def info(self, tensor: str) -> TensorInfo | None:
        return self.tensors.get(tensor)

    def data_inputs(self, node: NodeInfo) -> list[str]:
        return [i for i in node.node.input if i and i not in self.constants]

    def weight_inputs(self, node: NodeInfo) -> list[str]:
        return [i for i in node.node.input if i and i in self.constants]

    def compute_format(self, node: NodeInfo) -> str:
        """The numeric format a node computes in: its Q/DQ format, else its first data input's type."""
        if node.quant_format:
            return node.quant_format
        # the output's type first (a Gather of a float table by int64 ids computes in float), then
        # the inputs (a comparison of floats outputs bool)
        found = []
        for name in [o for o in node.node.output if o] + self.data_inputs(node) + list(node.node.input):
            t = self.tensors.get(name)
            if t is not None and t.elem_type:
                found.append(FORMAT_OF_ELEM.get(t.elem_type, "fp32"))
        numeric = [f for f in found if f not in INDEX_FORMATS]
        return numeric[0] if numeric else (found[0] if found else "fp32")

    def effective_bytes(self, tensor: str, node: NodeInfo | None = None) -> int | None:
        """Bytes of a tensor as the hardware holds it: a float tensor between an absorbed DQ/Q and a
        quantized op is really stored in the quantized type."""
        t = self.tensors.get(tensor)
        if t is None or t.numel is None:
            return None
        if node is not None and node.quant_format and t.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            return t.numel * (2 if node.quant_format == "int16" else 1)
        return t.nbytes

    def weight_bytes_of(self, tensor: str) -> int:
        """Stored size of a constant input, tracing a folded DequantizeLinear back to its int8 source."""
        p = self.producer.get(tensor)
        if p is not None and p.folded and p.op_type == "DequantizeLinear":
            return sum(self.weight_bytes_of(i) for i in p.node.input if i)
        t = self.tensors.get(tensor)
        if t is not None and t.nbytes is not None:
            return t.nbytes
        init = self.initializers.get(tensor)
        if init is not None:
            return int(onnx.numpy_helper.to_array(init).nbytes)
        return 0


def ort_cpu_fuses(op_type: str, producer: str) -> bool:
    """onnxruntime's CPU fusions: activations into Conv (FusedConv) and Gemm (FusedGemm); a MatMul
    followed by Relu stays two kernels."""
    return producer in ("Conv", "Gemm")


def load_graph(path_or_model, input_shapes: dict | None = None, profile=None) -> GraphInfo:
    """GraphInfo of a model file (or ModelProto). With a target `profile`, only epilogues its
    accelerator runs are fused into their producer."""
    fusable = None
    if profile is not None:
        from edgeship.targets.profileview import ProfileView

        view = profile if isinstance(profile, ProfileView) else ProfileView(profile)
        if view.runs_onnxruntime_cpu():
            fusable = ort_cpu_fuses
        else:
            fusable = lambda op_type, producer: view.op_limits(op_type) is not None  # noqa: E731
    if isinstance(path_or_model, onnx.ModelProto):
        return GraphInfo(path_or_model, input_shapes, fusable)
    return GraphInfo(onnx.load(str(Path(path_or_model))), input_shapes, fusable, owned=True)


def _tensor_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    tt = vi.type.tensor_type
    shape = None
    if tt.HasField("shape"):
        dims = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(int(d.dim_value))
            else:
                dims = None
                break
        shape = tuple(dims) if dims is not None else None
    return TensorInfo(vi.name, shape, tt.elem_type)


def _pin_inputs(model: onnx.ModelProto, shapes: dict, copy: bool = True) -> onnx.ModelProto:
    """Pin dynamic input dims (from the manifest); unknown leading dims default to 1 (batch)."""
    if copy:
        clone = onnx.ModelProto()
        clone.CopyFrom(model)
        model = clone
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        want = shapes.get(vi.name)
        for k, d in enumerate(dims):
            if want is not None and k < len(want):
                d.Clear()
                d.dim_value = int(want[k])
            elif not d.HasField("dim_value") and k == 0:
                d.Clear()
                d.dim_value = 1
    return model


def _shapes_by_running(model: onnx.ModelProto, names: list[str]) -> dict[str, TensorInfo]:
    """Shapes ONNX inference could not work out (Reshape targets computed from Shape ops, ...),
    found by running the pinned model once on zeros with onnxruntime. Best effort: {} on failure."""
    try:
        import onnxruntime as ort

        probe = onnx.ModelProto.FromString(model.SerializeToString())
        present = {o.name for o in probe.graph.output}
        for name in names:
            if name not in present:
                probe.graph.output.append(helper.make_empty_tensor_value_info(name))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 4
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feeds = {}
        for inp in sess.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in inp.shape]
            np_type = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
                       "tensor(float16)": np.float16, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
                       "tensor(bool)": np.bool_}.get(inp.type, np.float32)
            feeds[inp.name] = np.zeros(shape, np_type)
        wanted = [n for n in names if n in {o.name for o in sess.get_outputs()}]
        values = sess.run(wanted, feeds)
    except Exception:
        return {}
    out = {}
    for name, value in zip(wanted, values):
        arr = np.asarray(value)
        try:
            elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
        except Exception:
            elem = onnx.TensorProto.FLOAT
        out[name] = TensorInfo(name, tuple(int(d) for d in arr.shape), elem)
    return out
