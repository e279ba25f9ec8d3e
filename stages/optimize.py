"""Stage `optimize`: the target-independent fusions and cleanups (see stages/fusions.py), repeated until
nothing changes, then dead-node removal, shape inference, and a check that the outputs are unchanged.
The result is also the float reference (`ctx.float_model_path`) that quantize and validate compare to.
"""

from __future__ import annotations

from edgeship.errors import BuildError
from edgeship.stages.base import BaseStage
from edgeship.stages.registry import register


def optimize_model(model, passes: list[str] | None = None, rounds: int = 5) -> dict[str, int]:
    """Apply the passes in place until a round changes nothing. Returns rewrites per pass."""
    from edgeship.stages.fusions import PASSES
    from edgeship.stages.normalize import infer_shapes
    from edgeship.stages.onnx_util import remove_dead_nodes

    chosen = passes or list(PASSES)
    counts = {name: 0 for name in chosen}
    for _ in range(rounds):
        changed = 0
        for name in chosen:
            n = PASSES[name](model)
            counts[name] += n
            changed += n
            if n:
                del model.graph.value_info[:]
                inferred, _ = infer_shapes(model)
                if inferred is not model:
                    model.CopyFrom(inferred)
        if not changed:
            break
    counts["dead_nodes_removed"] = remove_dead_nodes(model.graph)
    return counts


@register
class OptimizeStage(BaseStage):
    name = "optimize"
    version = "3"  # 2: every fold per pass, Div by a constant, HardSigmoid(Conv); 3: ConvTranspose folds BatchNorm/Add/Mul too

    def config(self, ctx):
        from edgeship.stages.fusions import PASSES

        return {"passes": list(PASSES)}

    def run(self, ctx):
        import onnx

        from edgeship.stages.normalize import infer_shapes
        from edgeship.stages.onnx_util import check_equivalent, load_model, save_model

        source = ctx.model_path
        model = load_model(source, stage=self.name)
        before = len(model.graph.node)
        counts = optimize_model(model)
        model, _ = infer_shapes(model)
        try:
            onnx.checker.check_model(model, full_check=False)
        except Exception as err:
            raise BuildError(f"the optimized model is invalid: {str(err).splitlines()[0]}", stage=self.name) from None
        out = save_model(model, ctx.new_model_path(self.name))
        check = check_equivalent(source, out, ctx.sample_inputs(2), stage=self.name)
        ctx.model_path = out
        ctx.float_model_path = out
        ctx.report[self.name] = {
            "rewrites": {k: v for k, v in counts.items()},
            "nodes": {"before": before, "after": len(model.graph.node)},
            "equivalence": check,
        }
        return ctx


def report_html(section: dict) -> str:
    """Rewrites per pass as a bar chart (the report renderer includes it in the optimize section)."""
    from edgeship.stages.report import bar_chart

    rewrites = {k: v for k, v in (section.get("rewrites") or {}).items() if v}
    nodes = section.get("nodes") or {}
    head = f"<p>{nodes.get('before', '?')} nodes → {nodes.get('after', '?')} nodes; outputs unchanged " \
           f"(max relative difference {float((section.get('equivalence') or {}).get('max_rel_diff', 0.0)):.2g}).</p>"
    return head + bar_chart(rewrites.items(), "Rewrites per optimization pass", "")
