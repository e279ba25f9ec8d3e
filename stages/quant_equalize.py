"""Cross-layer equalization and empirical bias correction: accuracy back without leaving int8.

Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019): in Conv -> (ReLU) -> Conv,
output channel i of the first conv can be divided by s_i and input channel i of the second multiplied
by s_i without changing the float function (ReLU(x / s) = ReLU(x) / s for s > 0). With
s_i = sqrt(r1_i / r2_i) both channels end with the same range sqrt(r1_i * r2_i), so per-tensor int8
weights no longer lose the small channels to one large one. Depthwise -> pointwise chains are the
classic case. Only positively homogeneous activations qualify (ReLU, LeakyRelu, PRelu, none):
ReLU6/Clip and hard-swish do not commute with a scale, so those pairs are left alone.

Bias correction: int8 weights shift each output channel's mean (E[(W_q - W) x] != 0). With the
per-channel means of each conv's input, measured in the quantized model on the calibration data,
the expected shift is computed per layer (not measured at the output, where it would include the
shift of every layer above and be corrected twice) and subtracted from the quantized int32 bias.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

HOMOGENEOUS = {"Relu", "LeakyRelu", "PRelu"}
MAX_PASSES = 4
EPS = 1e-12


def _attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _pairs(model: onnx.ModelProto, inits: Mapping[str, onnx.TensorProto]) -> list[tuple]:
    """(conv1, activation or None, conv2) chains where conv1's output feeds only conv2 (through the activation)."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    pairs = []
    for c1 in model.graph.node:
        if c1.op_type != "Conv" or len(c1.input) < 2 or c1.input[1] not in inits or c1.output[0] in outputs:
            continue
        nxt = consumers.get(c1.output[0], [])
        if len(nxt) != 1:
            continue
        act = None
        if nxt[0].op_type in HOMOGENEOUS:
            act = nxt[0]
            if act.op_type == "PRelu" and (len(act.input) < 2 or act.input[1] not in inits):
                continue
            nxt = consumers.get(act.output[0], [])
            if len(nxt) != 1 or act.output[0] in outputs:
                continue
        c2 = nxt[0]
        if c2.op_type != "Conv" or len(c2.input) < 2 or c2.input[1] not in inits:
            continue
        pairs.append((c1, act, c2))
    return pairs


def _scales(w1: np.ndarray, w2: np.ndarray, group2: int) -> np.ndarray | None:
    """Per channel of the shared tensor: s_i with W1[i] / s_i and W2[.., i] * s_i balanced, or None."""
    channels = w1.shape[0]
    r1 = np.abs(w1.reshape(channels, -1)).max(axis=1)
    if group2 == 1:
        if w2.shape[1] != channels:
            return None
        r2 = np.abs(np.moveaxis(w2, 1, 0).reshape(channels, -1)).max(axis=1)
    elif group2 == channels and w2.shape[0] == channels and w2.shape[1] == 1:  # depthwise second conv
        r2 = np.abs(w2.reshape(channels, -1)).max(axis=1)
    else:
        return None
    s = np.sqrt(np.maximum(r1, EPS) / np.maximum(r2, EPS))
    s[(r1 < EPS) | (r2 < EPS)] = 1.0  # dead channels: leave them
    return s


