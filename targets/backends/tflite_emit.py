"""Integer TFLite from edgeship's QDQ ONNX: the one place where ONNX becomes a TFLite flatbuffer.

Every quantized float tensor of the QDQ model becomes one integer TFLite tensor carrying the scale
and zero point the quantize stage chose (uint8 activations are shifted to int8, same real values).
Layout: spatial ops run NHWC in TFLite; each tensor remembers the permutation it is stored in
(`Ref.perm`), and a TRANSPOSE (or a free RESHAPE when only size-1 axes move) is inserted only where
a consumer needs another layout, so the NCHW->NHWC change is handled once, here.

Model inputs and outputs are integers (what TFLite Micro and Vela want); `io` in the result tells a
runner how to quantize a float input, which layout each input is stored in, and how to read outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeship.errors import BuildError
from edgeship.targets.backends.qdq_graph import ACTIVATIONS, QDQ, QdqGraph, load_qdq
from edgeship.targets.backends.tflite_builder import QParams, TFLiteBuilder

EMITTER_VERSION = "5"  # 5: ConvTranspose; part of every TFLite-based backend's version (the lower stage's cache key): bump on change
NHWC = (0, 2, 3, 1)
INDEX_TYPES = {6: "int32", 7: "int64", 9: "bool"}  # ONNX elem types that stay unquantized


class Unsupported(Exception):
    """A node the emitter cannot write as integer TFLite: the message and fix reach legalize."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message, self.fix = message, fix or "keep it out of the model, or choose a target whose backend runs ONNX"


@dataclass
class Ref:
    index: int  # TFLite tensor
    perm: tuple[int, ...]  # TFLite tensor = ONNX tensor transposed by perm


@dataclass
class EmitResult:
    data: bytes
    io: dict  # {"inputs": [...], "outputs": [...]}: name, shape, tflite_shape, perm, dtype, scale, zero_point
    op_origin: list[str]  # per TFLite operator, the ONNX node it came from
    tensor_origin: dict[str, str] = field(default_factory=dict)  # TFLite tensor name -> ONNX node
    absorbed: dict[str, str] = field(default_factory=dict)  # ONNX node -> the node whose operators compute it


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def inverse(perm) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def layout_moves_data(shape_onnx: list[int], have, want) -> bool:
    """False when going from layout `have` to `want` only moves size-1 axes (a RESHAPE suffices)."""
    a = [shape_onnx[p] for p in have]
    b = [shape_onnx[p] for p in want]
    order_a = [p for p, d in zip(have, a) if d != 1]
    order_b = [p for p, d in zip(want, b) if d != 1]
    return order_a != order_b


