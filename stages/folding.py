"""Constant folding: evaluate every node whose inputs are all constants, replace it by initializers.

We evaluate the constant part of the graph with onnxruntime itself (graph optimizations off), so the
folded values are exactly what the runtime would compute; onnx's reference evaluator is the fallback.
`Shape`/`Size` of tensors whose shape is fully known (after pinning and shape inference) become
constants too, which is what turns exporter-generated shape arithmetic (Shape -> Gather -> Concat ->
Reshape) into plain constants. Random ops, Q/DQ (folding DequantizeLinear would undo quantization),
control flow and ops whose output would be large (ConstantOfShape/Expand/Tile/Range) are left alone.
"""

from __future__ import annotations

import numpy as np

NEVER_FOLD = {
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "If", "Loop", "Scan",
}
BLOWUP_OPS = {"ConstantOfShape", "Expand", "Tile", "Range"}
MAX_BLOWUP_ELEMS = 1 << 18


def _static_shapes(graph) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if all(d >= 0 for d in dims):
            shapes[vi.name] = dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _shape_value(node, shape: list[int]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    rank = len(shape)
    start = _attr(node, "start", 0)
    end = _attr(node, "end", rank)
    start = max(0, min(rank, start + rank if start < 0 else start))
    end = max(0, min(rank, end + rank if end < 0 else end))
    return np.array(shape[start:end], dtype=np.int64)


def _has_subgraph(node) -> bool:
    import onnx

    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _evaluate(model, nodes, initializers, wanted: list[str]) -> dict[str, np.ndarray]:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "fold", [], [helper.ValueInfoProto(name=n) for n in wanted], initializer=initializers)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        from edgeship.stages.onnx_util import session

        sess = session(sub)
        values = sess.run(wanted, {})
        return dict(zip(wanted, values))
    except Exception:
        from onnx.reference import ReferenceEvaluator

        values = ReferenceEvaluator(sub).run(wanted, {})
        return {n: np.asarray(v) for n, v in zip(wanted, values)}


def fold_constants(model) -> dict[str, int]:
    """Fold in place. Returns counts: nodes folded, shape ops folded."""
    from onnx import numpy_helper

    graph = model.graph
    shapes = _static_shapes(graph)
    const_names = {t.name for t in graph.initializer}
    inits_by_name = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    foldable: list = []
    shape_values: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in NEVER_FOLD or _has_subgraph(node):
            continue
        if any(o in graph_outputs for o in node.output):
            continue
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes and node.input[0] not in const_names:
            shape_values[node.output[0]] = _shape_value(node, shapes[node.input[0]])
            const_names.add(node.output[0])
            continue
        if node.op_type in BLOWUP_OPS:
            out_shape = shapes.get(node.output[0])
            if out_shape is None or int(np.prod(out_shape)) > MAX_BLOWUP_ELEMS:
                continue
        if all((not i) or i in const_names for i in node.input) and (node.input or node.op_type == "Constant"):
            foldable.append(node)
            const_names.update(o for o in node.output if o)
    if not foldable and not shape_values:
        return {"folded": 0, "shape_ops": 0}

    folded_outputs = {o for n in foldable for o in n.output if o} | set(shape_values)
    folded_ids = {id(n) for n in foldable}
    consumed: set[str] = set(graph_outputs)
    from edgeship.stages.onnx_util import _subgraph_inputs

    for node in graph.node:
        if id(node) in folded_ids or (node.op_type in ("Shape", "Size") and node.output[0] in shape_values):
            continue
        consumed.update(node.input)
        consumed.update(_subgraph_inputs(node))
    wanted = sorted(n for n in folded_outputs if n in consumed and n not in shape_values)

    values: dict[str, np.ndarray] = {}
    if wanted:
        needed_inits = {i for n in foldable for i in n.input if i in inits_by_name}
        shape_inits = [numpy_helper.from_array(v, name=k) for k, v in shape_values.items()]
        try:
            values = _evaluate(model, foldable, [inits_by_name[n] for n in sorted(needed_inits)] + shape_inits, wanted)
        except Exception:
            foldable, wanted, values = [], [], {}
            folded_ids = set()
    new_inits = [numpy_helper.from_array(np.asarray(v), name=k) for k, v in values.items()]
    new_inits += [numpy_helper.from_array(v, name=k) for k, v in shape_values.items()]  # unused ones: dead-code pass
    keep = [n for n in graph.node if id(n) not in folded_ids
            and not (n.op_type in ("Shape", "Size") and n.output[0] in shape_values)]
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(new_inits)
    return {"folded": len(folded_ids), "shape_ops": len(shape_values)}


__all__ = ["fold_constants"]
