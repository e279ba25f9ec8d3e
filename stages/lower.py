"""Stage `lower`: hand the quantized ONNX to the target's backend (targets/backends), which emits the
chip's native artifact with the vendor's compiler and returns the vendor's own report.

The native files go into ctx.files under `lowered:<artifact name>` (package copies them into the
artifact), the runtime that runs them into ctx.extra["runtime"], and the report into
report["lower"]. Where the vendor places nodes itself (Vela's CPU operations), the legalize section is
rewritten to that placement, so estimate and the report show the compiler's answer.
"""

from __future__ import annotations

from pathlib import Path

from edgeship.errors import BuildError
from edgeship.stages.base import BaseStage
from edgeship.stages.registry import register
from edgeship.targets.backends import backend_for, backend_spec, get_backend
from edgeship.targets.backends.placement import vendor_placement

FILE_PREFIX = "lowered:"


def lowered_files(ctx) -> dict[str, Path]:
    """Artifact name -> file for what the lower stage produced (empty when it did not run)."""
    return {k[len(FILE_PREFIX):]: Path(v) for k, v in ctx.files.items() if k.startswith(FILE_PREFIX)}


@register
class LowerStage(BaseStage):
    name = "lower"
    version = "2"
    uses_target = True

    def config(self, ctx) -> dict:
        backend, options = backend_spec(ctx.target_data)
        return {"backend": backend, "backend_version": get_backend(backend).version, "options": options}

    def run(self, ctx):
        if ctx.model_path is None:
            raise BuildError("no model: the import stage must run first", stage=self.name)
        backend = backend_for(ctx.target_data)
        lowered = backend.lower(Path(ctx.model_path), ctx.target, ctx.workdir / "lower")
        for key in [k for k in ctx.files if k.startswith(FILE_PREFIX)]:
            del ctx.files[key]
        for name, path in lowered.files.items():
            ctx.files[FILE_PREFIX + name] = Path(path)
        ctx.extra["runtime"] = lowered.runtime
        ctx.extra["lowered_io"] = lowered.io
        section = {"backend": backend.name, "runtime": lowered.runtime, "files": sorted(lowered.files), **lowered.report}
        check = section.get("self_check") or {}
        if check and check.get("within_1_lsb_pct", 100.0) < 99.0:
            ctx.warnings.append(f"lower: {backend.name} self-check: {check['within_1_lsb_pct']}% of output elements within "
                                f"1 LSB of onnxruntime on the QDQ model (max {check['max_lsb']} LSB): integer rounding "
                                "differences accumulate through layers")
        legal = ctx.report.get("legalize")
        if legal and section.get("placement"):
            from edgeship.stages.legalize import target_graph

            ctx.report["legalize"] = vendor_placement(legal, section, target_graph(ctx, self.name), ctx.target)
            section["placement_applied"] = True
        ctx.report[self.name] = section
        return ctx


def report_html(section: dict) -> str:
    """The backend's own view: CPU fallbacks with Vela's reasons, the slowest layers, the self-check."""
    from html import escape

    parts = [f"<p>backend <b>{escape(str(section.get('backend')))}</b>, runtime {escape(str(section.get('runtime')))}, "
             f"files: {escape(', '.join(section.get('files') or []))}</p>"]
    check = section.get("self_check")
    if check:
        parts.append(f"<p>self-check (LiteRT vs onnxruntime on the QDQ model): {check['within_1_lsb_pct']}% of output "
                     f"elements within 1 LSB, max {check['max_lsb']} LSB</p>")
    cpu = section.get("cpu_ops") or []
    if cpu:
        rows = "".join(f"<tr><td>{escape(c['op'])}</td><td>{escape(c.get('onnx_node') or c['name'])}</td>"
                       f"<td>{escape('; '.join(c.get('reasons') or []))}</td></tr>" for c in cpu)
        parts.append(f"<table><tr><th>CPU op</th><th>node</th><th>why (Vela)</th></tr>{rows}</table>")
    layers = sorted(section.get("per_layer") or [], key=lambda r: -r["cycles"])[:12]
    if layers:
        rows = "".join(f"<tr><td>{escape(r['name'])}</td><td>{escape(r['op'])}</td><td>{r['cycles']}</td>"
                       f"<td>{r['macs']}</td><td>{r['mac_util_pct']}%</td></tr>" for r in layers)
        parts.append("<table><tr><th>layer (slowest first)</th><th>op</th><th>cycles</th><th>MACs</th>"
                     f"<th>MAC utilisation</th></tr>{rows}</table>")
    return "".join(parts)
