"""Stage `legalize`: hold the (quantized) graph against the target profile.

Every node is placed on the accelerator, on the host fallback, or rejected, with the reason; the
accelerator nodes form partitions and the boundary crossings are listed. A rejected node fails the
build with a table of the offending nodes and the fix. The model itself is not changed.
"""

from __future__ import annotations

from edgeship.errors import BuildError, LegalizeError
from edgeship.stages.base import BaseStage
from edgeship.stages.registry import register
from edgeship.targets.graphinfo import load_graph
from edgeship.targets.placement import legalize, rejection_table
from edgeship.targets.svg import placement_svg


def input_shapes(ctx) -> dict:
    return {name: list(spec.get("shape") or []) for name, spec in (ctx.inputs or {}).items() if spec.get("shape")}


def alternatives(section: dict, current: str) -> list[str]:
    """Other packaged targets whose accelerator runs every rejected op type (for the fix line)."""
    try:
        from edgeship.targets import list_targets

        ops = {r["op_type"] for r in section["rejected"]}
        out = []
        for prof in list_targets():
            if prof.name != current and all(prof.supports_op(op) is not None or prof.host_runs(op) for op in ops):
                out.append(prof.name)
        return out[:5]
    except Exception:  # a broken catalog must not hide the real error
        return []



def backend_judged(ctx, section: dict) -> dict:
    """For a compiler backend (integer TFLite, Vela) its emitter decides what is rejected, per node."""
    from edgeship.targets.backends import backend_spec, integer_only

    if not integer_only(ctx.target_data):
        return section
    from edgeship.targets.backends import get_backend
    from edgeship.targets.backends.placement import backend_legalize

    name, _ = backend_spec(ctx.target_data)
    get_backend(name)  # a missing extra fails here, with the pip line
    from edgeship.targets.backends.tflite_emit import unsupported_nodes

    return backend_legalize(section, name, unsupported_nodes(ctx.model_path))


def target_graph(ctx, stage: str):
    """The current model as a shape-annotated graph for the target: what legalize and estimate both read."""
    if ctx.target is None:
        raise BuildError(f"no target profile loaded: {stage} needs the manifest's `target`", stage=stage)
    if ctx.model_path is None:
        raise BuildError("no model: the import stage must run first", stage=stage)
    return load_graph(ctx.model_path, input_shapes(ctx), ctx.target)

@register
class LegalizeStage(BaseStage):
    name = "legalize"
    version = "6"  # 5: accelerator_is_host in the section; 6: the backend's own placement (Vela's CPU ops)
    uses_target = True

    def run(self, ctx):
        graph = target_graph(ctx, self.name)
        section = legalize(graph, ctx.target)
        section = backend_judged(ctx, section)
        ctx.report[self.name] = section
        if section["rejected"]:
            n = len(section["rejected"])
            fallback = "no host fallback" if not section["host_fallback"] else "the host cannot run them either"
            table = rejection_table(section, alternatives(section, ctx.target_name))
            raise LegalizeError(f"{n} node(s) cannot run on {ctx.target_name} ({fallback}); fix them or keep them "
                                f"in float via quantization.keep_float, or choose another target:\n{table}",
                                stage=self.name)
        return ctx


def report_html(section: dict) -> str:
    """Placement view per partition (inline SVG) for the build report."""
    return placement_svg(section)
