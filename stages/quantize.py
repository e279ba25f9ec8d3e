"""Stage `quantize`: the manifest's policy -> a QDQ (or dynamic, or float) model the target can run.

Modes: `none` (keep float), `dynamic` (int8 weights, activation scales at run time), `static` (QDQ
with calibration: minmax, percentile, entropy), `auto` (build candidates, measure them, keep the best
that meets the accuracy budget; see `stages/quant_auto.py`). Target constraints come from the profile
through `quant_policy.resolve_policy`; power-of-two scales are applied and re-checked here.

Without calibration data, synthetic inputs from the declared shapes are used and the report says
so: that is a weaker guarantee (activation ranges of random inputs are not those of real ones).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import onnx

from edgeship.errors import BuildError
from edgeship.pipelines.data import synthetic_inputs
from edgeship.stages import quant_finite, quant_ort, quant_pow2
from edgeship.stages.base import BaseStage
from edgeship.stages.quant_policy import QuantPolicy, resolve_policy
from edgeship.stages.registry import register

SYNTHETIC_CALIBRATION_SAMPLES = 32


def match_keep_float(model_path: Path, globs: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Node names matched by the `keep_float` globs, and the globs that matched nothing."""
    names = [n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node if n.name]
    matched, unmatched = [], []
    for pattern in globs:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        (matched.extend(h for h in hits if h not in matched)) if hits else unmatched.append(pattern)
    return matched, unmatched


def apply_power_of_two(path: Path) -> dict:
    """Rewrite the QDQ model at `path` to power-of-two scales; fail if any scale is left non-compliant."""
    model = onnx.load(str(path))
    counts = quant_pow2.to_power_of_two(model)
    left = quant_pow2.non_power_of_two_scales(model)
    if left:
        raise BuildError(f"{len(left)} scale(s) could not be made powers of two (e.g. {left[0]})", stage="quantize")
    onnx.save(model, str(path))
    return {**counts, "violations": 0}


def calibration_data(ctx, policy: QuantPolicy) -> tuple[dict, dict]:
    """(arrays, facts): the manifest's .npz, else synthetic inputs flagged as a weaker guarantee."""
    data = ctx.calibration
    rel = ctx.setting("quantization", "calibration", "data")
    if data is not None:
        return data, {"source": str(rel), "synthetic": False}
    n = min(policy.samples, SYNTHETIC_CALIBRATION_SAMPLES)
    warning = ("calibration used synthetic inputs from the declared shapes (no quantization.calibration.data): "
               "activation ranges may not match real data - a weaker guarantee")
    if warning not in ctx.warnings:
        ctx.warnings.append(warning)
    return synthetic_inputs(ctx.inputs, n, seed=0), {"source": "synthetic", "synthetic": True, "warning": warning}


@register
class QuantizeStage(BaseStage):
    name = "quantize"
    version = "8"  # 3: integer-only backends get every op quantized; 4: task-aware goals and recovery; 5: ±inf constants made finite; 6: auto scores TFLite targets under LiteRT; 7: entropy in the per-tensor calibration choice; 8: int16 candidates bias-corrected
    uses_target = True

    def _auto(self, ctx) -> bool:
        return ctx.setting("quantization", "mode", default="auto") == "auto"

    def config(self, ctx) -> dict:
        config = {"quantization": ctx.setting("quantization", default={}) or {}}
        if self._auto(ctx):  # auto scores candidates against the accuracy budget on the validation inputs
            config.update(accuracy=ctx.setting("budget", "accuracy"), task=ctx.setting("model", "task"),
                          validation_samples=ctx.setting("validation", "samples"))
        return config

    def input_digests(self, ctx) -> dict:
        digests = super().input_digests(ctx)
        digests["float_model"] = ctx.digests.get("float_model", "")
        digests["calibration"] = ctx.data_digest("calibration")
        if self._auto(ctx):
            digests["validation"] = ctx.data_digest("validation")
        return digests

    def run(self, ctx):
        policy = resolve_policy(ctx.spec, ctx.target_data, ctx.where)
        src = Path(ctx.model_path)
        if ctx.float_model_path is None:
            ctx.float_model_path = src
        report: dict = {"mode": policy.mode, "policy": policy.describe(), "notes": list(policy.notes)}
        ctx.report[self.name] = report
        if policy.mode == "none":
            report["selected"] = "float"
            return ctx
        if policy.mode == "auto" and not policy.integer_allowed:
            report["selected"] = "float"
            formats = ", ".join(str(d) for d in (ctx.target_data.get("quantization") or {}).get("dtypes") or [])
            report["notes"].append(f"target {ctx.target_name} runs formats edgeship's quantizer does not emit ({formats}): "
                                   "kept float for the vendor toolchain to quantize")
            return ctx

        work = ctx.workdir / "quantize"
        work.mkdir(parents=True, exist_ok=True)
        pre = work / "preprocessed.onnx"
        report["preprocess"] = quant_ort.preprocess(src, pre)
        keep, unmatched = match_keep_float(pre, policy.keep_float)
        report["keep_float"] = {"globs": list(policy.keep_float), "nodes": keep, "unmatched_globs": unmatched}
        for pattern in unmatched:
            ctx.warnings.append(f"quantization.keep_float: {pattern!r} matches no node")
        out = ctx.new_model_path(self.name)

        if policy.mode == "dynamic":
            quant_ort.quantize_dynamic_int8(pre, out, policy, keep, policy.per_channel)
            report["selected"] = "dynamic"
        else:
            data, facts = calibration_data(ctx, policy)
            calib, bounds = quant_ort.bounded_calibration(data, policy.method, policy.samples, pre)
            report["calibration"] = {**facts, **bounds, "method": policy.method}
            finite = quant_finite.make_finite(pre, calib)  # an inf constant would get an inf scale
            if finite:
                report["finite_constants"] = finite
                if not finite["applied"]:
                    ctx.warnings.append(f"quantize: {finite['reason']}")
            if policy.mode == "static":
                quant_ort.quantize_static_qdq(pre, out, policy, calib, work / "calibration.json", keep, policy.per_channel)
                if policy.power_of_two:
                    report["power_of_two"] = apply_power_of_two(out)
                report["selected"] = "static-per-channel" if policy.per_channel else "static-per-tensor"
            else:
                from edgeship.stages.quant_auto import choose

                chosen = choose(ctx, policy, src, pre, calib, keep, work, report)
                ctx.extra["layer_precision"] = report.get("layer_precision") or {}  # for backends (TFLite, Vela)
                if chosen is None:
                    return ctx  # float won: the model is left as it is
                out.write_bytes(Path(chosen).read_bytes())
        ctx.model_path = out
        return ctx


def report_html(section: dict) -> str:
    """report.html's quantize fragment: goal, per-layer sensitivity chart, chosen precision per layer."""
    from edgeship.stages.quant_report import report_html as render

    return render(section)