class Emitter:
    def __init__(self, graph: QdqGraph):
        self.g = graph
        self.b = TFLiteBuilder("edgeship integer TFLite from QDQ ONNX")
        self.refs: dict[str, Ref] = {}
        self.converted: dict[tuple[str, tuple], int] = {}
        self.done: set[str] = set()  # nodes folded into another (fused activations)
        self.absorbed: dict[str, str] = {}  # node -> the node whose TFLite operators compute it
        self.io: dict = {"inputs": [], "outputs": []}
        self.node = None
        self.overrides: dict[str, tuple[QParams, str]] = {}  # tensor -> (qparams, dtype) it is computed in instead


    # -- tensors --------------------------------------------------------------------------------
    def int_dtype(self, name: str) -> tuple[QParams | None, str]:
        if name in self.overrides:
            return self.overrides[name]
        found = self.g.qparams(name)
        if found is None and self.g.dtypes.get(name) in INDEX_TYPES:  # token ids, shapes: integers as they are
            return None, INDEX_TYPES[self.g.dtypes[name]]
        if found is None:
            raise Unsupported(f"tensor {name} is float (not quantized): integer TFLite has no float kernels here",
                              "quantize it (no keep_float on this node) so the whole graph is integer")
        qp, dtype = found
        if dtype == "uint8":  # same real values, int8 storage: what TFLite int8 kernels and Vela take
            qp, dtype = QParams(qp.scale, tuple(z - 128 for z in qp.zero_point), qp.axis), "int8"
        if dtype == "uint16":
            raise Unsupported(f"tensor {name} is uint16: TFLite 16x8 needs symmetric int16 activations",
                              "set quantization.activations.dtype int16 (symmetric)")
        return qp, dtype

    def new(self, name: str, perm=None, qp: QParams | None = None, dtype: str | None = None, shape=None) -> int:
        """A new TFLite tensor for ONNX tensor `name` stored in layout `perm`."""
        onnx_shape = shape if shape is not None else self.g.shape(name)
        perm = tuple(perm) if perm is not None else identity(len(onnx_shape))
        if qp is None and dtype is None:
            qp, dtype = self.int_dtype(name)
        index = self.b.tensor(name, [onnx_shape[p] for p in perm], dtype, qp)
        self.refs[name] = Ref(index, perm)
        return index

    def temp(self, name: str, shape, qp: QParams | None, dtype: str) -> int:
        return self.b.tensor(name, shape, dtype, qp)

    def graph_input(self, name: str) -> Ref:
        shape = self.g.shape(name)
        elem = self.g.dtypes.get(name, 1)
        if elem in (6, 7):  # int32/int64 inputs (token ids) pass through unquantized
            dtype = "int64" if elem == 7 else "int32"
            index = self.b.tensor(name, shape, dtype)
            qp = None
        else:
            qp, dtype = self.int_dtype(name)
        # images arrive NHWC on a device (camera buffers, TFLM convention): a 4-D input is stored NHWC and
        # io["inputs"][i]["perm"] tells a runner how to lay out an NCHW array
        perm = NHWC if len(shape) == 4 and qp is not None else identity(len(shape))
        stored = [shape[p] for p in perm]
        if qp is not None:
            index = self.b.tensor(name, stored, dtype, qp)
        self.b.inputs.append(index)
        self.io["inputs"].append({"name": name, "shape": shape, "tflite_shape": stored, "perm": list(perm),
                                  "dtype": dtype, "scale": qp.scale[0] if qp else None,
                                  "zero_point": qp.zero_point[0] if qp else None})
        self.refs[name] = Ref(index, tuple(perm))
        return self.refs[name]

    def ref(self, name: str) -> Ref:
        if name in self.refs:
            return self.refs[name]
        if name in self.g.inputs:
            return self.graph_input(name)
        if name in self.g.qconsts or name in self.g.consts:
            return Ref(self.qconst(name), identity(len(self.g.shape(name))))
        raise Unsupported(f"input {name} comes from a node that was not emitted")

    def act(self, name: str, want=None) -> int:
        """TFLite tensor holding ONNX tensor `name`, in layout `want` (None: whatever it has)."""
        r = self.ref(name)
        if want is None or tuple(want) == r.perm:
            return r.index
        want = tuple(want)
        key = (name, want)
        if key not in self.converted:
            shape = self.g.shape(name)
            qp, dtype = self.b.qparams_of(r.index), self.b.dtype_of(r.index)
            out = self.temp(f"{name}/layout{''.join(map(str, want))}", [shape[p] for p in want], qp, dtype)
            if layout_moves_data(shape, r.perm, want):
                inv = inverse(r.perm)
                perm = np.asarray([inv[w] for w in want], dtype=np.int32)
                self.b.op("TRANSPOSE", [r.index, self.b.constant(f"{name}/perm", perm)], [out], origin=self.origin())
            else:
                self.reshape_op(r.index, out, [shape[p] for p in want])
            self.converted[key] = out
        return self.converted[key]

    def origin(self) -> str:
        return self.node.name if self.node is not None else ""

    def reshape_op(self, src: int, dst: int, shape) -> None:
        from edgeship.targets.backends.tflite_builder import options

        shape_t = self.b.constant(f"{self.b.name_of(dst)}/shape", np.asarray(shape, dtype=np.int32))
        self.b.op("RESHAPE", [src, shape_t], [dst], options("ReshapeOptions", newShape=[int(d) for d in shape]),
                  origin=self.origin())

    def qconst(self, name: str, perm=None, dtype: str | None = None) -> int:
        """A constant input as a TFLite tensor (quantized constants keep their integers)."""
        if name in self.g.qconsts:
            qc = self.g.qconsts[name]
            values, qp = qc.values, qc.qparams
            if values.dtype == np.uint8:
                values = (values.astype(np.int16) - 128).astype(np.int8)
                qp = QParams(qp.scale, tuple(z - 128 for z in qp.zero_point), qp.axis)
        elif name in self.g.consts:
            values, qp = self.g.consts[name], None
            if values.dtype.kind == "f":
                raise Unsupported(f"constant {name} is float: integer TFLite needs it quantized",
                                  "quantize the model (static) so constants get DequantizeLinear")
        else:
            raise Unsupported(f"{name} is not a constant")
        if dtype is not None:
            values = values.astype(dtype)
        if perm is not None:
            values = np.transpose(values, perm)
            if qp is not None and not qp.per_tensor:
                qp = QParams(qp.scale, qp.zero_point, inverse(perm)[qp.axis])
        return self.b.constant(name, values, qp)

    def broadcast_const(self, name: str, rank: int, perm) -> int:
        """A constant operand of an elementwise op, brought to `rank` and layout `perm`."""
        if name in self.g.qconsts:
            qc = self.g.qconsts[name]
            if not qc.qparams.per_tensor:
                raise Unsupported(f"per-channel constant {name} in an elementwise op", "quantize it per tensor")
        shape = list(self.g.shape(name))
        if len(shape) < rank:
            pad = rank - len(shape)
            arr_shape = [1] * pad + shape
            src = self.g.qconsts[name].values if name in self.g.qconsts else self.g.consts[name]
            expanded = f"{name}/rank{rank}"
            if name in self.g.qconsts:
                self.g.qconsts[expanded] = type(self.g.qconsts[name])(src.reshape(arr_shape), self.g.qconsts[name].qparams)
            else:
                self.g.consts[expanded] = src.reshape(arr_shape)
            name = expanded
        return self.qconst(name, perm if perm and len(perm) == rank else None)

    # -- outputs --------------------------------------------------------------------------------
    def fused_activation(self, out: str) -> tuple[str, int]:
        """If `out` feeds only a Relu/Clip and is not quantized itself, fold it: (final name, TFLite code)."""
        from edgeship.targets.backends.tflite_builder import S

        user = self.g.only_consumer(out)
        if user is None or user.op_type not in ACTIVATIONS or self.g.qparams(out) is not None:
            return out, S.ActivationFunctionType.NONE
        code = activation_code(self.g, user)
        if code is None:
            return out, S.ActivationFunctionType.NONE
        self.done.add(user.name)
        self.absorbed[user.name] = self.node.name if self.node is not None else ""
        return user.output[0], code

    def finish(self) -> None:
        """Model outputs: integer tensors in the layout they were computed in (an NHWC feature map stays
        NHWC; `perm` in the io table tells a runner how to put it back in ONNX order)."""
        for name in self.g.outputs:
            p = self.g.producer.get(name)
            src = p.input[0] if p is not None and p.op_type == "DequantizeLinear" else name
            r = self.ref(src)
            qp, dtype = self.b.qparams_of(r.index), self.b.dtype_of(r.index)
            if qp is None and dtype.startswith("float"):
                raise BuildError(f"model output {name} is float")
            self.b.outputs.append(r.index)
            shape = self.g.shape(src)
            self.io["outputs"].append({"name": name, "shape": shape, "tflite_shape": [shape[i] for i in r.perm],
                                       "perm": list(r.perm), "dtype": dtype, "scale": qp.scale[0] if qp else None,
                                       "zero_point": qp.zero_point[0] if qp else None})


