"""Mixed int8/int16 models: one activation type per TFLite operator.

`auto` on an int16x8-capable integer target (Ethos-U) keeps most layers int8 and gives the sensitive
ones int16 activations. In QDQ ONNX an op between the two computes in float (DequantizeLinear int8 ->
Relu -> QuantizeLinear int16); a TFLite kernel wants one type on its activations (LiteRT refuses
`RELU INT8 != INT16`). So a node whose activations mix int8 and int16 computes in int16 (the wider,
so the int16 layer keeps its precision): int8 inputs are QUANTIZEd to int16 first and an int8 output
is computed into an int16 tensor and QUANTIZEd down after. Every int16 tensor made here is symmetric
with zero point 0, as TFLite's 16x8 kernels (and Vela) require, and spans the int8 tensor's range.
Constant operands of elementwise ops (Add/Sub/Mul/Concat: operands like activations, unlike a Conv's
weights) count too: an int8 constant next to an int16 activation is rewritten, exactly, as int16.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgeship.targets.backends.qdq_graph import ACTIVATIONS, QConst
from edgeship.targets.backends.tflite_builder import QParams
from edgeship.targets.backends.tflite_emit import INDEX_TYPES, Emitter, Ref

NARROW, WIDE = "int8", "int16"
SAME_TYPE_OPERANDS = {"Add", "Sub", "Mul", "Concat"}  # TFLite wants their constant operands in the activation type


def widened(qp: QParams) -> QParams:
    """int16 parameters (zero point 0) holding every real value of an int8 tensor with `qp`."""
    lo, hi = (-128 - qp.zero_point[0]) * qp.scale[0], (127 - qp.zero_point[0]) * qp.scale[0]
    return QParams.of(max(abs(lo), abs(hi)) / 32767 or qp.scale[0], 0)


def _result_names(em: Emitter, node) -> list[str]:
    """The quantized tensors a node produces, looking through an activation it will fuse."""
    names = []
    for out in node.output:
        if em.g.qparams(out) is None:
            user = em.g.only_consumer(out)
            if user is not None and user.op_type in ACTIVATIONS:
                out = user.output[0]
        names.append(out)
    return [n for n in names if em.g.qparams(n) is not None]


def _constant_operands(em: Emitter, node) -> dict[str, str]:
    """Quantized constants an op takes in its activation type (not weights): name -> integer type."""
    if node.op_type not in SAME_TYPE_OPERANDS:
        return {}
    return {n: WIDE if em.g.qconsts[n].values.dtype.itemsize == 2 else NARROW
            for n in node.input if n in em.g.qconsts}


def exactly_widened(qc: QConst) -> QConst:
    """The int16 (zero point 0) form of an int8 constant holding the same real values: q16 = (q8 - zp) * k
    with scale / k, k as large as int16 allows."""
    zero_point = np.asarray(qc.qparams.zero_point)
    if not qc.qparams.per_tensor:
        zero_point = zero_point.reshape([-1 if i == qc.qparams.axis else 1 for i in range(qc.values.ndim)])
    q = qc.values.astype(np.int64) - zero_point
    k = max(1, 32767 // max(1, int(np.abs(q).max(initial=0))))
    return QConst((q * k).astype(np.int16), QParams.of(np.asarray(qc.qparams.scale) / k, 0, qc.qparams.axis))


def _activation_inputs(em: Emitter, node) -> list[str]:
    return [n for n in node.input if n and n not in em.g.consts and n not in em.g.qconsts
            and em.g.dtypes.get(n) not in INDEX_TYPES]


class MixedPrecision:
    """Prepares one node: (node to hand to its handler, finish() to call after the handler)."""

    def __init__(self, em: Emitter):
        self.em = em

    def prepare(self, node):
        em = self.em
        inputs = {n: em.b.dtype_of(em.ref(n).index) for n in _activation_inputs(em, node)}
        outputs = {n: em.int_dtype(n) for n in _result_names(em, node)}
        consts = _constant_operands(em, node)
        dtypes = set(inputs.values()) | {dt for _, dt in outputs.values()} | set(consts.values())
        if dtypes != {NARROW, WIDE}:
            return node, lambda: None
        narrow_outputs = {n: qd for n, qd in outputs.items() if qd[1] == NARROW}
        for name, (qp, _) in narrow_outputs.items():
            em.overrides[name] = (widened(qp), WIDE)
        wide = onnx.NodeProto()
        wide.CopyFrom(node)
        for i, name in enumerate(wide.input):
            if inputs.get(name) == NARROW:
                wide.input[i] = self._wide_input(name)
            elif consts.get(name) == NARROW:
                wide.input[i] = self._wide_constant(name)
        return wide, lambda: self._narrow_outputs(narrow_outputs)

    def _wide_input(self, name: str) -> str:
        """An int16 copy of an int8 activation, under its own ONNX-side name (made once per tensor)."""
        em, alias = self.em, f"{name}/{WIDE}"
        if alias not in em.refs:
            r = em.ref(name)
            y = em.temp(alias, em.b.shape_of(r.index), widened(em.b.qparams_of(r.index)), WIDE)
            em.b.op("QUANTIZE", [r.index], [y], origin=em.origin())
            em.refs[alias] = Ref(y, r.perm)
            em.g.shapes[alias] = em.g.shape(name)
            if name in em.g.dtypes:
                em.g.dtypes[alias] = em.g.dtypes[name]
        return alias

    def _wide_constant(self, name: str) -> str:
        em, alias = self.em, f"{name}/{WIDE}"
        if alias not in em.g.qconsts:
            em.g.qconsts[alias] = exactly_widened(em.g.qconsts[name])
            em.g.shapes[alias] = em.g.shape(name)
        return alias

    def _narrow_outputs(self, narrow: dict) -> None:
        """QUANTIZE each int16-computed output down to the int8 parameters the model gives it."""
        em = self.em
        for name, (qp, dtype) in narrow.items():
            em.overrides.pop(name, None)
            r = em.refs[name]
            y = em.temp(f"{name}/{dtype}", em.b.shape_of(r.index), qp, dtype)
            em.b.op("QUANTIZE", [r.index], [y], origin=em.origin())
            em.refs[name] = Ref(y, r.perm)
