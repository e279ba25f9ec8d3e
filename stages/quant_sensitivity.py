"""Per-layer quantization sensitivity: which nodes lose the most accuracy when quantized.

Both the float model and its QDQ candidate are run with every intermediate tensor exposed. A QDQ
model keeps each original node's output name (Q/DQ pairs are inserted after it), so the same tensor
can be compared in both. A node's sensitivity is the SQNR it loses: the worst SQNR of its inputs minus
the SQNR of its own output, i.e. the noise its quantized inputs and weights add, compared as
relative noise energy (10^(-SQNR/10)) so a first layer fed exact inputs is not favoured. `auto` keeps the top
nodes of this ranking in float when the fully quantized model misses the accuracy budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from edgeship.pipelines.metrics import SQNR_CEILING_DB, sqnr_db
from edgeship.stages.quant_measure import run_all, session

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def _expose_all(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in names:
        if name not in present:
            out.graph.output.append(onnx.ValueInfoProto(name=name))
    return out


def _tensor_values(model: onnx.ModelProto, names: list[str], data: Mapping[str, np.ndarray], workdir: Path, tag: str) -> dict:
    path = workdir / f"sensitivity-{tag}.onnx"
    onnx.save(_expose_all(model, names), str(path))
    sess = session(path, threads=0)
    available = [o.name for o in sess.get_outputs()]
    values = run_all(sess, data)
    path.unlink(missing_ok=True)
    return dict(zip(available, values))


def rank_nodes(float_path: Path, qdq_path: Path, data: Mapping[str, np.ndarray], workdir: Path) -> list[dict]:
    """Quantized nodes ordered most-sensitive first: [{node, op_type, sqnr_in_db, sqnr_out_db, added_noise}]."""
    float_model = onnx.load(str(float_path))
    qdq_model = onnx.load(str(qdq_path))
    float_nodes = {n.name: n for n in float_model.graph.node if n.name}
    qdq_producers = {o: n for n in qdq_model.graph.node for o in n.output}
    quantized = [n for n in qdq_model.graph.node
                 if n.op_type not in QDQ_OPS and n.name in float_nodes
                 and any(qdq_producers.get(i) is not None and qdq_producers[i].op_type == "DequantizeLinear" for i in n.input)]
    if not quantized:
        return []
    graph_inputs = {i.name for i in float_model.graph.input}
    initializers = {t.name for t in float_model.graph.initializer}
    # the same tensor may be renamed in the QDQ model (a graph output gets "_QuantizeLinear_Input"):
    # pair node outputs by node name and position
    qdq_nodes = {n.name: n for n in qdq_model.graph.node if n.name}
    to_qdq = {}
    for name, fnode in float_nodes.items():
        qnode = qdq_nodes.get(name)
        if qnode is not None and len(qnode.output) == len(fnode.output):
            to_qdq.update({f: q for f, q in zip(fnode.output, qnode.output) if f and q})
    wanted = sorted({t for n in quantized for t in list(float_nodes[n.name].input) + list(float_nodes[n.name].output)
                     if t in to_qdq})
    ref = _tensor_values(float_model, wanted, data, workdir, "float")
    cand = _tensor_values(qdq_model, [to_qdq[t] for t in wanted], data, workdir, "qdq")

    def sqnr(name: str) -> float:
        q = to_qdq.get(name)
        if q is not None and name in ref and q in cand and ref[name].shape == cand[q].shape:
            return sqnr_db(ref[name], cand[q])
        return SQNR_CEILING_DB

    ranking = []
    for n in quantized:
        s_in = min((sqnr(i) for i in float_nodes[n.name].input if i), default=SQNR_CEILING_DB)
        s_out = min((sqnr(o) for o in float_nodes[n.name].output if o), default=SQNR_CEILING_DB)
        added = max(0.0, 10 ** (-s_out / 10) - 10 ** (-s_in / 10))  # relative noise energy this node adds
        ranking.append({"node": n.name, "op_type": n.op_type, "sqnr_in_db": round(s_in, 2),
                        "sqnr_out_db": round(s_out, 2), "added_noise": float(f"{added:.4g}")})
    ranking.sort(key=lambda r: (-r["added_noise"], r["sqnr_out_db"]))
    return ranking
