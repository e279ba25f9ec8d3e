#!/usr/bin/env python3
"""Ethos-U through the real compiler: per model x Ethos-U configuration, what Vela says against what
edgeship estimates, and whether the integer model that ships (LiteRT) keeps the float accuracy.

    python bench/backends.py                         # 3 examples + PP-OCR classifier + magika, E84/U65/U85
    python bench/backends.py --only kws,ppocr-cls --targets infineon-psoc-edge-e84

Columns: NPU share of MACs (nodes Vela put on the NPU, by MAC count), Vela's inference time, the
roofline estimate with the profile's factors and its ratio to Vela, the same after fitting the
roofline's Ethos-U factors to Vela on these models (targets/backends/vela_calibration.py), SRAM and
flash as Vela allocates them, LiteRT-vs-float accuracy (the pipeline's metric) and the build time.
Under each target's fit: the leave-one-model-out ratios (each model with the factors fitted on the others).
A model the integer emitter cannot lower shows its first per-node reason instead.
"""

from __future__ import annotations

import argparse
from collections import Counter
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGETS = ("infineon-psoc-edge-e84", "arm-ethos-u65", "arm-ethos-u85")
STAGES = ["import", "normalize", "optimize", "quantize", "legalize", "lower", "estimate", "validate"]


def _write_pipeline(folder: Path, name: str, model: Path, inputs: dict, data: dict | None = None) -> Path:
    """A pipeline for a real-weight model; `data` (input name -> (N, *shape) array) is written as the
    calibration and validation .npz, else both are synthetic (said in the report)."""
    import numpy as np
    import yaml

    local = folder / f"{name}.onnx"  # manifests may only read files under their own folder
    shutil.copyfile(model, local)
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": name},
           "model": {"path": str(local), "inputs": inputs, "task": "classification"},
           "target": TARGETS[0],
           "quantization": {"mode": "static", "weights": {"dtype": "int8", "symmetric": True},
                            "activations": {"dtype": "int8"}, "calibration": {"samples": 16, "method": "minmax"}},
           "validation": {"samples": 16}}
    if data:
        np.savez(folder / f"{name}-data.npz", **data)
        doc["quantization"]["calibration"]["data"] = str(folder / f"{name}-data.npz")
        doc["validation"]["data"] = str(folder / f"{name}-data.npz")
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def models(folder: Path) -> list[tuple[str, Path]]:
    ex = REPO / "examples"
    if not (ex / "kws" / "models" / "kws.onnx").is_file():
        import subprocess

        subprocess.run([sys.executable, str(ex / "make_all.py")], check=True, capture_output=True, timeout=300)
    out = [("kws", ex / "kws" / "pipeline-psoc.yaml"), ("fraud", ex / "fraud" / "pipeline.yaml"),
           ("llm", ex / "llm" / "pipeline.yaml")]
    try:
        import rapidocr_onnxruntime

        ocr = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
        out.append(("ppocr-cls", _write_pipeline(folder, "ppocr-cls", ocr, {"x": [1, 3, 48, 192]})))
    except ImportError:
        print("(rapidocr-onnxruntime not installed: PP-OCR classifier skipped)")
    try:
        import magika

        mg = Path(magika.__file__).parent / "models" / "standard_v3_3" / "model.onnx"
        import numpy as np

        rng = np.random.default_rng(0)  # byte values as files have them (0-255, 256 = padding)
        data = {"bytes": rng.integers(0, 257, (32, 1, 2048)).astype(np.int32)}
        out.append(("magika", _write_pipeline(folder, "magika", mg, {"bytes": [1, 2048]}, data)))
    except ImportError:
        print("(magika not installed: skipped)")
    return out


def first_reason(error) -> str:
    text = str(error)
    for line in text.splitlines():
        cells = [c for c in line.split("  ") if c.strip()]
        if len(cells) >= 3 and not line.startswith(("node", "-")):
            return f"{cells[1].strip()}: {cells[2].strip()[:70]}"
    return text.splitlines()[0][:90]


