"""Power-of-two quantization scales, for chips whose integer pipeline shifts instead of multiplying
(the AMD Vitis AI DPU: every scale is 2^-k, "fix point" in its own terms).

onnxruntime's quantizer picks arbitrary float scales, so we post-process its QDQ model:
- activation scales (QuantizeLinear/DequantizeLinear on tensors) round UP to the next power of two,
  so nothing that fitted the calibrated range is clipped;
- constant weights are re-quantized with a power-of-two scale, choosing floor or ceil of log2 per
  tensor/channel by the smaller reconstruction error;
- int32 biases get scale = input scale x weight scale (itself a power of two), as the DPU computes it.
The model stays a valid QDQ model whose float semantics are what the chip would compute; the caller
re-measures accuracy afterwards ("re-check").
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

ACCUMULATING_OPS = {"Conv", "Gemm", "MatMul", "ConvTranspose"}


def is_power_of_two(scale) -> bool:
    s = np.asarray(scale, dtype=np.float64).ravel()
    if s.size == 0 or np.any(s <= 0) or not np.all(np.isfinite(s)):
        return False
    e = np.log2(s)
    return bool(np.all(np.abs(e - np.round(e)) < 1e-6))


def _ceil_pow2(s: np.ndarray) -> np.ndarray:
    s = np.maximum(np.asarray(s, dtype=np.float64), np.finfo(np.float32).tiny)
    return np.power(2.0, np.ceil(np.log2(s) - 1e-9))


def _qrange(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _broadcast(values: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    if values.size == 1:
        return values.reshape(())
    view = [1] * len(shape)
    view[axis % len(shape)] = values.size
    return values.reshape(view)


def _requantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int, choose: str) -> tuple[np.ndarray, np.ndarray]:
    """Real values (q - zp) * scale re-expressed with power-of-two scales; returns (q', scale')."""
    scale = np.asarray(scale, dtype=np.float64)
    zp_b = _broadcast(np.asarray(zp, dtype=np.float64), q.shape, axis)
    real = (q.astype(np.float64) - zp_b) * _broadcast(scale, q.shape, axis)
    lo, hi = _qrange(q.dtype)
    ceil = _ceil_pow2(scale)
    candidates = [ceil] if choose == "ceil" else [ceil, ceil / 2.0]
    best_q, best_s, best_err = None, None, None
    for cand in candidates:
        cand_b = _broadcast(cand, q.shape, axis)
        q_new = np.clip(np.round(real / cand_b) + zp_b, lo, hi)
        err = (q_new - zp_b) * cand_b - real
        if q.ndim and scale.size > 1:
            err = np.moveaxis(err, axis % q.ndim, 0).reshape(scale.size, -1)
            per = np.mean(err ** 2, axis=1)
        else:
            per = np.array(np.mean(err ** 2))
        if best_err is None:
            best_q, best_s, best_err = q_new, cand.copy(), per
        else:  # per channel: keep whichever scale reconstructs that channel better
            better = per < best_err
            if scale.size > 1:
                mask = _broadcast(better, q.shape, axis)
                best_q = np.where(mask, q_new, best_q)
                best_s = np.where(better, cand, best_s)
            elif better:
                best_q, best_s = q_new, cand.copy()
            best_err = np.minimum(per, best_err)
    return best_q.astype(q.dtype), best_s.astype(np.float32).reshape(scale.shape)


def to_power_of_two(model: onnx.ModelProto) -> dict:
    """Rewrite every Q/DQ scale of `model` (in place) to a power of two; returns counts for the report."""
    inits = {t.name: t for t in model.graph.initializer}
    arrays = {name: numpy_helper.to_array(t) for name, t in inits.items()}
    producers = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    changed: dict[str, np.ndarray] = {}
    counts = {"activation_scales": 0, "weights": 0, "biases": 0}

    def axis_of(node) -> int:
        return next((a.i for a in node.attribute if a.name == "axis"), 1)

    def scale_now(name: str) -> np.ndarray:
        return changed.get(name, arrays[name])

    # activations: every scale a QuantizeLinear uses, and DQ scales on non-constant inputs
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" or (n.op_type == "DequantizeLinear" and n.input[0] not in inits):
            s_name = n.input[1]
            if s_name in inits and s_name not in changed:
                changed[s_name] = _ceil_pow2(arrays[s_name]).astype(arrays[s_name].dtype)
                counts["activation_scales"] += 1
    # constant weights (anything but int32 biases)
    biases = []
    for n in model.graph.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in inits:
            continue
        q = arrays[n.input[0]]
        if q.dtype == np.int32:
            biases.append(n)
            continue
        if n.input[1] in changed:
            continue
        zp = arrays[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros((), q.dtype)
        q_new, s_new = _requantize(q, arrays[n.input[1]], zp, axis_of(n), choose="best")
        changed[n.input[0]], changed[n.input[1]] = q_new, s_new
        counts["weights"] += 1
    # biases: scale = input scale x weight scale, both powers of two now
    for n in biases:
        q = arrays[n.input[0]]
        old_scale = arrays[n.input[1]]
        target = None
        for consumer in consumers.get(n.output[0], []):
            if consumer.op_type in ACCUMULATING_OPS and len(consumer.input) > 2 and consumer.input[2] == n.output[0]:
                dq_in, dq_w = producers.get(consumer.input[0]), producers.get(consumer.input[1])
                if dq_in is not None and dq_w is not None and dq_in.op_type == dq_w.op_type == "DequantizeLinear":
                    target = np.asarray(scale_now(dq_in.input[1]), np.float64) * np.asarray(scale_now(dq_w.input[1]), np.float64)
                    target = target.reshape(old_scale.shape) if target.size == old_scale.size else None
        if target is None:
            target = _ceil_pow2(old_scale)
        real = q.astype(np.float64) * _broadcast(np.asarray(old_scale, np.float64), q.shape, 0)
        q_new = np.clip(np.round(real / _broadcast(target, q.shape, 0)), *_qrange(np.dtype(np.int32)))
        changed[n.input[0]], changed[n.input[1]] = q_new.astype(np.int32), target.astype(old_scale.dtype)
        counts["biases"] += 1

    for name, value in changed.items():
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=arrays[name].dtype), name))
    return counts


def non_power_of_two_scales(model: onnx.ModelProto) -> list[str]:
    """Names of Q/DQ scale initializers that are not powers of two (empty when the model complies)."""
    inits = {t.name: t for t in model.graph.initializer}
    bad = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1 and n.input[1] in inits:
            if not is_power_of_two(numpy_helper.to_array(inits[n.input[1]])) and n.input[1] not in bad:
                bad.append(n.input[1])
    return bad
