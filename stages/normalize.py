"""Stage `normalize`: take a real export as it comes and make it a well-formed, static float graph.

Steps: pin dynamic dims from `model.inputs` (a dim left unpinned is an error naming the input and the
dim), drop initializers from the graph inputs (old exporters list them there), upgrade the default
`ai.onnx` opset to >= 13 (per-channel QDQ needs DequantizeLinear's `axis`), infer shapes (onnx's
inference, with a fallback when data propagation chokes), fold constants, drop dead nodes, and
finally prove the result gives the same outputs as the original on sample inputs.
"""

from __future__ import annotations

from edgeship.errors import BuildError
from edgeship.stages.base import BaseStage
from edgeship.stages.registry import register

MIN_OPSET = 13
DEFAULT_DOMAINS = ("", "ai.onnx")


def _where(ctx, *path) -> str:
    file, line, col = ctx.where(*path)
    return f"{file}:{line}:{col}"


def pin_inputs(model, pins: dict, ctx=None) -> dict[str, list[int]]:
    """Fix every input dim: from the model when static, else from `pins` (name -> dims). Returns the shapes."""
    from edgeship.stages.onnx_util import dims_of, graph_inputs

    real = {vi.name: vi for vi in graph_inputs(model)}
    loc = (lambda *p: _where(ctx, *p) + ": ") if ctx is not None else (lambda *p: "")
    for name in pins or {}:
        if name not in real:
            raise BuildError(f"{loc('model', 'inputs', name)}model.inputs.{name}: the model has no input {name!r}; "
                             f"its inputs are {sorted(real)}", stage="normalize")
    symbols: dict[str, int] = {}
    pinned: dict[str, list[int]] = {}
    for name, vi in real.items():
        dims = dims_of(vi)
        pin = (pins or {}).get(name)
        tensor_type = vi.type.tensor_type
        has_shape = tensor_type.HasField("shape")
        if pin is not None and has_shape and len(pin) != len(dims):
            raise BuildError(f"{loc('model', 'inputs', name)}model.inputs.{name}: {len(pin)} dims given but input "
                             f"{name!r} has rank {len(dims)} ({_fmt(dims)})", stage="normalize")
        if not has_shape:
            if pin is None:
                raise BuildError(f"{loc('model', 'inputs')}input {name!r} has no declared shape: pin it in model.inputs "
                                 f"(e.g. model.inputs: {{{name}: [1, ...]}})", stage="normalize")
            dims = [None] * len(pin)
            for _ in pin:
                tensor_type.shape.dim.add()
        shape: list[int] = []
        for i, dim in enumerate(dims):
            want = pin[i] if pin is not None else None
            if isinstance(dim, int):
                if want is not None and want != -1 and int(want) != dim:
                    raise BuildError(f"{loc('model', 'inputs', name)}model.inputs.{name}[{i}]: input {name!r} dim {i} "
                                     f"is fixed at {dim} in the model, the manifest says {want}", stage="normalize")
                shape.append(dim)
                continue
            if want is None or not isinstance(want, int) or isinstance(want, bool) or want <= 0:
                label = f" ({dim!r})" if isinstance(dim, str) else ""
                example = [d if isinstance(d, int) else 1 for d in dims]
                raise BuildError(f"{loc('model', 'inputs')}input {name!r} dim {i}{label} is dynamic: pin it in model.inputs "
                                 f"(e.g. model.inputs: {{{name}: {example}}})", stage="normalize")
            if isinstance(dim, str):
                symbols.setdefault(dim, int(want))
            d = tensor_type.shape.dim[i]
            d.Clear()
            d.dim_value = int(want)
            shape.append(int(want))
        pinned[name] = shape
    _apply_symbols(model.graph, symbols)
    return pinned


def select_outputs(model, names: list[str], ctx=None) -> None:
    """Keep only the named graph outputs (the dead-node pass then drops what only fed the others)."""
    if not names:
        return
    present = [o.name for o in model.graph.output]
    for name in names:
        if name not in present:
            where = (_where(ctx, "model", "outputs") + ": ") if ctx is not None else ""
            raise BuildError(f"{where}model.outputs: the model has no output {name!r}; its outputs are {present}",
                             stage="normalize")
    keep = [o for o in model.graph.output if o.name in names]
    del model.graph.output[:]
    model.graph.output.extend(keep)


def _apply_symbols(graph, symbols: dict[str, int]) -> None:
    """Replace pinned symbolic dims in outputs; drop stale value_info (shape inference redoes it)."""
    for vi in graph.output:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in symbols:
                value = symbols[d.dim_param]
                d.Clear()
                d.dim_value = value
            elif not (d.HasField("dim_value") and d.dim_value > 0):
                d.Clear()  # unknown (or an exporter's -1): inference fills it in
    del graph.value_info[:]


def _fmt(dims) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in dims) + "]"


def drop_initializer_inputs(model) -> None:
    """Old exporters (IR < 4) list every weight as a graph input too; a runtime then treats the weights
    as overridable inputs and cannot fold them. Drop them from the inputs (raising the IR version to 4+)."""
    import onnx

    inits = {t.name for t in model.graph.initializer}
    listed = [vi for vi in model.graph.input if vi.name in inits]
    for vi in listed:
        model.graph.input.remove(vi)
    try:
        needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    except Exception:
        needed = 4
    model.ir_version = max(int(model.ir_version), 4, int(needed))


def default_opset(model) -> int:
    for op in model.opset_import:
        if op.domain in DEFAULT_DOMAINS:
            return int(op.version)
    return 0