def build_one(manifest: Path, target: str) -> dict:
    from edgeship.errors import BudgetExceeded
    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress, build

    t0 = time.perf_counter()
    doc = load_documents(manifest)[0]
    # the bench compares lowering and latency on integer-only NPUs: llm's float softmax island
    # (keep_float) and its accuracy budget would stop the build at quantize ("no fully integer
    # candidate met the accuracy goal"); the accuracy column still shows what LiteRT keeps
    (doc.data.get("quantization") or {}).pop("keep_float", None)
    accuracy = (doc.data.get("budget") or {}).get("accuracy") or {}
    if "min" in accuracy:
        accuracy["min"] = -1.0
    result = build(doc, target=target, stages=STAGES, use_cache=False, keep_workdir=True,
                   progress=Progress(quiet=True))
    row = {"seconds": time.perf_counter() - t0, "ctx": result.ctx, "workdir": result.ctx.workdir}
    if result.error is not None and (not isinstance(result.error, BudgetExceeded) or "lower" not in result.ctx.report):
        row["error"] = first_reason(result.error)
        return row
    rep = result.ctx.report
    lower, est = rep.get("lower") or {}, rep.get("estimate") or {}
    absorbed = set((lower.get("absorbed") or {}))  # e.g. a one-hot MatMul done as a GATHER: no MACs run
    macs = [(n.get("macs") or 0, n.get("unit")) for n in est.get("per_node", []) if n["name"] not in absorbed]
    total = sum(m for m, _ in macs)
    row.update(npu_mac_pct=100.0 * sum(m for m, u in macs if u == "accelerator") / total if total else 100.0,
               vela_ms=lower.get("latency_ms"), roofline_ms=est.get("roofline_latency_ms"),
               sram_kb=(lower.get("memory") or {}).get("sram_kb"),
               flash_kb=sum((lower.get("memory") or {}).get(k) or 0 for k in ("off_chip_flash_kb", "on_chip_flash_kb", "dram_kb")),
               cpu_ops=[c["op"] for c in lower.get("cpu_ops") or []],
               self_check=(lower.get("self_check") or {}).get("within_1_lsb_pct"))
    acc = (rep.get("validate") or {}).get("accuracy", {}).get("primary", {})
    metric = result.ctx.setting("budget", "accuracy", "metric") or ("top1_agreement" if "top1_agreement" in acc else "cosine")
    row["accuracy"] = f"{metric} {acc.get(metric, float('nan')):.3f}" if acc else "-"
    return row


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args(argv)
    from edgeship.stages.legalize import target_graph
    from edgeship.targets import load_target
    from edgeship.targets.backends.vela_calibration import Sample, fit, leave_one_out

    folder = Path(tempfile.mkdtemp(prefix="edgeship-bench-backends-"))
    wanted = {m for m in args.only.split(",") if m}
    results: dict[tuple[str, str], dict] = {}
    samples: dict[str, list[Sample]] = {}
    try:
        for name, manifest in models(folder):
            if wanted and name not in wanted:
                continue
            for target in args.targets.split(","):
                row = build_one(manifest, target)
                results[(name, target)] = row
                if row.get("vela_ms"):
                    ctx = row["ctx"]
                    samples.setdefault(target, []).append(
                        Sample(name, target_graph(ctx, "bench"), ctx.report["legalize"], row["vela_ms"]))
                shutil.rmtree(row["workdir"], ignore_errors=True)
        fits = {t: fit(s, load_target(t)) for t, s in samples.items()}
        held_out = {t: leave_one_out(s, load_target(t)) for t, s in samples.items() if len(s) > 1}
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    head = ["model", "target", "NPU MACs", "Vela ms", "roofline ms", "ratio", "calibrated", "ratio", "SRAM KB",
            "flash/DRAM KB", "LiteRT vs float", "1-LSB %", "build s"]
    rows = [head]
    notes = []
    for (name, target), r in results.items():
        if "error" in r:
            rows.append([name, target, "not lowered", "-", "-", "-", "-", "-", "-", "-", "-", "-", f"{r['seconds']:.1f}"])
            notes.append(f"{name} on {target}: not lowered: {r['error']}")
            continue
        cal = next((x for x in fits.get(target, {}).get("rows", []) if x["model"] == name), {})
        ratio = r["roofline_ms"] / r["vela_ms"] if r.get("vela_ms") and r.get("roofline_ms") else float("nan")
        rows.append([name, target, f"{r['npu_mac_pct']:.1f}%", f"{r['vela_ms']:.3f}", f"{r['roofline_ms']:.3f}",
                     f"{ratio:.2f}x", f"{cal.get('estimate_ms', float('nan')):.3f}", f"{cal.get('ratio', float('nan')):.2f}x",
                     f"{r['sram_kb']:.1f}", f"{r['flash_kb']:.1f}", r["accuracy"], f"{r['self_check']:.1f}",
                     f"{r['seconds']:.1f}"])
        if r["cpu_ops"]:
            counts = Counter(r["cpu_ops"])
            notes.append(f"{name} on {target}: on the CPU: " + ", ".join(f"{op} x{n}" for op, n in counts.most_common()))
    print(table(rows))
    print()
    print("\n".join(notes))
    print()
    for target, f in fits.items():
        print("   " + ", ".join(f"{x['model']} {x['estimate_ms']:.3f}/{x['vela_ms']:.3f}" for x in f["rows"]))
        print(f"{target}: fitted cost_model {f['cost_model']}  (worst ratio {f['worst_ratio']:.2f}x over "
              f"{len(f['rows'])} models)")
        if target in held_out:
            worst = max(max(x["ratio"], 1 / x["ratio"]) for x in held_out[target])
            print(f"   held out (fitted on the other models): " + ", ".join(
                f"{x['model']} {x['ratio']:.2f}x" for x in held_out[target]) + f"  (worst {worst:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
