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


def validation_samples(ctx, workdir: Path) -> Path | None:
    """The manifest's validation inputs as one .npz for backends that calibrate or check with real data
    (None: the backend makes synthetic ones and says so)."""
    import numpy as np

    try:
        data = ctx.validation
    except Exception:  # a broken data file is validate's error to report, with its file:line
        return None
    if not data:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "validation_samples.npz"
    np.savez(path, **data)
    return path


def mac_share(graph, placement: dict) -> float:
    """Percent of the model's MACs on the accelerator (nodes a backend computes inside another, like a
    one-hot MatMul done as a GATHER, run no MACs and are left out)."""
    from edgeship.targets.costmodel import node_work

    units = {r["name"]: r for r in placement.get("nodes", [])}
    total = on = 0
    for n in graph.active_nodes():
        row = units.get(n.name, {})
        if row.get("absorbed_into"):
            continue
        macs = node_work(graph, n).macs
        total += macs
        on += macs if row.get("unit") == "accelerator" else 0
    return round(100.0 * on / total, 2) if total else 100.0


@register
class LowerStage(BaseStage):
    name = "lower"
    version = "2"
    uses_target = True

    def config(self, ctx) -> dict:
        backend, options = backend_spec(ctx.target_data)
        return {"backend": backend, "backend_version": get_backend(backend).version, "options": options}

    def input_digests(self, ctx) -> dict:
        digests = super().input_digests(ctx)
        digests["float_model"] = ctx.digests.get("float_model", "")
        digests["validation"] = ctx.data_digest("validation")
        return digests

    def run(self, ctx):
        if ctx.model_path is None:
            raise BuildError("no model: the import stage must run first", stage=self.name)
        backend = backend_for(ctx.target_data)
        workdir = ctx.workdir / "lower"
        lowered = backend.lower(Path(ctx.model_path), ctx.target, workdir, float_model=ctx.float_model_path,
                                samples=validation_samples(ctx, workdir))
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

            graph = target_graph(ctx, self.name)
            ctx.report["legalize"] = vendor_placement(legal, section, graph, ctx.target)
            section["placement_applied"] = True
            section["macs_on_accelerator_pct"] = mac_share(graph, ctx.report["legalize"])
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