def activation_code(g: QdqGraph, node) -> int | None:
    from edgeship.targets.backends.tflite_builder import S

    A = S.ActivationFunctionType
    if node.op_type == "Relu":
        return A.RELU
    lo, hi = clip_bounds(g, node)
    for (a, b), code in (((0.0, 6.0), A.RELU6), ((-1.0, 1.0), A.RELU_N1_TO_1), ((0.0, np.inf), A.RELU)):
        if np.isclose(lo, a) and (np.isclose(hi, b) or (np.isinf(b) and np.isinf(hi))):
            return code
    return None


def clip_bounds(g: QdqGraph, node) -> tuple[float, float]:
    lo, hi = g.attr(node, "min", -np.inf), g.attr(node, "max", np.inf)
    for i, default in ((1, -np.inf), (2, np.inf)):
        if len(node.input) > i and node.input[i]:
            name = node.input[i]
            value = g.qconsts[name].real() if name in g.qconsts else g.consts.get(name)
            if value is None:
                raise Unsupported(f"Clip bound {name} is not constant")
            if i == 1:
                lo = float(np.asarray(value).reshape(-1)[0])
            else:
                hi = float(np.asarray(value).reshape(-1)[0])
    return float(lo), float(hi)


def walk(graph: QdqGraph, em: Emitter, strict: bool) -> dict[str, Unsupported]:
    """Emit every compute node in graph order; collect (or raise) what cannot be emitted."""
    from edgeship.targets.backends.tflite_ops import HANDLERS, requantize
    from edgeship.targets.backends.tflite_precision import MixedPrecision

    problems: dict[str, Unsupported] = {}
    poisoned: set[str] = set()  # outputs of nodes that failed: their consumers are not reported again
    for node in graph.nodes:
        em.node = node
        if node.name in em.done or node.op_type == "Constant":
            continue
        if any(i in poisoned for i in node.input):
            poisoned.update(node.output)
            continue
        try:
            if node.op_type == "DequantizeLinear":
                if node.input[0] in graph.consts:
                    continue  # a quantized constant: its consumers read it from g.qconsts
                src = em.ref(node.input[0])
                em.refs[node.output[0]] = src
            elif node.op_type == "QuantizeLinear":
                requantize(em, node)
            else:
                handler = HANDLERS.get(node.op_type)
                if handler is None:
                    raise Unsupported(f"{node.op_type}: the integer TFLite emitter has no lowering for it",
                                      f"replace {node.op_type} with supported ops (see docs/backends.md)")
                prepared, finish = MixedPrecision(em).prepare(node)
                handler(em, prepared)
                finish()
        except Unsupported as err:
            em.overrides.clear()
            if strict:
                raise BuildError(f"node {node.name} ({node.op_type}): {err.message}; fix: {err.fix}") from None
            problems[node.name or node.output[0]] = err
            poisoned.update(node.output)
        except KeyError as err:
            em.overrides.clear()
            wrapped = Unsupported(f"missing static shape or constant: {err}", "pin dynamic dims in model.inputs")
            if strict:
                raise BuildError(f"node {node.name} ({node.op_type}): {wrapped.message}") from None
            problems[node.name or node.output[0]] = wrapped
            poisoned.update(node.output)
    return problems


def unsupported_nodes(model_path: Path) -> dict[str, Unsupported]:
    """Node name -> why the emitter cannot write it (empty when the whole graph lowers)."""
    graph = load_qdq(model_path)
    em = Emitter(graph)
    return walk(graph, em, strict=False)


def emit(model_path: Path) -> EmitResult:
    graph = load_qdq(model_path)
    em = Emitter(graph)
    walk(graph, em, strict=True)
    em.node = None
    try:
        em.finish()
    except Unsupported as err:
        raise BuildError(f"model output: {err.message}") from None
    origin = {em.b.name_of(op.outputs[0]): em.b.op_origin[i] for i, op in enumerate(em.b.operators) if op.outputs}
    return EmitResult(em.b.pack(), em.io, list(em.b.op_origin), origin, dict(em.absorbed))
