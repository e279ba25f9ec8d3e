"""Models where only some layers are quantized, made by graph surgery instead of re-running the quantizer.

The sensitivity analysis needs one model per layer ("only this layer quantized"); running
onnxruntime's quantizer per layer costs seconds each. A QDQ model already holds every layer's
quantization (the Q/DQ pairs on its inputs, its int8 weights), so a subset is the float model with
those pairs copied in front of the chosen layers only: the same scales, the same rounding, no
re-calibration. A layer can take its pairs from different QDQ models (int8 or int16 activations),
which is how mixed A8/A16 is measured. These models serve measurement; the shipped model is
always onnxruntime's own QDQ output (whose kernels fuse Q/DQ around the op).
"""

from __future__ import annotations

from typing import Mapping

import onnx

from edgeship.stages.normalize import default_opset

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def _producers(model: onnx.ModelProto) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


def quantized_nodes(qdq: onnx.ModelProto) -> list[str]:
    """Names of the non-Q/DQ nodes that read at least one DequantizeLinear output, in graph order."""
    producers = _producers(qdq)
    names = []
    for n in qdq.graph.node:
        if n.op_type in QDQ_OPS or not n.name:
            continue
        if any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input):
            names.append(n.name)
    return names


def compose(float_model: onnx.ModelProto, choices: Mapping[str, onnx.ModelProto]) -> onnx.ModelProto:
    """The float model with each node in `choices` quantized as in its QDQ model, as onnxruntime does it.

    Nodes are matched by name (onnxruntime's quantizer keeps them). A chosen node's constant inputs
    (weights, bias) are read through their quantized initializer -> DQ; its activation inputs and
    outputs that are quantized in the QDQ model get the same Q -> DQ, read by *every* consumer of
    that tensor (onnxruntime quantizes a tensor once, not per reader).
    """
    out = at_opset(float_model, max((default_opset(s) for s in choices.values()), default=0))
    have = {t.name for t in out.graph.initializer}
    float_nodes = {n.name: n for n in out.graph.node if n.name}
    added: list[onnx.NodeProto] = []
    cache: dict[int, tuple] = {}
    quantized_tensors: dict[str, tuple] = {}  # float tensor -> (Q node, DQ node, initializers)

    def tables(qdq: onnx.ModelProto):
        key = id(qdq)
        if key not in cache:
            consumers: dict[str, list] = {}
            for n in qdq.graph.node:
                for i in n.input:
                    consumers.setdefault(i, []).append(n)
            cache[key] = ({n.name: n for n in qdq.graph.node if n.name}, _producers(qdq),
                          {t.name: t for t in qdq.graph.initializer}, consumers)
        return cache[key]

    def copy_init(inits: dict, name: str) -> None:
        if name and name not in have and name in inits:
            out.graph.initializer.append(inits[name])
            have.add(name)

    for node_name, qdq in choices.items():
        fnode = float_nodes.get(node_name)
        nodes, producers, inits, consumers = tables(qdq)
        qnode = nodes.get(node_name)
        if fnode is None or qnode is None:
            continue
        for j, q_in in enumerate(qnode.input):
            dq = producers.get(q_in)
            if j >= len(fnode.input) or dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in inits:  # a constant: weight or bias, stored quantized, read by this node
                tag = f"{fnode.input[j]}__es_{len(added)}"
                for name in dq.input:
                    copy_init(inits, name)
                added.append(onnx.helper.make_node("DequantizeLinear", list(dq.input), [f"{tag}_dq"],
                                                   name=f"{tag}_DQ", **_attrs(dq)))
                fnode.input[j] = f"{tag}_dq"
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                quantized_tensors.setdefault(fnode.input[j], (q, dq, inits))
        for f_out, q_out in zip(fnode.output, qnode.output):
            q = next((n for n in consumers.get(q_out, []) if n.op_type == "QuantizeLinear"), None)
            dq = next((n for n in consumers.get(q.output[0], []) if n.op_type == "DequantizeLinear"), None) if q else None
            if dq is not None:
                quantized_tensors.setdefault(f_out, (q, dq, inits))

    readers: dict[str, list] = {}
    for n in out.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in out.graph.output}
    for tensor, (q, dq, inits) in quantized_tensors.items():
        if tensor in graph_outputs:  # the graph output itself is read quantized: produce it from the DQ
            _rename_output(out, tensor, f"{tensor}__es_float")
            for name in list(q.input[1:]) + list(dq.input[1:]):
                copy_init(inits, name)
            tag = f"{tensor}__es_{len(added)}"
            added.append(onnx.helper.make_node("QuantizeLinear", [f"{tensor}__es_float", *q.input[1:]], [f"{tag}_q"],
                                               name=f"{tag}_Q", **_attrs(q)))
            added.append(onnx.helper.make_node("DequantizeLinear", [f"{tag}_q", *dq.input[1:]], [tensor],
                                               name=f"{tag}_DQ", **_attrs(dq)))
            continue
        if not readers.get(tensor):
            continue
        for name in list(q.input[1:]) + list(dq.input[1:]):
            copy_init(inits, name)
        tag = f"{tensor}__es_{len(added)}"
        added.append(onnx.helper.make_node("QuantizeLinear", [tensor, *q.input[1:]], [f"{tag}_q"], name=f"{tag}_Q", **_attrs(q)))
        added.append(onnx.helper.make_node("DequantizeLinear", [f"{tag}_q", *dq.input[1:]], [f"{tag}_dq"],
                                           name=f"{tag}_DQ", **_attrs(dq)))
        for reader in readers[tensor]:
            for j, i in enumerate(reader.input):
                if i == tensor:
                    reader.input[j] = f"{tag}_dq"
    _insert_before_consumers(out, added)
    return out


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _rename_output(model: onnx.ModelProto, old: str, new: str) -> None:
    """Rename tensor `old` where it is produced and read (not in graph.output)."""
    for n in model.graph.node:
        for j, o in enumerate(n.output):
            if o == old:
                n.output[j] = new
        for j, i in enumerate(n.input):
            if i == old:
                n.input[j] = new


def _insert_before_consumers(model: onnx.ModelProto, added: list[onnx.NodeProto]) -> None:
    """Keep the graph topologically sorted: each new Q/DQ goes right before its first reader."""
    if not added:
        return
    produced_by_new = {o: n for n in added for o in n.output}
    ordered: list[onnx.NodeProto] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        node = produced_by_new.get(name)
        if node is None or node.name in placed:
            return
        for i in node.input:
            place(i)
        placed.add(node.name)
        ordered.append(node)

    for n in model.graph.node:
        for i in n.input:
            place(i)
        ordered.append(n)
    for n in added:  # read by nobody inside the graph (they produce a graph output): at the end
        place(n.output[0])
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def at_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """A copy of `model` at default-domain opset >= `version` (int16 Q/DQ need 21), converted properly."""
    if default_opset(model) >= version:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out
    from onnx import version_converter

    return version_converter.convert_version(model, version)
