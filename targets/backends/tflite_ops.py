"""Per-operator lowering of QDQ ONNX nodes to integer TFLite operators (the emitter's op table).

Each handler reads one ONNX node through the `Emitter` (integer tensors, quantized constants,
layouts) and writes TFLite operators; a node it cannot write raises `Unsupported` with the reason,
which legalize shows per node.
"""

from __future__ import annotations

import numpy as np

from edgeship.targets.backends.tflite_builder import QParams, S, options
from edgeship.targets.backends.tflite_emit import NHWC, Emitter, Unsupported, activation_code, clip_bounds, identity, inverse

# output quantization TFLite's integer kernels require for these ops: (int8, int16) -> (scale, zero point)
FIXED_OUTPUT = {
    "SOFTMAX": {"int8": (1 / 256, -128), "int16": (1 / 32768, 0)},
    "LOGISTIC": {"int8": (1 / 256, -128), "int16": (1 / 32768, 0)},
    "TANH": {"int8": (1 / 128, 0), "int16": (1 / 32768, 0)},
}


def node_qparams(em: Emitter, node) -> tuple[QParams, str]:
    qp, dtype = em.g._node_qparams(node), em.g.zero_point_dtype(node)
    if dtype == "uint8":
        qp, dtype = QParams(qp.scale, tuple(z - 128 for z in qp.zero_point), qp.axis), "int8"
    return qp, dtype


def requantize(em: Emitter, node) -> None:
    """QuantizeLinear: usually the output quantization of the op before it (an alias), else a QUANTIZE."""
    x, out = node.input[0], node.output[0]
    if x in em.g.consts:
        values = em.g.consts[x]
        qp, dtype = node_qparams(em, node)
        q = np.clip(np.round(values / qp.scale[0]) + qp.zero_point[0], *_limits(dtype)).astype(dtype)
        from edgeship.targets.backends.qdq_graph import QConst

        em.g.qconsts[out] = QConst(q, qp)
        return
    r = em.ref(x)
    qp, dtype = node_qparams(em, node)
    have = em.b.qparams_of(r.index)
    if have is not None and qp.same(have) and em.b.dtype_of(r.index) == dtype:
        em.refs[out] = r
        return
    y = em.new(out, r.perm, qp, dtype)
    em.b.op("QUANTIZE", [r.index], [y], origin=node.name)


def _quantized(real, qp: QParams, dtype: str) -> np.ndarray:
    """Real values quantized with per-tensor `qp`, saturating: a +-inf constant becomes the int limit, the
    value just beyond the data range - the same choice stages/quant_finite.py makes before quantizing."""
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.nan_to_num(np.round(np.asarray(real, dtype=np.float64) / qp.scale[0]), nan=0.0, posinf=1e9, neginf=-1e9)
    return np.clip(q + qp.zero_point[0], *_limits(dtype))


def _limits(dtype: str) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _ints(em: Emitter, node, index: int, attr: str | None = None, default=None):
    """An integer list from a constant input (opset >= 10 style) or an attribute."""
    if len(node.input) > index and node.input[index]:
        name = node.input[index]
        if name not in em.g.consts:
            raise Unsupported(f"{node.op_type} input {name} must be constant")
        return [int(v) for v in np.asarray(em.g.consts[name]).reshape(-1)]
    value = em.g.attr(node, attr, default) if attr else default
    return None if value is None else [int(v) for v in value]


def passthrough_output(em: Emitter, out: str, perm, src: int):
    """Output tensor for an op that keeps its input's quantization (reshape, slice, pool, ...): the op
    writes into the returned tensor; `after()` adds a QUANTIZE when the model chose other parameters."""
    qp_in, dtype = em.b.qparams_of(src), em.b.dtype_of(src)
    found = em.g.qparams(out)
    if found is None or qp_in is None:
        index = em.new(out, perm, qp_in, dtype)
        return index, lambda: None
    qp_out, out_dtype = em.int_dtype(out)
    if qp_out.same(qp_in) and out_dtype == dtype:
        index = em.new(out, perm, qp_in, dtype)
        return index, lambda: None
    shape = em.g.shape(out)
    tmp = em.temp(f"{out}/in_scale", [shape[p] for p in perm], qp_in, dtype)
    final = em.new(out, perm, qp_out, out_dtype)
    return tmp, lambda: em.b.op("QUANTIZE", [tmp], [final], origin=em.node.name)


def fixed_output(em: Emitter, out: str, perm, op: str):
    """Output for ops whose TFLite kernel fixes the output scale (softmax, logistic, tanh)."""
    qp_out, dtype = em.int_dtype(out)
    scale, zp = FIXED_OUTPUT[op][dtype]
    fixed = QParams.of(scale, zp)
    if qp_out.same(fixed):
        return em.new(out, perm, fixed, dtype), lambda: None
    shape = em.g.shape(out)
    tmp = em.temp(f"{out}/{op.lower()}_fixed", [shape[p] for p in perm], fixed, dtype)
    final = em.new(out, perm, qp_out, dtype)
    return tmp, lambda: em.b.op("QUANTIZE", [tmp], [final], origin=em.node.name)


# -- convolution and pooling ------------------------------------------------------------------

def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def _padding(em: Emitter, node, spatial: list[int], kernel: list[int], strides: list[int], dilations: list[int]):
    """(TFLite padding, explicit [[top, bottom], [left, right]] or None when SAME/VALID covers it)."""
    auto = em.g.attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto == "VALID":
        return S.Padding.VALID, None
    if auto == "SAME_UPPER":
        return S.Padding.SAME, None
    if auto == "SAME_LOWER":
        pads = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            a, b = _same_pads(size, k, s, d)
            pads.append([b, a])
        return S.Padding.VALID, pads
    p = em.g.attr(node, "pads", [0] * 4) or [0] * 4
    explicit = [[int(p[0]), int(p[2])], [int(p[1]), int(p[3])]]
    if not any(p):
        return S.Padding.VALID, None
    same = [list(_same_pads(size, k, s, d)) for size, k, s, d in zip(spatial, kernel, strides, dilations)]
    if explicit == same:
        return S.Padding.SAME, None
    return S.Padding.VALID, explicit


def _pad_nhwc(em: Emitter, src: int, pads, name: str, fill: int | None = None) -> int:
    """PAD (zero point: real 0) or PADV2 (`fill`) of an NHWC tensor's H and W."""
    shape = em.b.shape_of(src)
    qp, dtype = em.b.qparams_of(src), em.b.dtype_of(src)
    out_shape = [shape[0], shape[1] + sum(pads[0]), shape[2] + sum(pads[1]), shape[3]]
    out = em.temp(f"{name}/padded", out_shape, qp, dtype)
    paddings = em.b.constant(f"{name}/paddings", np.asarray([[0, 0], pads[0], pads[1], [0, 0]], dtype=np.int32))
    if fill is None:
        em.b.op("PAD", [src, paddings], [out], options("PadOptions"), origin=em.node.name)
    else:
        value = em.b.constant(f"{name}/pad_value", np.asarray([fill], dtype=dtype), qp)
        em.b.op("PADV2", [src, paddings, value], [out], options("PadV2Options"), origin=em.node.name)
    return out