def equalize(model: onnx.ModelProto) -> dict:
    """Rescale every qualifying Conv -> (act) -> Conv pair in place; returns {pairs, passes}."""
    inits = {t.name: t for t in model.graph.initializer}
    shared = {}
    for n in model.graph.node:
        for i in n.input:
            shared[i] = shared.get(i, 0) + 1
    pairs = [p for p in _pairs(model, inits)
             if all(shared.get(name, 0) == 1 for name in [p[0].input[1], p[2].input[1]] + list(p[0].input[2:3]))]
    arrays = {name: numpy_helper.to_array(inits[name]).astype(np.float64) for p in pairs
              for name in [p[0].input[1], p[2].input[1], *p[0].input[2:3]] + ([p[1].input[1]] if p[1] is not None and p[1].op_type == "PRelu" else [])}
    eligible = [p for p in pairs if _scales(arrays[p[0].input[1]], arrays[p[2].input[1]], int(_attr(p[2], "group", 1))) is not None]
    for _ in range(MAX_PASSES if eligible else 0):
        for c1, act, c2 in eligible:
            w1, w2 = arrays[c1.input[1]], arrays[c2.input[1]]
            group2 = int(_attr(c2, "group", 1))
            s = _scales(w1, w2, group2)
            arrays[c1.input[1]] = w1 / s.reshape(-1, *([1] * (w1.ndim - 1)))
            if len(c1.input) > 2 and c1.input[2]:
                arrays[c1.input[2]] = arrays[c1.input[2]] / s
            if group2 == 1:
                arrays[c2.input[1]] = w2 * s.reshape(1, -1, *([1] * (w2.ndim - 2)))
            else:
                arrays[c2.input[1]] = w2 * s.reshape(-1, *([1] * (w2.ndim - 1)))
    for name, value in arrays.items():
        dtype = numpy_helper.to_array(inits[name]).dtype
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(dtype), name))
    return {"pairs": len(eligible), "passes": MAX_PASSES if eligible else 0}


def weight_error_shift(w_float: np.ndarray, w_quant: np.ndarray, input_means: np.ndarray, group: int) -> np.ndarray:
    """E[conv(x; W_q) - conv(x; W)] per output channel, from the input's per-channel means (Nagel et al.):
    sum over input channels and kernel taps of (W_q - W)[o, i, k] * E[x_i] (borders ignored)."""
    err = (np.asarray(w_quant, np.float64) - np.asarray(w_float, np.float64))
    out_c, in_per_group = err.shape[0], err.shape[1]
    per_in = err.reshape(out_c, in_per_group, -1).sum(axis=2)  # (O, I/g)
    means = np.asarray(input_means, np.float64).reshape(group, in_per_group)
    out_per_group = out_c // group
    return np.einsum("gfi,gi->gf", per_in.reshape(group, out_per_group, in_per_group), means).reshape(out_c)


