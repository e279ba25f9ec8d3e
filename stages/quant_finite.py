"""Make ±inf float constants finite before quantization, leaving the float model's outputs unchanged.

Exporters write masks and reduction seeds as ±inf (jax's softmax does `max(-inf, reduce_max(x))`,
attention masks add -inf). onnxruntime's quantizer takes such a constant's range at face value: its
scale is inf, the tensors it flows into get an inf (or NaN) scale too, and the QDQ model computes
garbage (magika: cosine 0.19 vs float). Nothing the quantizer does with the constant can be right,
so the graph is rewritten first:

- `Max(x, -inf)` / `Min(x, +inf)` whose constant does not broadcast `x` to a bigger shape is `x`
  itself: the node is removed (exact for every finite x, and nothing is left to quantize);
- any other ±inf becomes ∓B, with B = 2M + 128 rounded up to a power of two, where M is the largest
  magnitude the consuming nodes' other inputs reach on the calibration samples (and the constant's
  finite entries). B keeps the constant below (above) the data, and by at least 128 below any data
  value minus another, so a masked entry still gives exactly 0 after Exp/Softmax in float32
  (exp(-104) already underflows). It costs the consuming tensor's range a factor of about 2-3.

The rewritten model is run on the samples beside the original: outputs must be bitwise identical,
else the original is kept and the report says why.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgeship.stages.onnx_util import run_samples, session

IDENTITY_SEED = {"Max": -np.inf, "Min": np.inf}  # op -> the constant that makes it an identity
MARGIN = 128.0  # exp(-128) is 0 in float32: a masked entry stays exactly masked


def _nonfinite_constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Float initializers and Constant-node tensors holding ±inf, by tensor name."""
    found = {}
    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [(n.output[0], a.t) for n in model.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    for name, tensor in tensors:
        if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            if np.isinf(numpy_helper.to_array(tensor)).any():
                found[name] = tensor
    return found


def _observe(model: onnx.ModelProto, names: list[str], samples: dict) -> dict[str, tuple[tuple, float]]:
    """(shape, largest finite magnitude) of each named tensor over the samples."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in present)
    seen: dict[str, tuple[tuple, float]] = {}
    for outs in run_samples(session(probe), samples, names):
        for name, value in zip(names, outs):
            value = np.asarray(value, dtype=np.float64)
            finite = value[np.isfinite(value)]
            peak = float(np.abs(finite).max()) if finite.size else 0.0
            seen[name] = (value.shape, max(peak, seen.get(name, ((), 0.0))[1]))
    return seen


def _is_identity(node, const: str, array: np.ndarray, observed: dict) -> bool:
    seed = IDENTITY_SEED.get(node.op_type)
    if seed is None or len(node.input) != 2 or not np.all(array == seed):
        return False
    other = node.input[1] if node.input[0] == const else node.input[0]
    if other not in observed:
        return False
    shape = observed[other][0]
    try:
        return tuple(np.broadcast_shapes(array.shape, shape)) == tuple(shape)
    except ValueError:
        return False


def _bypass(graph, node, keep: str) -> None:
    """Remove `node`, its consumers reading `keep` instead (an Identity when it was a graph output)."""
    out = node.output[0]
    if out in {o.name for o in graph.output}:
        graph.node.insert(list(graph.node).index(node), onnx.helper.make_node("Identity", [keep], [out], name=node.name))
    else:
        for n in graph.node:
            for i, name in enumerate(n.input):
                if name == out:
                    n.input[i] = keep
    graph.node.remove(node)


def _drop_unused(graph, names) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for t in [t for t in graph.initializer if t.name in names and t.name not in used]:
        graph.initializer.remove(t)
    for n in [n for n in graph.node if n.op_type == "Constant" and n.output[0] in names and n.output[0] not in used]:
        graph.node.remove(n)


def finite_bound(peak: float) -> float:
    """B: a power of two at least 2*peak + MARGIN (see the module docstring)."""
    return float(2.0 ** math.ceil(math.log2(2.0 * peak + MARGIN)))


def rewrite(model: onnx.ModelProto, samples: dict) -> tuple[onnx.ModelProto, dict]:
    """The model with no ±inf constant, and what was done: {"removed": [...], "replaced": {name: B}}."""
    consts = _nonfinite_constants(model)
    if not consts:
        return model, {}
    new = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = list(new.graph.node)  # taken before any removal
    consumers = {name: [n for n in nodes if name in n.input] for name in consts}
    others = sorted({i for ns in consumers.values() for n in ns for i in n.input if i and i not in consts})
    observed = _observe(model, others, samples)
    done: dict = {"removed": [], "replaced": {}}
    for name, tensor in consts.items():
        array = numpy_helper.to_array(tensor)
        left = []
        for node in consumers[name]:
            if _is_identity(node, name, array, observed):
                other = node.input[1] if node.input[0] == name else node.input[0]
                _bypass(new.graph, node, other)
                done["removed"].append(f"{node.op_type} {node.name}")
            else:
                left.append(node)
        if not left:
            continue
        finite = np.abs(array[np.isfinite(array)])
        peak = max([observed[i][1] for n in left for i in n.input if i in observed] + [float(finite.max()) if finite.size else 0.0])
        bound = finite_bound(peak)
        fixed = numpy_helper.from_array(np.clip(array, -bound, bound).astype(array.dtype), name)
        target = next((t for t in new.graph.initializer if t.name == name), None)
        if target is None:
            target = next(a.t for n in new.graph.node if n.op_type == "Constant" and n.output[0] == name
                          for a in n.attribute if a.name == "value")
        target.CopyFrom(fixed)
        done["replaced"][name] = bound
    _drop_unused(new.graph, set(consts))
    return new, done


def _identical(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> bool:
    return all(np.array_equal(x, y, equal_nan=True) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def make_finite(path: Path, samples: dict) -> dict:
    """Rewrite the model at `path` in place when it has ±inf constants; the report section (empty if none)."""
    model = onnx.load(str(path))
    try:
        new, done = rewrite(model, samples)
    except Exception as err:  # noqa: BLE001 - onnxruntime refused the probe: quantize as before, and say so
        if not _nonfinite_constants(model):
            return {}
        return {"applied": False, "reason": f"±inf constants kept: could not measure their consumers' inputs "
                                            f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})"}
    if not done:
        return {}
    if not _identical(run_samples(model, samples), run_samples(new, samples)):
        return {**done, "applied": False,
                "reason": "finite constants would change the float outputs on the calibration samples: kept ±inf in "
                          + ", ".join(list(done["replaced"]) + done["removed"])}
    onnx.save(new, str(path))
    return {**done, "applied": True, "float_outputs_identical": True}