def _bias(em: Emitter, name: str | None, channels: int, in_scale: float, w_scales, wide: bool, beta: float = 1.0):
    """int32 (int64 for 16-bit activations) bias with scale = input scale x weight scale, per channel."""
    real = np.zeros(channels)
    if name:
        if name in em.g.qconsts:
            real = em.g.qconsts[name].real().reshape(-1)
        elif name in em.g.consts:
            real = np.asarray(em.g.consts[name], dtype=np.float64).reshape(-1)
        else:
            raise Unsupported(f"bias {name} is not constant")
        real = np.broadcast_to(real * beta, (channels,))
    scales = np.broadcast_to(np.asarray(w_scales, dtype=np.float64) * in_scale, (channels,))
    dtype = "int64" if wide else "int32"
    q = np.clip(np.round(real / scales), *_limits(dtype)).astype(dtype)
    return em.b.constant(f"{name or em.node.name + '/bias'}", q, QParams.of(scales, np.zeros(channels, dtype=np.int64)))


def _weights(em: Emitter, name: str):
    if name not in em.g.qconsts:
        raise Unsupported(f"weights {name} are not a quantized constant",
                          "quantize the model statically (weights int8); runtime weights are not supported")
    qc = em.g.qconsts[name]
    if qc.values.dtype != np.int8 or any(qc.qparams.zero_point):
        raise Unsupported(f"weights {name} are {qc.values.dtype} with non-zero zero point: TFLite needs symmetric int8 weights",
                          "set quantization.weights: {dtype: int8, symmetric: true}")
    return qc


def _kept_float(em: Emitter, weights: str) -> bool:
    """The quantizer kept this node in float (keep_float, or auto's most sensitive layers): float weights."""
    return weights in em.g.consts and em.g.consts[weights].dtype.kind == "f"


def _real(em: Emitter, name: str | None, size: int, scale: float = 1.0) -> np.ndarray:
    if not name:
        return np.zeros(size, dtype=np.float32)
    value = em.g.qconsts[name].real() if name in em.g.qconsts else em.g.consts[name]
    return np.broadcast_to(np.asarray(value, dtype=np.float32).reshape(-1) * scale, (size,)).copy()


def _float_around(em: Emitter, src: int, out_name: str, perm):
    """A node kept in float inside an integer graph: (float input, float output, finish) where finish
    QUANTIZEs the output to the quantization the model gives it. LiteRT runs the float kernel; on an
    Ethos-U Vela places it on the Cortex-M."""
    xf = em.b.tensor(f"{em.b.name_of(src)}/float", em.b.shape_of(src), "float32")
    em.b.op("DEQUANTIZE", [src], [xf], origin=em.node.name)
    y = em.new(out_name, perm)
    yf = em.b.tensor(f"{out_name}/float", em.b.shape_of(y), "float32")
    return xf, yf, lambda: em.b.op("QUANTIZE", [yf], [y], origin=em.node.name)


def conv(em: Emitter, node) -> None:
    x, w = node.input[0], node.input[1]
    shape = em.g.shape(x)
    if len(shape) != 4:
        raise Unsupported(f"Conv on a rank-{len(shape)} input: only 2-D convolutions are lowered",
                          "reshape the 1-D convolution to 2-D (H=1) in the export")
    kept_float = _kept_float(em, w)
    qc = None if kept_float else _weights(em, w)
    W = em.g.consts[w].astype(np.float32) if kept_float else qc.values
    group = int(em.g.attr(node, "group", 1))
    kernel = list(W.shape[2:])
    strides = list(em.g.attr(node, "strides", [1, 1]))
    dilations = list(em.g.attr(node, "dilations", [1, 1]))
    padding, explicit = _padding(em, node, shape[2:], kernel, strides, dilations)
    src = em.act(x, NHWC)
    if explicit:
        src = _pad_nhwc(em, src, explicit, node.name or x)
    in_qp, dtype = em.b.qparams_of(src), em.b.dtype_of(src)
    out_name, fused = em.fused_activation(node.output[0])
    c_out, c_in = W.shape[0], shape[1]
    bias_name = node.input[2] if len(node.input) > 2 else None
    if kept_float:
        src, y, finish = _float_around(em, src, out_name, NHWC)
        bias = em.b.constant(f"{bias_name or node.name + '/bias'}/float", _real(em, bias_name, c_out))
        wq = w_axis3 = None
    else:
        y, finish = em.new(out_name, NHWC), (lambda: None)
        w_scale = np.broadcast_to(np.asarray(qc.qparams.scale), (c_out,))
        bias = _bias(em, bias_name, c_out, in_qp.scale[0], w_scale, dtype == "int16")
        wq = QParams.of(w_scale, np.zeros(c_out, dtype=np.int64), 0)
        w_axis3 = QParams(wq.scale, wq.zero_point, 3)
    if group == 1:
        wt = em.b.constant(w, np.ascontiguousarray(W.transpose(0, 2, 3, 1)), wq)
        opts = options("Conv2DOptions", padding=padding, strideH=strides[0], strideW=strides[1],
                       dilationHFactor=dilations[0], dilationWFactor=dilations[1], fusedActivationFunction=fused)
        em.b.op("CONV_2D", [src, wt, bias], [y], opts, origin=node.name)
    elif group == c_in and W.shape[1] == 1:
        wt = em.b.constant(w, np.ascontiguousarray(W.transpose(1, 2, 3, 0)), w_axis3)
        opts = options("DepthwiseConv2DOptions", padding=padding, strideH=strides[0], strideW=strides[1],
                       dilationHFactor=dilations[0], dilationWFactor=dilations[1], depthMultiplier=c_out // c_in,
                       fusedActivationFunction=fused)
        em.b.op("DEPTHWISE_CONV_2D", [src, wt, bias], [y], opts, origin=node.name)
    else:
        raise Unsupported(f"grouped Conv (group={group}, {c_in} input channels): TFLite lowers only regular and depthwise",
                          "split it into per-group convs and a Concat, or use a depthwise + pointwise pair")
    finish()


