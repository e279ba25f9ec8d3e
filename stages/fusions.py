"""Graph rewrites every target benefits from. Each is output-preserving (tests/compile/test_fusions.py proves each one on
a hand-built graph) and touches only what it can prove: constants it folds are initializers, the
intermediate tensor it removes has no other reader (node, subgraph or graph output).

Each pass takes a ModelProto, edits it in place and returns how many rewrites it made.
"""

from __future__ import annotations

import numpy as np

DEFAULT = ("", "ai.onnx")


class _Graph:
    """Index of a graph: producers, consumers, initializers, known elem types and static shapes."""

    def __init__(self, model):
        from onnx import numpy_helper

        from edgeship.stages.onnx_util import _subgraph_inputs

        self.model = model
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.const = lambda name: numpy_helper.to_array(self.inits[name]) if name in self.inits else None
        self.producer = {o: n for n in self.graph.node for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in self.graph.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.pinned = {o.name for o in self.graph.output}
        for n in self.graph.node:
            self.pinned.update(_subgraph_inputs(n))
        self.types: dict[str, int] = {}
        self.shapes: dict[str, list[int] | None] = {}
        for vi in list(self.graph.input) + list(self.graph.value_info) + list(self.graph.output):
            if vi.type.HasField("tensor_type"):
                tt = vi.type.tensor_type
                self.types[vi.name] = tt.elem_type
                if tt.HasField("shape"):
                    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
                    self.shapes[vi.name] = dims
        for t in self.graph.initializer:
            self.types[t.name] = t.data_type
            self.shapes[t.name] = list(t.dims)

    def sole_consumer(self, tensor: str):
        """The one node reading `tensor`, or None if it has several readers or is pinned (graph output / subgraph)."""
        users = self.consumers.get(tensor, [])
        if len(users) != 1 or tensor in self.pinned:
            return None
        return users[0]

    def add_init(self, name_hint: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = name_hint
        i = 0
        while name in self.inits or name in self.producer:
            i += 1
            name = f"{name_hint}_{i}"
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), name=name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def rewire(self, old: str, new: str) -> None:
        """Every top-level reader of `old` reads `new` instead."""
        for n in self.graph.node:
            for k, i in enumerate(n.input):
                if i == old:
                    n.input[k] = new

    def replace(self, old, new, *also_remove) -> None:
        """Put node `new` where `old` was (keeps topological order), dropping `also_remove` in the same pass
        (node wrappers are copied on every rebuild, so do it in one)."""
        gone = {id(n) for n in also_remove}
        nodes = [new if n is old else n for n in self.graph.node if id(n) not in gone]
        del self.graph.node[:]
        self.graph.node.extend(nodes)

    def remove(self, *nodes) -> None:
        ids = {id(n) for n in nodes}
        keep = [n for n in self.graph.node if id(n) not in ids]
        del self.graph.node[:]
        self.graph.node.extend(keep)


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _is(node, op: str) -> bool:
    return node is not None and node.op_type == op and node.domain in DEFAULT


def _conv_params(g: _Graph, conv):
    """(weight array, bias array or None) when the Conv's weight (and bias) are initializers."""
    w = g.const(conv.input[1]) if len(conv.input) > 1 else None
    if w is None or w.dtype.kind != "f":
        return None
    b = None
    if len(conv.input) > 2 and conv.input[2]:
        b = g.const(conv.input[2])
        if b is None:
            return None
    return w, b


def _set_conv_params(g: _Graph, conv, w: np.ndarray, b: np.ndarray) -> None:
    base = conv.name or conv.output[0]
    conv.input[1] = g.add_init(f"{base}.weight_fused", w)
    bias = g.add_init(f"{base}.bias_fused", b)
    if len(conv.input) > 2:
        conv.input[2] = bias
    else:
        conv.input.append(bias)


def _conv_like(node) -> bool:
    """A Conv, or a ConvTranspose without groups: both fold a per-output-channel affine map into weights and bias."""
    return _is(node, "Conv") or (_is(node, "ConvTranspose") and int(_attr(node, "group", 1)) == 1)


def _out_channels_first(conv, w: np.ndarray) -> np.ndarray:
    """A ConvTranspose's weights are (C_in, C_out, k...): swap to output channels first (and back: self-inverse)."""
    return np.ascontiguousarray(np.swapaxes(w, 0, 1)) if conv.op_type == "ConvTranspose" else w


def _per_channel(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """A constant that broadcasts along the channel axis (axis 1 of a rank-`rank` tensor) only -> shape [C]."""
    if value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + tuple(value.shape)
    if any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    if shape[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)).copy() if shape[1] == channels else np.full(channels, value.reshape(-1)[0])


def fuse_conv_batchnorm(model) -> int:
    """BatchNormalization(Conv or ConvTranspose(x)) -> the conv with scaled weights and shifted bias."""

    def rewrite(g, bn) -> bool:
        if not _is(bn, "BatchNormalization") or len([o for o in bn.output if o]) != 1 or _attr(bn, "training_mode", 0):
            return False
        conv = g.producer.get(bn.input[0])
        if not _conv_like(conv) or g.sole_consumer(conv.output[0]) is not bn:
            return False
        params = _conv_params(g, conv)
        stats = [g.const(n) for n in bn.input[1:5]]
        if params is None or any(s is None for s in stats):
            return False
        w, b = _out_channels_first(conv, params[0]), params[1]
        scale, shift, mean, var = (s.astype(np.float64) for s in stats)
        eps = float(_attr(bn, "epsilon", 1e-5))
        factor = scale / np.sqrt(var + eps)
        channels = w.shape[0]
        if factor.shape != (channels,):
            return False
        new_w = (w.astype(np.float64) * factor.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        old_b = b.astype(np.float64) if b is not None else np.zeros(channels)
        new_b = ((old_b - mean) * factor + shift).astype(w.dtype)
        _set_conv_params(g, conv, _out_channels_first(conv, new_w), new_b)
        conv.output[0] = bn.output[0]
        g.remove(bn)
        return True

    return _rewrite_until_fixed_point(model, rewrite)


def _fold_channel_const_into_conv(model, op_type: str, rewrite_params) -> int:
    """Fold `op_type`(Conv or ConvTranspose(x), per-channel constant) into it, when it feeds nothing else.

    `rewrite_params(w, b, c)` returns the Conv's new (weights, bias) given the per-channel constant `c`."""

    def rewrite(g, node) -> bool:
        if not _is(node, op_type):
            return False
        for k in (0, 1):
            conv = g.producer.get(node.input[k])
            const = g.const(node.input[1 - k])
            if not _conv_like(conv) or const is None or g.sole_consumer(conv.output[0]) is not node:
                continue
            params = _conv_params(g, conv)
            if params is None:
                continue
            w, b = _out_channels_first(conv, params[0]), params[1]
            c = _per_channel(const, w.shape[0], w.ndim)
            if c is None or const.dtype != w.dtype:
                continue
            new_w, new_b = rewrite_params(w, b, c)
            _set_conv_params(g, conv, _out_channels_first(conv, new_w), new_b)
            conv.output[0] = node.output[0]
            g.remove(node)
            return True
        return False

    return _rewrite_until_fixed_point(model, rewrite)


def fuse_conv_add(model) -> int:
    """Add(Conv(x), per-channel constant) -> Conv bias."""

    def rewrite(w, b, c):
        base = b if b is not None else np.zeros(w.shape[0], dtype=w.dtype)
        return w, (base.astype(np.float64) + c).astype(w.dtype)

    return _fold_channel_const_into_conv(model, "Add", rewrite)


def fuse_conv_mul(model) -> int:
    """Mul(Conv(x), per-channel constant) -> Conv with scaled weights and bias."""

    def rewrite(w, b, c):
        new_w = (w.astype(np.float64) * c.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        new_b = ((b.astype(np.float64) if b is not None else np.zeros(w.shape[0])) * c).astype(w.dtype)
        return new_w, new_b

    return _fold_channel_const_into_conv(model, "Mul", rewrite)


def fuse_matmul_add(model) -> int:
    """Add(MatMul(A, W), bias) with A 2-D and W, bias constant -> Gemm(A, W, bias)."""
    from onnx import helper

    def rewrite(g, add) -> bool:
        if not _is(add, "Add"):
            return False
        for k in (0, 1):
            mm = g.producer.get(add.input[k])
            bias = g.const(add.input[1 - k])
            if not _is(mm, "MatMul") or bias is None or g.sole_consumer(mm.output[0]) is not add:
                continue
            w = g.const(mm.input[1])
            a_shape = g.shapes.get(mm.input[0])
            if w is None or w.ndim != 2 or a_shape is None or len(a_shape) != 2 or w.dtype.kind != "f":
                continue
            n = w.shape[1]
            if bias.dtype != w.dtype or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1) or bias.size not in (1, n):
                continue
            if a_shape[0] == 1 and bias.ndim == 2 and bias.shape[0] != 1:
                continue
            c = g.add_init(f"{mm.name or mm.output[0]}.bias", np.broadcast_to(bias.reshape(-1), (n,)).astype(w.dtype))
            gemm = helper.make_node("Gemm", [mm.input[0], mm.input[1], c], [add.output[0]], name=(mm.name or add.name or "") + "_gemm")
            g.replace(mm, gemm, add)
            return True
        return False

    return _rewrite_until_fixed_point(model, rewrite)


def _bypass(model, g: _Graph, node, source: str) -> bool:
    """Remove a pass-through node whose output equals `source`. When its output is a graph output,
    rename the producer's output instead (only if `source` is a plain intermediate)."""
    out = node.output[0]
    if out in g.pinned and out not in {o.name for o in model.graph.output}:
        return False  # read by a subgraph: leave it
    if out in {o.name for o in model.graph.output}:
        producer = g.producer.get(source)
        if producer is None or source in g.pinned or len(g.consumers.get(source, [])) != 1:
            return False
        producer.output[list(producer.output).index(source)] = out
        g.remove(node)
        return True
    g.rewire(out, source)
    g.remove(node)
    return True


def _rewrite_until_fixed_point(model, rewrite_one) -> int:
    """Apply `rewrite_one(g, node) -> bool` node by node; after each rewrite re-index the graph and scan it
    again from the top: a rewrite rebuilds the node list (protobuf copies), so a node object taken before
    it is stale, and identity checks against it (`sole_consumer(...) is node`) fail. Returns the count."""
    count = 0
    changed = True
    while changed:
        changed = False
        g = _Graph(model)
        for node in model.graph.node:
            if rewrite_one(g, node):
                count += 1
                changed = True
                break
    return count


def remove_identities(model) -> int:
    """Identity, and Dropout in inference (its mask output unused), pass their input through."""

    def rewrite(g, node) -> bool:
        passthrough = _is(node, "Identity") or (_is(node, "Dropout") and not any(o for o in node.output[1:])
                                                and not _attr(node, "training_mode", 0) and len(node.input) < 3)
        return passthrough and _bypass(model, g, node, node.input[0])

    return _rewrite_until_fixed_point(model, rewrite)


# casts that lose nothing: the round trip X -> T -> X is exact
_WIDER = {
    1: {11},  # float -> double
    10: {1, 11},  # float16 -> float, double
    16: {1, 11},  # bfloat16 -> float, double
    2: {4, 5, 6, 7, 12, 13},  # uint8 -> uint16, int16, int32, int64, uint32, uint64
    3: {5, 6, 7},  # int8 -> int16, int32, int64
    5: {6, 7},  # int16 -> int32, int64
    6: {7},  # int32 -> int64
    4: {6, 7, 12, 13},
}


def remove_redundant_casts(model) -> int:
    """Cast to the type a tensor already has; and X -> Cast(wider) -> Cast(back to X's type) round trips."""

    def rewrite(g, node) -> bool:
        if not _is(node, "Cast"):
            return False
        to = _attr(node, "to")
        src = node.input[0]
        if g.types.get(src) == to and _bypass(model, g, node, src):
            return True
        first = g.producer.get(src)
        if _is(first, "Cast"):
            origin = first.input[0]
            if g.types.get(origin) == to and _attr(first, "to") in _WIDER.get(to, set()):
                return _bypass(model, g, node, origin)
        return False

    return _rewrite_until_fixed_point(model, rewrite)


def remove_redundant_reshapes(model) -> int:
    """Reshape to the shape the tensor already has; Reshape(Reshape(x)) -> one Reshape (when the outer
    target shape is a constant without 0 entries, it does not depend on the inner result's dims)."""

    def rewrite(g, node) -> bool:
        if not _is(node, "Reshape"):
            return False
        src = node.input[0]
        in_shape, out_shape = g.shapes.get(src), g.shapes.get(node.output[0])
        if in_shape and out_shape and -1 not in in_shape and in_shape == out_shape and _bypass(model, g, node, src):
            return True
        inner = g.producer.get(src)
        target = g.const(node.input[1])
        if _is(inner, "Reshape") and target is not None and not np.any(target == 0) and g.sole_consumer(src) is node:
            node.input[0] = inner.input[0]
            g.remove(inner)
            return True
        return False

    return _rewrite_until_fixed_point(model, rewrite)


def simplify_activations(model) -> int:
    """Clip(x, 0, none) -> Relu(x); Relu(Relu(x)) -> Relu(x)."""
    from onnx import helper

    def clip_to_relu(g, node) -> bool:
        if not _is(node, "Clip"):
            return False
        lo = g.const(node.input[1]) if len(node.input) > 1 and node.input[1] else _attr(node, "min")
        hi_given = (len(node.input) > 2 and node.input[2]) or _attr(node, "max") is not None
        if lo is None or hi_given or np.asarray(lo).size != 1 or float(np.asarray(lo)) != 0.0:
            return False
        g.replace(node, helper.make_node("Relu", [node.input[0]], [node.output[0]], name=node.name))
        return True

    return _rewrite_until_fixed_point(model, clip_to_relu) + _rewrite_until_fixed_point(
        model, lambda g, node: _is(node, "Relu") and _is(g.producer.get(node.input[0]), "Relu")
        and _bypass(model, g, node, node.input[0]))


def divide_by_constant_as_multiply(model) -> int:
    """Div(x, c) with c a float constant -> Mul(x, 1/c). Quantizers and integer runtimes have a
    quantized Mul (onnxruntime's QLinearMul, TFLite MUL) but no quantized Div, so a Div by a constant
    (hard-swish's `/ 6` in Paddle and Keras exports) leaves a float island in an otherwise integer model."""

    def rewrite(g, node) -> bool:
        if not _is(node, "Div"):
            return False
        c = g.const(node.input[1])
        if c is None or c.dtype.kind != "f" or not np.all(np.isfinite(c)) or np.any(c == 0):
            return False
        with np.errstate(over="ignore"):
            reciprocal = (1.0 / c.astype(np.float64)).astype(c.dtype)
        if not np.all(np.isfinite(reciprocal)) or np.any(reciprocal == 0):
            return False  # a subnormal divisor: 1/c overflows, or a huge one underflows
        node.op_type = "Mul"
        node.input[1] = g.add_init(f"{node.name or node.output[0]}.reciprocal", reciprocal)
        return True

    return _rewrite_until_fixed_point(model, rewrite)


def fold_hard_sigmoid_into_conv(model) -> int:
    """HardSigmoid(Conv(x)) = clip(alpha*Conv(x) + beta, 0, 1) -> Clip(Conv'(x), 0, 1) with alpha and beta in
    the Conv's weights and bias. The squeeze-excitation gate of MobileNetV3-style networks: a Clip after a
    Conv is absorbed by the quantized Conv's output range, where a HardSigmoid has no quantized kernel."""
    from onnx import helper

    from edgeship.stages.normalize import default_opset

    def rewrite(g, node) -> bool:
        if not _is(node, "HardSigmoid"):
            return False
        conv = g.producer.get(node.input[0])
        if not _is(conv, "Conv") or g.sole_consumer(conv.output[0]) is not node:
            return False
        params = _conv_params(g, conv)
        if params is None:
            return False
        w, b = params
        alpha, beta = float(_attr(node, "alpha", 0.2)), float(_attr(node, "beta", 0.5))
        old_b = b.astype(np.float64) if b is not None else np.zeros(w.shape[0])
        _set_conv_params(g, conv, (w.astype(np.float64) * alpha).astype(w.dtype), (old_b * alpha + beta).astype(w.dtype))
        base = node.name or node.output[0]
        if default_opset(model) >= 11:
            bounds = [g.add_init(f"{base}.min", np.array(0.0, dtype=w.dtype)), g.add_init(f"{base}.max", np.array(1.0, dtype=w.dtype))]
            clip = helper.make_node("Clip", [node.input[0], *bounds], [node.output[0]], name=node.name)
        else:
            clip = helper.make_node("Clip", [node.input[0]], [node.output[0]], name=node.name, min=0.0, max=1.0)
        g.replace(node, clip)
        return True

    return _rewrite_until_fixed_point(model, rewrite)


PASSES = {
    "remove_identities": remove_identities,
    "remove_redundant_casts": remove_redundant_casts,
    "remove_redundant_reshapes": remove_redundant_reshapes,
    "simplify_activations": simplify_activations,
    "fuse_conv_batchnorm": fuse_conv_batchnorm,
    "fuse_conv_add": fuse_conv_add,
    "fuse_conv_mul": fuse_conv_mul,
    "fuse_matmul_add": fuse_matmul_add,
    "divide_by_constant_as_multiply": divide_by_constant_as_multiply,
    "fold_hard_sigmoid_into_conv": fold_hard_sigmoid_into_conv,
}

__all__ = ["PASSES"] + list(PASSES)
