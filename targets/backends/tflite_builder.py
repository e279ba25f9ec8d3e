"""A small writer for TFLite flatbuffers on top of LiteRT's generated object API (`ModelT`, `Pack`).

Why not a converter: edgeship's quantization decisions live in the QDQ ONNX; this writer lets the
emitter put exactly those integers and scales into the file (see DESIGN "Known pitfalls": onnx2tf).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeship.errors import BuildError

try:  # the object API ships with ai-edge-litert (extra `edgeship[tflite]`)
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S
except ImportError:  # pragma: no cover - the backends report the missing extra with the install line
    flatbuffers = None
    S = None

NUMPY_TO_TFLITE = {
    "int8": "INT8", "uint8": "UINT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float32": "FLOAT32", "bool": "BOOL",
}
MAX_FLATBUFFER_BYTES = 2 ** 31 - 1  # flatbuffers' own limit: larger models need external buffers


@dataclass(frozen=True)
class QParams:
    """Affine quantization of one tensor: real = scale * (q - zero_point); axis for per-channel."""
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @classmethod
    def of(cls, scale, zero_point, axis: int = 0) -> "QParams":
        s = np.atleast_1d(np.asarray(scale, dtype=np.float64)).astype(float)
        z = np.atleast_1d(np.asarray(zero_point)).astype(np.int64)
        if z.size == 1 and s.size > 1:
            z = np.repeat(z, s.size)
        if s.size == 1:
            axis = 0  # per tensor: TFLite checks the axis against the rank even then
        return cls(tuple(float(v) for v in s), tuple(int(v) for v in z), int(axis))

    @property
    def per_tensor(self) -> bool:
        return len(self.scale) == 1

    def same(self, other: "QParams | None") -> bool:
        return other is not None and self.zero_point == other.zero_point and np.allclose(self.scale, other.scale, rtol=1e-6, atol=0)


class TFLiteBuilder:
    """Collects tensors, buffers and operators of one subgraph, then packs a model."""

    def __init__(self, description: str = "edgeship"):
        if S is None:
            raise BuildError("the TFLite writer needs ai-edge-litert: pip install 'edgeship[tflite]'")
        self.description = description
        self.buffers = [S.BufferT()]  # buffer 0 is the empty sentinel by convention
        self.tensors: list = []
        self.operators: list = []
        self.opcodes: list = []
        self._opcode_index: dict[tuple[int, int], int] = {}
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.op_origin: list[str] = []  # ONNX node name each operator came from (for per-layer reports)

    # tensors ------------------------------------------------------------------------------------
    def tensor(self, name: str, shape, dtype: str, qparams: QParams | None = None, data: np.ndarray | None = None) -> int:
        t = S.TensorT()
        t.name = name
        t.shape = [int(d) for d in shape]
        t.type = getattr(S.TensorType, NUMPY_TO_TFLITE[dtype])
        t.buffer = 0
        if data is not None:
            arr = np.ascontiguousarray(np.asarray(data, dtype=dtype))
            buf = S.BufferT()
            buf.data = np.frombuffer(arr.tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if qparams is not None:
            q = S.QuantizationParametersT()
            q.scale = list(qparams.scale)
            q.zeroPoint = list(qparams.zero_point)
            q.quantizedDimension = int(qparams.axis)
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def constant(self, name: str, data: np.ndarray, qparams: QParams | None = None) -> int:
        arr = np.asarray(data)
        return self.tensor(name, arr.shape, str(arr.dtype), qparams, arr)

    def shape_of(self, index: int) -> list[int]:
        return list(self.tensors[index].shape)

    def dtype_of(self, index: int) -> str:
        code = self.tensors[index].type
        return next(k for k, v in NUMPY_TO_TFLITE.items() if getattr(S.TensorType, v) == code)

    def qparams_of(self, index: int) -> QParams | None:
        q = self.tensors[index].quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        return QParams.of(q.scale, q.zeroPoint, q.quantizedDimension)

    def name_of(self, index: int) -> str:
        return self.tensors[index].name

    # operators ----------------------------------------------------------------------------------
    def _opcode(self, op: str) -> int:
        code = getattr(S.BuiltinOperator, op)
        key = (code, 1)
        if key not in self._opcode_index:
            oc = S.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            self.opcodes.append(oc)
            self._opcode_index[key] = len(self.opcodes) - 1
        return self._opcode_index[key]

    def op(self, op: str, inputs: list[int], outputs: list[int], options=None, origin: str = "") -> None:
        o = S.OperatorT()
        o.opcodeIndex = self._opcode(op)
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        if options is not None:
            o.builtinOptionsType = getattr(S.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        self.operators.append(o)
        self.op_origin.append(origin)

    def pack(self) -> bytes:
        sub = S.SubGraphT()
        sub.tensors, sub.operators = self.tensors, self.operators
        sub.inputs, sub.outputs = self.inputs, self.outputs
        sub.name = "main"
        model = S.ModelT()
        model.version = 3
        model.description = self.description
        model.operatorCodes = self.opcodes
        model.subgraphs = [sub]
        model.buffers = self.buffers
        size = sum(len(b.data) for b in self.buffers if b.data is not None)
        if size > MAX_FLATBUFFER_BYTES:
            raise BuildError(f"model constants are {size / 2**30:.1f} GiB: over the 2 GiB flatbuffer limit")
        fb = flatbuffers.Builder(1024 + size)
        fb.Finish(model.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())


def options(name: str, **fields):
    """An options object, e.g. options("Conv2DOptions", padding=VALID, strideW=1): unknown fields raise."""
    obj = getattr(S, name + "T")()
    for key, value in fields.items():
        if not hasattr(obj, key):
            raise AttributeError(f"{name} has no field {key!r}")
        setattr(obj, key, value)
    return obj