def _transpose_conv_padding(node, em: Emitter, spatial, out_spatial, kernel, strides) -> int:
    """TFLite padding for an ONNX ConvTranspose: VALID (no pads) or SAME (out = in x stride, pads split as
    TFLite's SAME does); anything else has no TRANSPOSE_CONV equivalent."""
    pads = list(em.g.attr(node, "pads", [0] * 4) or [0] * 4)
    valid = [(i - 1) * s + k for i, k, s in zip(spatial, kernel, strides)]
    if not any(pads) and list(out_spatial) == valid:
        return S.Padding.VALID
    same = []
    for i, o, k, s in zip(spatial, out_spatial, kernel, strides):
        total = max((i - 1) * s + k - o, 0)
        same.append((total // 2, total - total // 2))
    if list(out_spatial) == [i * s for i, s in zip(spatial, strides)] and [(pads[0], pads[2]), (pads[1], pads[3])] == same:
        return S.Padding.SAME
    raise Unsupported(f"ConvTranspose with pads {pads} to output {list(out_spatial)}: TRANSPOSE_CONV pads only as SAME or VALID",
                      "export the upsampling with pads 0 (VALID) or output = input x stride (SAME)")


def conv_transpose(em: Emitter, node) -> None:
    """TRANSPOSE_CONV. ONNX weights are (C_in, C_out, kH, kW), per-channel along axis 1 (the output
    channels); TFLite wants (C_out, kH, kW, C_in), per-channel along axis 0, and the output shape as an input."""
    x, w = node.input[0], node.input[1]
    shape, out_shape = em.g.shape(x), em.g.shape(node.output[0])
    if len(shape) != 4:
        raise Unsupported(f"ConvTranspose on a rank-{len(shape)} input: only 2-D transposed convolutions are lowered")
    if int(em.g.attr(node, "group", 1)) != 1 or any(d != 1 for d in em.g.attr(node, "dilations", [1, 1])):
        raise Unsupported("grouped or dilated ConvTranspose: TRANSPOSE_CONV has neither")
    if any(em.g.attr(node, "output_padding", [0, 0]) or [0]):
        raise Unsupported("ConvTranspose with output_padding: TRANSPOSE_CONV has none")
    qc = _weights(em, w)
    W = qc.values
    c_out = W.shape[1]
    kernel = list(W.shape[2:])
    strides = list(em.g.attr(node, "strides", [1, 1]))
    padding = _transpose_conv_padding(node, em, shape[2:], out_shape[2:], kernel, strides)
    src = em.act(x, NHWC)
    in_qp, dtype = em.b.qparams_of(src), em.b.dtype_of(src)
    out_name, fused = em.fused_activation(node.output[0])
    y = em.new(out_name, NHWC)
    w_scale = np.broadcast_to(np.asarray(qc.qparams.scale), (c_out,))
    if not qc.qparams.per_tensor and qc.qparams.axis != 1:
        raise Unsupported(f"ConvTranspose weights {w} quantized per channel along axis {qc.qparams.axis}, not the output channels (1)")
    bias = _bias(em, node.input[2] if len(node.input) > 2 and node.input[2] else None, c_out, in_qp.scale[0], w_scale,
                 dtype == "int16")
    wt = em.b.constant(w, np.ascontiguousarray(W.transpose(1, 2, 3, 0)),
                       QParams.of(w_scale, np.zeros(c_out, dtype=np.int64), 0))
    size = em.b.constant(f"{out_name}/output_shape", np.asarray([out_shape[p] for p in NHWC], dtype=np.int32))
    opts = options("TransposeConvOptions", padding=padding, strideH=strides[0], strideW=strides[1],
                   fusedActivationFunction=fused)
    em.b.op("TRANSPOSE_CONV", [size, wt, src, bias], [y], opts, origin=node.name)


def pool(em: Emitter, node) -> None:
    x = node.input[0]
    shape = em.g.shape(x)
    if len(shape) != 4:
        raise Unsupported(f"{node.op_type} on a rank-{len(shape)} input: only 2-D pooling is lowered")
    kernel = list(em.g.attr(node, "kernel_shape"))
    strides = list(em.g.attr(node, "strides", [1, 1]))
    dilations = list(em.g.attr(node, "dilations", [1, 1]))
    if any(d != 1 for d in dilations):
        raise Unsupported("dilated pooling has no TFLite kernel")
    padding, explicit = _padding(em, node, shape[2:], kernel, strides, [1, 1])
    src = em.act(x, NHWC)
    if explicit:
        if node.op_type == "MaxPool":
            src = _pad_nhwc(em, src, explicit, node.name or x, fill=_limits(em.b.dtype_of(src))[0])
        elif int(em.g.attr(node, "count_include_pad", 0)):
            src = _pad_nhwc(em, src, explicit, node.name or x)
        else:
            raise Unsupported(f"AveragePool with padding {explicit} that is not TFLite SAME (and excludes pads)",
                              "pad symmetrically as SAME does, or use count_include_pad=1")
    expected = em.g.shape(node.output[0])
    padded = em.b.shape_of(src)
    for axis in (0, 1):
        size = padded[1 + axis]
        k, s = kernel[axis], strides[axis]
        got = -(-size // s) if padding == S.Padding.SAME else (size - k) // s + 1
        if got != expected[2 + axis]:
            raise Unsupported(f"{node.op_type} output size {expected[2:]} needs ceil_mode or padding TFLite lacks")
    out_name, fused = em.fused_activation(node.output[0])
    y, after = passthrough_output(em, out_name, NHWC, src)
    opts = options("Pool2DOptions", padding=padding, strideH=strides[0], strideW=strides[1],
                   filterHeight=kernel[0], filterWidth=kernel[1], fusedActivationFunction=fused)
    em.b.op("MAX_POOL_2D" if node.op_type == "MaxPool" else "AVERAGE_POOL_2D", [src], [y], opts, origin=node.name)
    after()


def _mean(em: Emitter, node, x: str, axes: list[int], keep: bool, perm=None) -> None:
    rank = len(em.g.shape(x))
    axes = sorted({a % rank for a in axes})
    if perm is None:
        perm = em.ref(x).perm if keep else identity(rank)
    src = em.act(x, perm)
    inv = inverse(perm)
    t_axes = np.asarray(sorted(inv[a] for a in axes), dtype=np.int32)
    out = node.output[0]
    out_perm = perm if keep else identity(len(em.g.shape(out)))
    y = em.new(out, out_perm)
    em.b.op("MEAN", [src, em.b.constant(f"{out}/axes", t_axes)], [y], options("ReducerOptions", keepDims=keep), origin=node.name)


def global_average_pool(em: Emitter, node) -> None:
    rank = len(em.g.shape(node.input[0]))
    if rank != 4:
        raise Unsupported(f"GlobalAveragePool on rank {rank}")
    _mean(em, node, node.input[0], [2, 3], True, NHWC)


def reduce_mean(em: Emitter, node) -> None:
    axes = _ints(em, node, 1, "axes")
    rank = len(em.g.shape(node.input[0]))
    if axes is None:
        axes = list(range(rank))
    _mean(em, node, node.input[0], axes, bool(em.g.attr(node, "keepdims", 1)))


# -- dense ------------------------------------------------------------------------------------

def gemm(em: Emitter, node) -> None:
    a, b = node.input[0], node.input[1]
    trans_a = int(em.g.attr(node, "transA", 0))
    trans_b = int(em.g.attr(node, "transB", 0))
    alpha = float(em.g.attr(node, "alpha", 1.0))
    beta = float(em.g.attr(node, "beta", 1.0))
    if trans_a or not np.isclose(alpha, 1.0):
        raise Unsupported("Gemm with transA or alpha != 1 has no FULLY_CONNECTED form")
    _fully_connected(em, node, a, b, node.input[2] if len(node.input) > 2 else None, transposed=bool(trans_b), beta=beta)


def matmul(em: Emitter, node) -> None:
    a, b = node.input
    if b in em.g.qconsts or _kept_float(em, b):
        _fully_connected(em, node, a, b, None, transposed=False)
        return
    _batch_matmul(em, node, a, b)


def _fully_connected(em: Emitter, node, a: str, b: str, c: str | None, transposed: bool, beta: float = 1.0) -> None:
    kept_float = _kept_float(em, b)
    qc = None if kept_float else _weights(em, b)
    W = em.g.consts[b].astype(np.float32) if kept_float else qc.values
    if W.ndim != 2:
        raise Unsupported(f"weights of rank {W.ndim}: FULLY_CONNECTED takes 2-D weights")
    # ONNX y = x @ W ([K, N]) or x @ W.T ([N, K]); TFLite wants [N, K] with per-channel axis 0
    axis = 0 if kept_float else qc.qparams.axis
    if not transposed:
        W = W.T
        axis = 1 - axis
    n_out = W.shape[0]
    src = em.act(a, identity(len(em.g.shape(a))))
    in_qp, dtype = em.b.qparams_of(src), em.b.dtype_of(src)
    out_name, fused = em.fused_activation(node.output[0])
    rank = len(em.g.shape(out_name))
    if kept_float:
        src, y, finish = _float_around(em, src, out_name, identity(rank))
        wt = em.b.constant(b, np.ascontiguousarray(W))
        bias = em.b.constant(f"{c or node.name + '/bias'}/float", _real(em, c, n_out, beta))
    else:
        if not qc.qparams.per_tensor and axis != 0:
            raise Unsupported("weights quantized per input channel: TFLite needs per-output-channel")
        scales = np.broadcast_to(np.asarray(qc.qparams.scale), (n_out,))
        wq = QParams.of(scales, np.zeros(n_out, dtype=np.int64), 0) if not qc.qparams.per_tensor else QParams.of(scales[0], 0)
        wt = em.b.constant(b, np.ascontiguousarray(W), wq)
        bias = _bias(em, c, n_out, in_qp.scale[0], scales, dtype == "int16", beta)
        y, finish = em.new(out_name, identity(rank)), (lambda: None)
    opts = options("FullyConnectedOptions", fusedActivationFunction=fused, keepNumDims=rank > 2)
    em.b.op("FULLY_CONNECTED", [src, wt, bias], [y], opts, origin=node.name)
    finish()


def _batch_matmul(em: Emitter, node, a: str, b: str) -> None:
    ra, rb = len(em.g.shape(a)), len(em.g.shape(b))
    x, w = em.act(a, identity(ra)), em.act(b, identity(rb))
    y = em.new(node.output[0], identity(len(em.g.shape(node.output[0]))))
    em.b.op("BATCH_MATMUL", [x, w], [y], options("BatchMatMulOptions", adjX=False, adjY=False), origin=node.name)


# -- elementwise ------------------------------------------------------------------------------

def _is_activation(em: Emitter, name: str) -> bool:
    return name not in em.g.qconsts and name not in em.g.consts


def _operands(em: Emitter, node, inputs: list[str], out_rank: int) -> tuple[list[int], tuple]:
    """Elementwise operands in one layout: NHWC when a 4-D activation operand already is, else ONNX's."""
    acts = [n for n in inputs if _is_activation(em, n)]
    if not acts:
        raise Unsupported(f"{node.op_type} of constants only: fold it (normalize stage) before lowering")
    perm = identity(out_rank)
    if out_rank == 4 and all(len(em.g.shape(n)) == 4 for n in acts) and any(em.ref(n).perm == NHWC for n in acts):
        perm = NHWC
    out = []
    for name in inputs:
        if _is_activation(em, name):
            rank = len(em.g.shape(name))
            out.append(em.act(name, perm if rank == out_rank else identity(rank)))
            if rank != out_rank and perm != identity(out_rank):
                raise Unsupported(f"{node.op_type} broadcasts a rank-{rank} activation against rank {out_rank} in NHWC")
        else:
            out.append(em.broadcast_const(name, out_rank, perm))
    return out, perm


def min_max(op: str):
    """MAXIMUM/MINIMUM: TFLite's integer kernels compare raw integers, so every operand is brought to
    the output's quantization first (constants quantized straight to it)."""
    def handler(em: Emitter, node) -> None:
        out = node.output[0]
        rank = len(em.g.shape(out))
        qp, dtype = em.int_dtype(out)
        acts = [n for n in node.input if _is_activation(em, n)]
        perm = NHWC if rank == 4 and acts and all(em.ref(n).perm == NHWC for n in acts) else identity(rank)
        srcs = []
        for name in node.input[:2]:
            if _is_activation(em, name):
                srcs.append(_requantized_to(em, em.act(name, perm if len(em.g.shape(name)) == rank else None), qp))
            else:
                real = em.g.qconsts[name].real() if name in em.g.qconsts else np.asarray(em.g.consts[name], dtype=np.float64)
                real = real.reshape([1] * (rank - real.ndim) + list(real.shape)) if real.ndim < rank else real
                if perm != identity(rank):
                    real = np.transpose(real, perm)
                q = _quantized(real, qp, dtype).astype(dtype)
                srcs.append(em.b.constant(f"{name}/as_{out}", q, qp))
        y = em.new(out, perm, qp, dtype)
        em.b.op(op, srcs, [y], options("MaximumMinimumOptions"), origin=node.name)
    return handler


def binary(op: str):
    def handler(em: Emitter, node) -> None:
        rank = len(em.g.shape(node.output[0]))
        srcs, perm = _operands(em, node, list(node.input[:2]), rank)
        out_name, fused = em.fused_activation(node.output[0])
        y = em.new(out_name, perm)
        em.b.op(op, srcs, [y], options(f"{op.title()}Options", fusedActivationFunction=fused), origin=node.name)
    return handler


def div(em: Emitter, node) -> None:
    a, b = node.input
    if not _is_activation(em, b):  # x / c == x * (1/c): TFLite's integer DIV does not exist for int8
        real = em.g.qconsts[b].real() if b in em.g.qconsts else np.asarray(em.g.consts[b], dtype=np.float64)
        if np.any(real == 0):
            raise Unsupported("division by a constant that holds 0")
        recip = 1.0 / real
        dtype = em.b.dtype_of(em.ref(a).index)  # MUL takes both operands in one type: int8, or int16 (16x8)
        top = _limits(dtype)[1]
        scale = float(np.max(np.abs(recip))) / top or 1.0
        from edgeship.targets.backends.qdq_graph import QConst

        name = f"{b}/reciprocal/{dtype}"
        em.g.qconsts[name] = QConst(np.clip(np.round(recip / scale), -top, top).astype(dtype), QParams.of(scale, 0))
        rank = len(em.g.shape(node.output[0]))
        srcs, perm = _operands(em, node, [a, name], rank)
        y = em.new(node.output[0], perm)
        em.b.op("MUL", srcs, [y], options("MulOptions"), origin=node.name)
        return
    float_island("DIV", "DivOptions")(em, node)  # no int8 DIV in TFLite: in float, on the CPU


def unary(op: str, opts_name: str | None = None, fixed: bool = False, **fields):
    def handler(em: Emitter, node) -> None:
        r = em.ref(node.input[0])
        src = r.index
        if fixed:
            y, after = fixed_output(em, node.output[0], r.perm, op)
        else:
            y = em.new(node.output[0], r.perm)
            after = lambda: None  # noqa: E731
        values = {k: (v(em, node) if callable(v) else v) for k, v in fields.items()}
        em.b.op(op, [src], [y], options(opts_name, **values) if opts_name else None, origin=node.name)
        after()
    return handler


def activation(em: Emitter, node) -> None:
    """A standalone Relu/Clip (one not folded into the op before it)."""
    code = activation_code(em.g, node)
    names = {S.ActivationFunctionType.RELU: "RELU", S.ActivationFunctionType.RELU6: "RELU6",
             S.ActivationFunctionType.RELU_N1_TO_1: "RELU_N1_TO_1"}
    if code in names:
        unary(names[code])(em, node)
        return
    lo, hi = clip_bounds(em.g, node)
    r = em.ref(node.input[0])
    qp, dtype = em.b.qparams_of(r.index), em.b.dtype_of(r.index)
    src = r.index
    for op, bound in (("MAXIMUM", lo), ("MINIMUM", hi)):
        if not np.isfinite(bound):
            continue
        q = int(np.clip(np.round(bound / qp.scale[0]) + qp.zero_point[0], *_limits(dtype)))
        const = em.b.constant(f"{node.name}/{op.lower()}", np.asarray([q], dtype=dtype), qp)
        shape = em.b.shape_of(src)
        out = em.temp(f"{node.output[0]}/{op.lower()}", shape, qp, dtype)
        em.b.op(op, [src, const], [out], options("MaximumMinimumOptions"), origin=node.name)
        src = out
    y, after = passthrough_output(em, node.output[0], r.perm, src)
    em.b.op("RESHAPE", [src, em.b.constant(f"{node.output[0]}/shape", np.asarray(em.b.shape_of(src), dtype=np.int32))], [y],
            options("ReshapeOptions", newShape=em.b.shape_of(src)), origin=node.name)
    after()


def hard_sigmoid(em: Emitter, node) -> None:
    """clip(alpha*x + beta, 0, 1) as MUL then ADD with RELU: the output's quantization saturates at 1."""
    alpha = float(em.g.attr(node, "alpha", 0.2))
    beta = float(em.g.attr(node, "beta", 0.5))
    r = em.ref(node.input[0])
    qp, dtype = em.b.qparams_of(r.index), em.b.dtype_of(r.index)
    lo, hi = _limits(dtype)
    span = [qp.scale[0] * (lo - qp.zero_point[0]) * alpha, qp.scale[0] * (hi - qp.zero_point[0]) * alpha]
    mid_qp = _range_qparams(min(span), max(span), dtype)
    shape = em.b.shape_of(r.index)
    scaled = em.temp(f"{node.output[0]}/scaled", shape, mid_qp, dtype)
    a_const = em.b.constant(f"{node.name}/alpha", np.asarray([127 if dtype == "int8" else 32767], dtype=dtype),
                            QParams.of(alpha / (127 if dtype == "int8" else 32767), 0))
    em.b.op("MUL", [r.index, a_const], [scaled], options("MulOptions"), origin=node.name)
    b_const = em.b.constant(f"{node.name}/beta", np.asarray([127 if dtype == "int8" else 32767], dtype=dtype),
                            QParams.of(abs(beta) / (127 if dtype == "int8" else 32767) or 1.0, 0))
    y = em.new(node.output[0], r.perm)
    em.b.op("ADD" if beta >= 0 else "SUB", [scaled, b_const], [y],
            options("AddOptions" if beta >= 0 else "SubOptions", fusedActivationFunction=S.ActivationFunctionType.RELU),
            origin=node.name)


def _range_qparams(lo: float, hi: float, dtype: str) -> QParams:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if dtype == "int16":
        return QParams.of(max(abs(lo), abs(hi)) / 32767 or 1.0, 0)
    scale = (hi - lo) / 255 or 1.0
    return QParams.of(scale, int(np.clip(np.round(-128 - lo / scale), -128, 127)))


def softmax(em: Emitter, node) -> None:
    x = node.input[0]
    rank = len(em.g.shape(x))
    axis = int(em.g.attr(node, "axis", -1)) % rank
    if axis != rank - 1:
        raise Unsupported(f"Softmax over axis {axis} (not the last): TFLite's SOFTMAX runs on the last axis",
                          "transpose so the softmax axis is last")
    src = em.act(x, identity(rank))
    y, after = fixed_output(em, node.output[0], identity(rank), "SOFTMAX")
    em.b.op("SOFTMAX", [src], [y], options("SoftmaxOptions", beta=1.0), origin=node.name)
    after()


# -- data movement ----------------------------------------------------------------------------

def reshape(em: Emitter, node) -> None:
    x, out = node.input[0], node.output[0]
    src = em.act(x, identity(len(em.g.shape(x))))
    shape = em.g.shape(out)
    y, after = passthrough_output(em, out, identity(len(shape)), src)
    em.reshape_op(src, y, shape)
    after()


def transpose(em: Emitter, node) -> None:
    """Free: the output is the input's data seen in another layout (a copy only where a consumer needs one)."""
    x, out = node.input[0], node.output[0]
    rank = len(em.g.shape(x))
    t = [int(v) for v in em.g.attr(node, "perm", list(reversed(range(rank))))]
    r = em.ref(x)
    inv_t = inverse(t)
    found = em.g.qparams(out)
    have = em.b.qparams_of(r.index)
    if found is not None and have is not None and not em.int_dtype(out)[0].same(have):
        src = em.act(x, identity(rank))
        y, after = passthrough_output(em, out, identity(rank), src)
        perm = np.asarray(t, dtype=np.int32)
        em.b.op("TRANSPOSE", [src, em.b.constant(f"{out}/perm", perm)], [y], origin=node.name)
        after()
        return
    em.refs[out] = type(r)(r.index, tuple(inv_t[p] for p in r.perm))


def identity_op(em: Emitter, node) -> None:
    em.refs[node.output[0]] = em.ref(node.input[0])


def concat(em: Emitter, node) -> None:
    out = node.output[0]
    rank = len(em.g.shape(out))
    axis = int(em.g.attr(node, "axis")) % rank
    acts = [n for n in node.input if _is_activation(em, n)]
    perm = NHWC if rank == 4 and acts and all(em.ref(n).perm == NHWC for n in acts) else identity(rank)
    srcs = [em.act(n, perm) if _is_activation(em, n) else em.qconst(n, perm if rank == 4 and perm == NHWC else None)
            for n in node.input]
    y = em.new(out, perm)
    srcs = [_requantized_to(em, s, em.b.qparams_of(y)) for s in srcs]  # TFLite's int8 CONCATENATION needs one scale
    em.b.op("CONCATENATION", srcs, [y], options("ConcatenationOptions", axis=inverse(perm)[axis]), origin=node.name)


def _requantized_to(em: Emitter, src: int, qp: QParams) -> int:
    have = em.b.qparams_of(src)
    if have is None or have.same(qp):
        return src
    out = em.temp(f"{em.b.name_of(src)}/requantized", em.b.shape_of(src), qp, em.b.dtype_of(src))
    em.b.op("QUANTIZE", [src], [out], origin=em.node.name)
    return out


def slice_op(em: Emitter, node) -> None:
    x, out = node.input[0], node.output[0]
    shape = em.g.shape(x)
    rank = len(shape)
    starts, ends = _ints(em, node, 1, "starts"), _ints(em, node, 2, "ends")
    axes = _ints(em, node, 3, "axes") or list(range(len(starts)))
    steps = _ints(em, node, 4) or [1] * len(starts)
    begin, end, stride = [0] * rank, list(shape), [1] * rank
    for s, e, a, st in zip(starts, ends, axes, steps):
        a %= rank
        if st <= 0:
            raise Unsupported("Slice with a negative or zero step")
        dim = shape[a]
        s = max(0, min(dim, s + dim if s < 0 else s))
        e = max(0, min(dim, e + dim if e < 0 else e))
        begin[a], end[a], stride[a] = s, e, st
    r = em.ref(x)
    perm = r.perm
    t = lambda v: np.asarray([v[p] for p in perm], dtype=np.int32)  # noqa: E731
    y, after = passthrough_output(em, out, perm, r.index)
    em.b.op("STRIDED_SLICE", [r.index, em.b.constant(f"{out}/begin", t(begin)), em.b.constant(f"{out}/end", t(end)),
                              em.b.constant(f"{out}/strides", t(stride))], [y], options("StridedSliceOptions"), origin=node.name)
    after()


def split(em: Emitter, node) -> None:
    x = node.input[0]
    shape = em.g.shape(x)
    rank = len(shape)
    axis = int(em.g.attr(node, "axis", 0)) % rank
    sizes = [em.g.shape(o)[axis] for o in node.output]
    r = em.ref(x)
    outs = []
    afters = []
    for o in node.output:
        y, after = passthrough_output(em, o, r.perm, r.index)
        outs.append(y)
        afters.append(after)
    axis_t = em.b.constant(f"{node.name}/axis", np.asarray(inverse(r.perm)[axis], dtype=np.int32))
    em.b.op("SPLIT_V", [r.index, em.b.constant(f"{node.name}/sizes", np.asarray(sizes, dtype=np.int32)), axis_t], outs,
            options("SplitVOptions", numSplits=len(sizes)), origin=node.name)
    for after in afters:
        after()


def pad(em: Emitter, node) -> None:
    x, out = node.input[0], node.output[0]
    mode = em.g.attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise Unsupported(f"Pad mode {mode!r}: only constant padding is lowered (MIRROR_PAD is float-only on MCUs)")
    rank = len(em.g.shape(x))
    pads = _ints(em, node, 1, "pads")
    axes = _ints(em, node, 3) or list(range(rank))
    full = [[0, 0] for _ in range(rank)]
    for i, a in enumerate(axes):
        full[a % rank] = [pads[i], pads[i + len(axes)]]
    value = 0.0
    if len(node.input) > 2 and node.input[2]:
        name = node.input[2]
        value = float(np.asarray(em.g.qconsts[name].real() if name in em.g.qconsts else em.g.consts[name]).reshape(-1)[0])
    r = em.ref(x)
    paddings = np.asarray([full[p] for p in r.perm], dtype=np.int32)
    y, after = passthrough_output(em, out, r.perm, r.index)
    qp, dtype = em.b.qparams_of(r.index), em.b.dtype_of(r.index)
    if value == 0.0:
        em.b.op("PAD", [r.index, em.b.constant(f"{out}/paddings", paddings)], [y], options("PadOptions"), origin=node.name)
    else:
        q = int(np.clip(np.round(value / qp.scale[0]) + qp.zero_point[0], *_limits(dtype)))
        em.b.op("PADV2", [r.index, em.b.constant(f"{out}/paddings", paddings),
                          em.b.constant(f"{out}/pad_value", np.asarray([q], dtype=dtype), qp)], [y], options("PadV2Options"),
                origin=node.name)
    after()


def resize(em: Emitter, node) -> None:
    x, out = node.input[0], node.output[0]
    if len(em.g.shape(x)) != 4:
        raise Unsupported("Resize of a non-4-D tensor")
    mode = em.g.attr(node, "mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = em.g.attr(node, "coordinate_transformation_mode", b"half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    out_shape = em.g.shape(out)
    in_shape = em.g.shape(x)
    if out_shape[:2] != in_shape[:2]:
        raise Unsupported("Resize of the batch or channel axis")
    align = ctm == "align_corners"
    half = ctm in ("half_pixel", "pytorch_half_pixel")
    if ctm not in ("align_corners", "half_pixel", "pytorch_half_pixel", "asymmetric"):
        raise Unsupported(f"Resize coordinate_transformation_mode {ctm!r} has no TFLite equivalent")
    src = em.act(x, NHWC)
    y, after = passthrough_output(em, out, NHWC, src)
    size = em.b.constant(f"{out}/size", np.asarray(out_shape[2:], dtype=np.int32))
    if mode == "nearest":
        nearest = em.g.attr(node, "nearest_mode", b"round_prefer_floor")
        nearest = nearest.decode() if isinstance(nearest, bytes) else nearest
        if ctm == "asymmetric" and nearest != "floor":
            raise Unsupported(f"nearest Resize with nearest_mode {nearest!r} and asymmetric coordinates: TFLite floors",
                              "export with nearest_mode='floor'")
        em.b.op("RESIZE_NEAREST_NEIGHBOR", [src, size], [y],
                options("ResizeNearestNeighborOptions", alignCorners=align, halfPixelCenters=half), origin=node.name)
    elif mode == "linear":
        em.b.op("RESIZE_BILINEAR", [src, size], [y],
                options("ResizeBilinearOptions", alignCorners=align, halfPixelCenters=half), origin=node.name)
    else:
        raise Unsupported(f"Resize mode {mode!r}: TFLite has nearest and bilinear only")
    after()


def gather(em: Emitter, node) -> None:
    data, indices = node.input
    out = node.output[0]
    rank = len(em.g.shape(data))
    axis = int(em.g.attr(node, "axis", 0)) % rank
    if _is_activation(em, data):
        r = em.ref(data)
        if indices not in em.g.consts:
            raise Unsupported("Gather with both data and indices computed at run time")
        idx = np.asarray(em.g.consts[indices]).astype(np.int32)
        if r.perm != identity(rank) and idx.ndim != 1:
            r = type(r)(em.act(data, identity(rank)), identity(rank))
        src = r.index if r.perm == identity(rank) else em.act(data, identity(rank))
        y, after = passthrough_output(em, out, identity(len(em.g.shape(out))), src)
        em.b.op("GATHER", [src, em.b.constant(f"{out}/indices", idx)], [y], options("GatherOptions", axis=axis), origin=node.name)
        after()
        return
    params = em.qconst(data)
    idx = em.act(indices, identity(len(em.g.shape(indices))))
    qp = em.b.qparams_of(params)
    found = em.g.qparams(out)
    if qp is not None and found is not None and not em.int_dtype(out)[0].same(qp):
        tmp = em.temp(f"{out}/in_scale", em.g.shape(out), qp, em.b.dtype_of(params))
        y = em.new(out)
        em.b.op("GATHER", [params, idx], [tmp], options("GatherOptions", axis=axis), origin=node.name)
        em.b.op("QUANTIZE", [tmp], [y], origin=node.name)
        return
    y = em.new(out, None, qp, em.b.dtype_of(params)) if qp is not None else em.new(out)
    em.b.op("GATHER", [params, idx], [y], options("GatherOptions", axis=axis), origin=node.name)


def where(em: Emitter, node) -> None:
    """SELECT_V2 with a constant condition; both branches brought to the output's quantization (TFLite's
    integer select does not requantize)."""
    cond, a, b = node.input
    out = node.output[0]
    if cond not in em.g.consts:
        raise Unsupported("Where with a condition computed at run time", "make the mask a constant")
    rank = len(em.g.shape(out))
    qp, dtype = em.int_dtype(out)
    srcs = [em.b.constant(f"{node.name}/condition", np.asarray(em.g.consts[cond]).astype(bool))]
    for name in (a, b):
        if _is_activation(em, name):
            srcs.append(_requantized_to(em, em.act(name, identity(len(em.g.shape(name)))), qp))
        else:
            real = em.g.qconsts[name].real() if name in em.g.qconsts else np.asarray(em.g.consts[name], dtype=np.float64)
            q = _quantized(real, qp, dtype).astype(dtype)
            srcs.append(em.b.constant(f"{name}/as_{node.name}", q, qp))
    y = em.new(out, identity(rank), qp, dtype)
    em.b.op("SELECT_V2", srcs, [y], options("SelectV2Options"), origin=node.name)


def layer_norm(em: Emitter, node) -> None:
    """LayerNormalization over the last axis as a float island: DEQUANTIZE, MEAN/SUB/MUL/RSQRT in float32,
    QUANTIZE. TFLite has no integer layer norm; on an Ethos-U these ops run on the Cortex-M (TFLM float
    kernels), which Vela reports per node."""
    x, scale = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 else ""
    shape = em.g.shape(x)
    rank = len(shape)
    axis = int(em.g.attr(node, "axis", -1)) % rank
    if axis != rank - 1:
        raise Unsupported(f"LayerNormalization over axes {axis}..{rank - 1}: only the last axis is lowered")
    eps = float(em.g.attr(node, "epsilon", 1e-5))
    name = node.name or node.output[0]

    def real(tensor: str, default: float) -> np.ndarray:
        if not tensor:
            return np.full(shape[-1], default, dtype=np.float32)
        value = em.g.qconsts[tensor].real() if tensor in em.g.qconsts else em.g.consts[tensor]
        return np.asarray(value, dtype=np.float32).reshape(-1)

    def f32(suffix: str, dims) -> int:
        return em.b.tensor(f"{name}/{suffix}", dims, "float32")

    src = em.act(x, identity(rank))
    reduced = shape[:-1] + [1]
    axes = em.b.constant(f"{name}/axes", np.asarray([rank - 1], dtype=np.int32))
    steps = [("DEQUANTIZE", [src], f32("x", shape), None)]
    xf = steps[-1][2]
    mean = f32("mean", reduced)
    centered = f32("centered", shape)
    squared = f32("squared", shape)
    var = f32("variance", reduced)
    var_eps = f32("variance_eps", reduced)
    inv = f32("rsqrt", reduced)
    normed = f32("normalized", shape)
    scaled = f32("scaled", shape)
    shifted = f32("shifted", shape)
    steps += [
        ("MEAN", [xf, axes], mean, options("ReducerOptions", keepDims=True)),
        ("SUB", [xf, mean], centered, options("SubOptions")),
        ("MUL", [centered, centered], squared, options("MulOptions")),
        ("MEAN", [squared, axes], var, options("ReducerOptions", keepDims=True)),
        ("ADD", [var, em.b.constant(f"{name}/epsilon", np.asarray([eps], dtype=np.float32))], var_eps, options("AddOptions")),
        ("RSQRT", [var_eps], inv, None),
        ("MUL", [centered, inv], normed, options("MulOptions")),
        ("MUL", [normed, em.b.constant(f"{name}/gamma", real(scale, 1.0))], scaled, options("MulOptions")),
        ("ADD", [scaled, em.b.constant(f"{name}/beta", real(bias, 0.0))], shifted, options("AddOptions")),
    ]
    for op, inputs, output, opts in steps:
        em.b.op(op, inputs, [output], opts, origin=node.name)
    y = em.new(node.output[0], identity(rank))
    em.b.op("QUANTIZE", [shifted], [y], origin=node.name)


def _float_view(em: Emitter, name: str, rank: int) -> int:
    """A float32 copy of an input: DEQUANTIZE of an activation, or the constant's real values."""
    if _is_activation(em, name):
        src = em.act(name, identity(len(em.g.shape(name))))
        if em.b.qparams_of(src) is None:
            raise Unsupported(f"{name} is not quantized")
        out = em.b.tensor(f"{name}/float", em.b.shape_of(src), "float32")
        em.b.op("DEQUANTIZE", [src], [out], origin=em.node.name)
        return out
    real = em.g.qconsts[name].real() if name in em.g.qconsts else em.g.consts[name]
    arr = np.asarray(real, dtype=np.float32)
    return em.b.constant(f"{name}/float", arr.reshape([1] * (rank - arr.ndim) + list(arr.shape)) if arr.ndim < rank else arr)


def float_island(op: str, opts: str | None = None, numerator: float | None = None):
    """Ops with no integer TFLite kernel (Div, Exp, Sqrt, ...): DEQUANTIZE, the float kernel, QUANTIZE.
    Exact in float; on an Ethos-U they run on the Cortex-M, which Vela reports per node."""
    def handler(em: Emitter, node) -> None:
        out = node.output[0]
        rank = len(em.g.shape(out))
        inputs = [i for i in node.input if i]
        srcs = [_float_view(em, name, rank) for name in inputs]
        if numerator is not None:  # Reciprocal(x) = 1 / x
            srcs = [em.b.constant(f"{node.name}/one", np.asarray([numerator], dtype=np.float32))] + srcs
        result = em.b.tensor(f"{out}/float", em.g.shape(out), "float32")
        em.b.op(op, srcs, [result], options(opts) if opts else None, origin=node.name)
        y = em.new(out, identity(rank))
        em.b.op("QUANTIZE", [result], [y], origin=node.name)
    return handler


def reduce_sum(em: Emitter, node) -> None:
    """ReduceSum in float (an int8 SUM would need the sum's range, which the QDQ output scale has but the
    kernel rescales differently): DEQUANTIZE, SUM, QUANTIZE."""
    x, out = node.input[0], node.output[0]
    rank = len(em.g.shape(x))
    axes = _ints(em, node, 1, "axes")
    if axes is None:
        if int(em.g.attr(node, "noop_with_empty_axes", 0)):
            identity_op(em, node)
            return
        axes = list(range(rank))
    keep = bool(em.g.attr(node, "keepdims", 1))
    src = _float_view(em, x, rank)
    result = em.b.tensor(f"{out}/float", em.g.shape(out), "float32")
    em.b.op("SUM", [src, em.b.constant(f"{out}/axes", np.asarray(sorted(a % rank for a in axes), dtype=np.int32))],
            [result], options("ReducerOptions", keepDims=keep), origin=node.name)
    y = em.new(out, identity(len(em.g.shape(out))))
    em.b.op("QUANTIZE", [result], [y], origin=node.name)


def reduce_max(em: Emitter, node, axes: list[int] | None = None, keep: bool | None = None) -> None:
    x, out = node.input[0], node.output[0]
    rank = len(em.g.shape(x))
    if axes is None:
        axes = _ints(em, node, 1, "axes") or list(range(rank))
    keep = bool(em.g.attr(node, "keepdims", 1)) if keep is None else keep
    src = em.act(x, identity(rank))
    y, after = passthrough_output(em, out, identity(len(em.g.shape(out))), src)
    em.b.op("REDUCE_MAX", [src, em.b.constant(f"{out}/axes", np.asarray(sorted(a % rank for a in axes), dtype=np.int32))],
            [y], options("ReducerOptions", keepDims=keep), origin=node.name)
    after()


def global_max_pool(em: Emitter, node) -> None:
    rank = len(em.g.shape(node.input[0]))
    reduce_max(em, node, list(range(2, rank)), True)


def expand(em: Emitter, node) -> None:
    x, out = node.input[0], node.output[0]
    shape = em.g.shape(out)
    src = em.act(x, identity(len(em.g.shape(x))))
    y, after = passthrough_output(em, out, identity(len(shape)), src)
    em.b.op("BROADCAST_TO", [src, em.b.constant(f"{out}/shape", np.asarray(shape, dtype=np.int32))], [y], origin=node.name)
    after()


def one_hot_matmul(em: Emitter, node) -> None:
    """Equal(ids, arange(K)) -> Cast -> [Q/DQ] -> MatMul(W[K, N]): a one-hot embedding, lowered as
    GATHER of W's rows (exact: the one-hot's 1 dequantizes to 1.0), requantized to the MatMul's output."""
    ids, table = node.input
    if _is_activation(em, table) and not _is_activation(em, ids):
        ids, table = table, ids
    values = em.g.consts.get(table)
    if values is None or values.shape[-1] != np.prod(values.shape) or not np.array_equal(values.reshape(-1), np.arange(values.size)):
        raise Unsupported("Equal: only the one-hot pattern Equal(ids, arange(K)) feeding a MatMul is lowered")
    chain, name = [], node.output[0]
    for expected in ("Cast", "QuantizeLinear", "DequantizeLinear", "MatMul"):
        user = em.g.only_consumer(name)
        if user is None or user.op_type != expected:
            if expected in ("QuantizeLinear", "DequantizeLinear") and user is not None and user.op_type == "MatMul":
                continue
            raise Unsupported("Equal: only the one-hot pattern Equal(ids, arange(K)) -> Cast -> MatMul is lowered")
        chain.append(user)
        name = user.output[0]
    matmul = chain[-1]
    weights = matmul.input[1]
    if weights not in em.g.qconsts or em.g.shape(weights)[0] != values.size:
        raise Unsupported("one-hot MatMul without constant [K, N] weights")
    id_shape = [d for d in em.g.shape(ids)]
    idx = em.act(ids, identity(len(id_shape)))
    flat = id_shape[:-1] if id_shape[-1] == 1 else id_shape
    idx_flat = em.b.tensor(f"{ids}/ids", flat, em.b.dtype_of(idx))
    em.reshape_op(idx, idx_flat, flat)
    out = matmul.output[0]
    qp, dtype = em.int_dtype(out)  # the table is W's rows already quantized as the MatMul's output
    rows = em.g.qconsts[weights].real()
    table_q = np.clip(np.round(rows / qp.scale[0]) + qp.zero_point[0], *_limits(dtype)).astype(dtype)
    params = em.b.constant(f"{weights}/as_rows_of_{out}", table_q, qp)
    y = em.new(out, identity(len(em.g.shape(out))), qp, dtype)
    em.b.op("GATHER", [params, idx_flat], [y], options("GatherOptions", axis=0), origin=node.name)
    em.done.update(n.name for n in chain)
    em.absorbed.update({n.name: node.name for n in chain})


def _leaky_alpha(em, node):
    return float(em.g.attr(node, "alpha", 0.01))


HANDLERS = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "MaxPool": pool,
    "AveragePool": pool,
    "GlobalAveragePool": global_average_pool,
    "ReduceMean": reduce_mean,
    "Gemm": gemm,
    "MatMul": matmul,
    "Add": binary("ADD"),
    "Sub": binary("SUB"),
    "Mul": binary("MUL"),
    "Max": min_max("MAXIMUM"),
    "Min": min_max("MINIMUM"),
    "Div": div,
    "Relu": activation,
    "Clip": activation,
    "Sigmoid": unary("LOGISTIC", fixed=True),
    "Tanh": unary("TANH", fixed=True),
    "HardSwish": unary("HARD_SWISH"),
    "HardSigmoid": hard_sigmoid,
    "LeakyRelu": unary("LEAKY_RELU", "LeakyReluOptions", alpha=_leaky_alpha),
    "Softmax": softmax,
    "Reshape": reshape,
    "Flatten": reshape,
    "Squeeze": reshape,
    "Unsqueeze": reshape,
    "Transpose": transpose,
    "Identity": identity_op,
    "Concat": concat,
    "Slice": slice_op,
    "Split": split,
    "Pad": pad,
    "Resize": resize,
    "Gather": gather,
    "Where": where,
    "LayerNormalization": layer_norm,
    "Equal": one_hot_matmul,
    "Expand": expand,
    "ReduceMax": reduce_max,
    "GlobalMaxPool": global_max_pool,
    "ReduceSum": reduce_sum,
    "Exp": float_island("EXP"),
    "Sqrt": float_island("SQRT"),
    "Reciprocal": float_island("DIV", "DivOptions", numerator=1.0),
    "Log": float_island("LOG"),
}