def upgrade_opset(model, target: int = MIN_OPSET):
    """Upgrade the ai.onnx opset to `target` when below it; other domains (ai.onnx.ml, ...) keep their version."""
    import onnx
    from onnx import version_converter

    current = default_opset(model)
    if current >= target or current == 0:
        return model, current, current
    try:
        return version_converter.convert_version(model, target), current, target
    except Exception as err:
        first_error = str(err).splitlines()[0] if str(err) else type(err).__name__
    others = [(op.domain, op.version) for op in model.opset_import if op.domain not in DEFAULT_DOMAINS]
    if others:  # some converter builds refuse foreign domains: convert the default domain alone
        stripped = onnx.ModelProto()
        stripped.CopyFrom(model)
        del stripped.opset_import[:]
        stripped.opset_import.append(onnx.helper.make_opsetid("", current))
        try:
            converted = version_converter.convert_version(stripped, target)
            for domain, version in others:
                converted.opset_import.append(onnx.helper.make_opsetid(domain, version))
            return converted, current, target
        except Exception:
            pass
    raise BuildError(f"cannot upgrade the model from opset {current} to {target}: {first_error}", stage="normalize")


def infer_shapes(model):
    """onnx shape inference with data propagation; without it when that fails; else leave shapes as they are."""
    import onnx

    if model.ByteSize() >= 2_000_000_000:
        return model, "skipped (model over 2 GB)"
    for data_prop, label in ((True, "onnx"), (False, "onnx (without data propagation)")):
        try:
            return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=data_prop), label
        except Exception as err:
            last = str(err).splitlines()[0] if str(err) else type(err).__name__
    return model, f"failed ({last}); shapes left as exported"


@register
class NormalizeStage(BaseStage):
    name = "normalize"
    version = "1"
    config_schema = {
        "type": "object",
        "properties": {
            "inputs": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": ["integer", "null"]}}},
            "min_opset": {"type": "integer"},
            "outputs": {"type": "array", "items": {"type": "string"}},
        },
    }

    def config(self, ctx):
        return {"inputs": ctx.setting("model", "inputs") or {}, "min_opset": MIN_OPSET,
                "outputs": ctx.setting("model", "outputs") or []}

    def run(self, ctx):
        import onnx

        from edgeship.stages.folding import fold_constants
        from edgeship.stages.onnx_util import (check_equivalent, dims_of, dtype_name, graph_inputs, load_model,
                                               remove_dead_nodes, save_model)

        source = ctx.model_path
        model = load_model(source, stage=self.name)
        nodes_before = len(model.graph.node)
        pinned = pin_inputs(model, ctx.setting("model", "inputs") or {}, ctx)
        select_outputs(model, ctx.setting("model", "outputs") or [], ctx)
        model, opset_from, opset_to = upgrade_opset(model, MIN_OPSET)
        drop_initializer_inputs(model)
        model, inference = infer_shapes(model)
        folded = {"folded": 0, "shape_ops": 0}
        for _ in range(4):  # folding exposes static shapes, which exposes more folding
            step = fold_constants(model)
            folded = {k: folded[k] + step[k] for k in folded}
            if not step["folded"] and not step["shape_ops"]:
                break
            remove_dead_nodes(model.graph)
            model, inference = infer_shapes(model)
        dead = remove_dead_nodes(model.graph)
        try:
            onnx.checker.check_model(model, full_check=False)
        except Exception as err:
            raise BuildError(f"the normalized model is invalid: {str(err).splitlines()[0]}", stage=self.name) from None

        ctx.inputs = {vi.name: {"shape": dims_of(vi), "dtype": dtype_name(vi)} for vi in graph_inputs(model)}
        ctx.outputs = {vi.name: {"shape": dims_of(vi), "dtype": dtype_name(vi)} for vi in model.graph.output}
        out = save_model(model, ctx.new_model_path(self.name))
        samples = ctx.sample_inputs(2)
        try:
            check = check_equivalent(source, out, samples, stage=self.name)
        except BuildError:
            raise
        except Exception as err:  # the original does not run in onnxruntime: nothing to compare against
            check = {"skipped": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]}
            ctx.warnings.append("normalize: outputs not compared with the original model, which does not run in "
                                f"onnxruntime ({check['skipped'][:120]})")
            from edgeship.stages.onnx_util import session

            try:
                session(out)
            except Exception as err2:
                raise BuildError(f"the normalized model does not load in onnxruntime: {str(err2).splitlines()[0]}",
                                 stage=self.name) from None
        ctx.model_path = out
        ctx.float_model_path = out
        ctx.report[self.name] = {
            "pinned_inputs": pinned,
            "opset": {"from": opset_from, "to": opset_to},
            "shape_inference": inference,
            "folded_nodes": folded["folded"],
            "folded_shape_ops": folded["shape_ops"],
            "dead_nodes_removed": dead,
            "nodes": {"before": nodes_before, "after": len(model.graph.node)},
            "outputs": ctx.outputs,
            "equivalence": check,
        }
        return ctx


def report_html(section: dict) -> str:
    """One readable line per normalization step (the renderer adds the raw table below it)."""
    import html

    opset = section.get("opset") or {}
    nodes = section.get("nodes") or {}
    pinned = ", ".join(f"{k} {v}" for k, v in (section.get("pinned_inputs") or {}).items())
    items = [
        f"inputs pinned: {pinned or 'none'}",
        f"opset {opset.get('from')} → {opset.get('to')}",
        f"shape inference: {section.get('shape_inference')}",
        f"constants folded: {section.get('folded_nodes', 0)} nodes, {section.get('folded_shape_ops', 0)} Shape/Size ops",
        f"dead nodes removed: {section.get('dead_nodes_removed', 0)}; nodes {nodes.get('before')} → {nodes.get('after')}",
        f"outputs vs original: max relative difference {(section.get('equivalence') or {}).get('max_rel_diff', 'not checked')}",
    ]
    return "<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in items) + "</ul>"