def _dequantized_weights(dq: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> np.ndarray:
    """The real weights behind a DequantizeLinear of an initializer (per tensor, or per channel on its axis)."""
    w_q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    w_scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    w_zp = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
    if np.ndim(w_scale):
        view = [1] * w_q.ndim
        view[int(_attr(dq, "axis", 1)) % w_q.ndim] = -1
        w_scale, w_zp = w_scale.reshape(view), np.reshape(w_zp, view) if np.ndim(w_zp) else w_zp
    return (w_q - w_zp) * w_scale


def conv_weight_error_shift(node: onnx.NodeProto, w_float: np.ndarray, w_quant: np.ndarray, input_means: np.ndarray) -> np.ndarray:
    """`weight_error_shift` of a Conv or a ConvTranspose. A ConvTranspose's weights are (C_in, C_out, k...);
    each input pixel spreads over stride_h x stride_w output pixels, so its mean shift is divided by the strides."""
    if node.op_type != "ConvTranspose":
        return weight_error_shift(w_float, w_quant, input_means, int(_attr(node, "group", 1)))
    spread = float(np.prod(_attr(node, "strides", [1] * (np.ndim(w_float) - 2))))
    return weight_error_shift(np.swapaxes(w_float, 0, 1), np.swapaxes(w_quant, 0, 1), input_means, 1) / spread


def _zero_bias(qdq: onnx.ModelProto, node: onnx.NodeProto, dq_w: onnx.NodeProto, producers, inits, channels: int):
    """A zero int32 bias (scale input scale x weight scale, behind its DequantizeLinear) for a conv without
    one, so that its weights' error can be corrected too; None when the input's scale is not a constant."""
    dq_x = producers.get(node.input[0])
    if dq_x is None or dq_x.op_type != "DequantizeLinear" or dq_x.input[1] not in inits:
        return None
    in_scale = numpy_helper.to_array(inits[dq_x.input[1]]).astype(np.float64)
    w_scale = numpy_helper.to_array(inits[dq_w.input[1]]).astype(np.float64)
    if in_scale.size != 1 or w_scale.size not in (1, channels):
        return None
    base = f"{node.name or node.output[0]}.bias_corrected"
    arrays = {f"{base}_quantized": np.zeros(channels, np.int32), f"{base}_scale": np.broadcast_to(
        in_scale.reshape(()) * w_scale.reshape(-1), (channels,)).astype(np.float32), f"{base}_zero_point": np.zeros(channels, np.int32)}
    for name, value in arrays.items():
        qdq.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        inits[name] = qdq.graph.initializer[-1]  # append copies: keep the graph's own message
    dq_b = onnx.helper.make_node("DequantizeLinear", list(arrays), [base], name=f"{base}_DequantizeLinear", axis=0)
    node.input.extend([""] * (2 - len(node.input)) + [base])
    return dq_b


def correct_biases(qdq: onnx.ModelProto, float_model: onnx.ModelProto, input_means: Mapping[str, np.ndarray]) -> int:
    """Subtract each Conv's (and group-free ConvTranspose's) expected weight error (`weight_error_shift`) from
    its int32 bias, in place; a conv without a bias gets one. Int16 activations (16x8) need it as much as int8
    ones: the weights are int8 either way.

    `input_means[tensor]` is the per-channel mean, in the quantized model, of each Conv's data input.
    Returns how many biases changed."""
    producers = {o: n for n in qdq.graph.node for o in n.output}
    inits = {t.name: t for t in qdq.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node if n.name}
    float_inits = {t.name: t for t in float_model.graph.initializer}
    changed, added = 0, {}
    for node in qdq.graph.node:
        fnode = float_nodes.get(node.name)
        if node.op_type not in ("Conv", "ConvTranspose") or fnode is None or node.input[0] not in input_means:
            continue
        if node.op_type == "ConvTranspose" and int(_attr(node, "group", 1)) != 1:
            continue
        dq_w = producers.get(node.input[1])
        if dq_w is None or dq_w.op_type != "DequantizeLinear" or dq_w.input[0] not in inits or fnode.input[1] not in float_inits:
            continue
        w_float = numpy_helper.to_array(float_inits[fnode.input[1]])
        w_deq = _dequantized_weights(dq_w, inits)
        if w_deq.shape != w_float.shape:
            continue
        shift = conv_weight_error_shift(node, w_float, w_deq, input_means[node.input[0]])
        if len(node.input) < 3 or not node.input[2]:
            dq_b = _zero_bias(qdq, node, dq_w, producers, inits, shift.shape[0])
            if dq_b is None:
                continue
            added[node.output[0]] = dq_b
        else:
            dq_b = producers.get(node.input[2])
            if dq_b is None or dq_b.op_type != "DequantizeLinear" or dq_b.input[0] not in inits:
                continue
        q_bias = numpy_helper.to_array(inits[dq_b.input[0]])
        b_scale = np.broadcast_to(numpy_helper.to_array(inits[dq_b.input[1]]).astype(np.float64), q_bias.shape)
        if q_bias.dtype != np.int32 or shift.shape != q_bias.shape:
            continue
        info = np.iinfo(np.int32)
        new = np.clip(q_bias.astype(np.int64) - np.round(shift / b_scale).astype(np.int64), info.min, info.max)
        inits[dq_b.input[0]].CopyFrom(numpy_helper.from_array(new.astype(np.int32), dq_b.input[0]))
        changed += 1
    if added:  # each new bias's DequantizeLinear just before its conv (topological order)
        nodes = [m for n in qdq.graph.node for m in ([added[n.output[0]]] if n.output[0] in added else []) + [n]]
        del qdq.graph.node[:]
        qdq.graph.node.extend(nodes)
    return changed


def channel_means(values: np.ndarray) -> np.ndarray:
    """Per-channel mean of stacked node outputs `(N, batch, C, ...)` or `(N, batch, C)`."""
    arr = np.asarray(values, np.float64)
    arr = arr.reshape(arr.shape[0] * arr.shape[1], *arr.shape[2:])  # samples x batch
    axes = tuple(i for i in range(arr.ndim) if i != 1)
    return arr.mean(axis=axes)
