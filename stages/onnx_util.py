"""Small ONNX helpers the float stages share: load/save (external data aware), shapes and dtypes of
value infos, dead-node removal, and running a model in onnxruntime to prove two models equivalent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from edgeship.errors import BuildError

TWO_GB = 2_000_000_000


def load_model(path: Path, stage: str = "import"):
    """onnx.load with external data; a bad file becomes one BuildError line."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BuildError(f"{path}: not a readable ONNX model ({first})", stage=stage) from None


def save_model(model, path: Path) -> Path:
    """Save inline when it fits protobuf's 2 GB limit, else with one external-data file `<name>.data`."""
    import onnx

    path = Path(path)
    if model.ByteSize() < TWO_GB:
        onnx.save(model, str(path))
    else:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
    return path


def dims_of(value_info) -> list:
    """Shape of a value info: ints for fixed dims, the dim_param string (or None) for dynamic ones."""
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return []
    out: list = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def dtype_name(value_info) -> str:
    import onnx

    elem = value_info.type.tensor_type.elem_type
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem).lower()


def graph_inputs(model) -> list:
    """Real inputs (older exporters also list initializers as graph inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def remove_dead_nodes(graph) -> int:
    """Drop nodes whose outputs reach no graph output, then initializers nothing uses. Returns nodes removed."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(i for i in node.input if i)
            needed.update(_subgraph_inputs(node))
    removed = len(graph.node) - len(keep)
    if removed:
        keep.reverse()
        del graph.node[:]
        graph.node.extend(keep)
    unused = [t for t in graph.initializer if t.name not in needed]
    for t in unused:
        graph.initializer.remove(t)
    inits = {t.name for t in graph.initializer}
    for vi in [vi for vi in graph.input if vi.name in {u.name for u in unused} and vi.name not in inits]:
        graph.input.remove(vi)
    live = needed | {o for n in graph.node for o in n.output}
    for vi in [vi for vi in graph.value_info if vi.name not in live]:
        graph.value_info.remove(vi)
    return removed


def _subgraph_inputs(node) -> Iterable[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the outer scope."""
    import onnx

    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            produced = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                for i in n.input:
                    if i and i not in produced:
                        yield i
                yield from _subgraph_inputs(n)


def session(model_or_path, threads: int = 1):
    """An onnxruntime CPU session with graph optimizations off: we compare the models as written."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = str(model_or_path) if isinstance(model_or_path, (str, Path)) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def run_samples(model_or_path, samples: dict[str, np.ndarray], output_names: list[str] | None = None) -> list[list[np.ndarray]]:
    """Run each sample (arrays shaped (N, *input_shape)) and return, per sample, the output arrays.
    `model_or_path` may also be an onnxruntime session already made."""
    sess = model_or_path if hasattr(model_or_path, "get_outputs") else session(model_or_path)
    names = output_names or [o.name for o in sess.get_outputs()]
    from edgeship.pipelines.data import sample_at

    n = next(iter(samples.values())).shape[0] if samples else 1
    return [sess.run(names, sample_at(samples, i)) for i in range(n)]


def max_difference(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]], names: list[str]) -> tuple[float, str, float]:
    """(largest abs difference relative to the output's magnitude, output name, absolute difference)."""
    worst = (0.0, "", 0.0)
    for ref_outs, cand_outs in zip(reference, candidate):
        for name, r, c in zip(names, ref_outs, cand_outs):
            r = np.asarray(r)
            c = np.asarray(c)
            if r.shape != c.shape:
                return float("inf"), f"{name} (shape {list(c.shape)} vs {list(r.shape)})", float("inf")
            if r.dtype.kind in "fc":
                diff = float(np.max(np.abs(r.astype(np.float64) - c.astype(np.float64)))) if r.size else 0.0
                scale = max(1.0, float(np.max(np.abs(r))) if r.size else 1.0)
                rel = diff / scale
            else:
                diff = float(np.count_nonzero(r != c))
                rel = diff
            if rel > worst[0]:
                worst = (rel, name, diff)
    return worst


def check_equivalent(reference_model, candidate_model, samples: dict[str, np.ndarray], stage: str,
                     tolerance: float = 1e-4) -> dict:
    """Run both models on the samples; BuildError naming the output when they differ beyond tolerance."""
    cand_sess = session(candidate_model)
    names = [o.name for o in cand_sess.get_outputs()]  # the candidate may keep a subset (model.outputs)
    cand = run_samples(cand_sess, samples, names)
    del cand_sess
    ref = run_samples(reference_model, samples, names)
    rel, name, diff = max_difference(ref, cand, names)
    if rel > tolerance:
        raise BuildError(
            f"output {name!r} changed by {diff:.3g} (relative {rel:.3g} > {tolerance:g}) after {stage}: "
            "this is a bug in the transformation; rerun with `stages:` omitting it to work around", stage=stage)
    return {"samples": int(next(iter(samples.values())).shape[0]) if samples else 0, "max_abs_diff": diff, "max_rel_diff": rel}
