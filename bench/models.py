#!/usr/bin/env python3
"""Per model, in one run: float p50, edgeship's artifact p50, onnxruntime's own `quantize_static` with
its defaults (where it yields a valid model at all), the ratios, accuracy against float, and size.

    python bench/models.py                 # the three examples, PP-OCR's classifier, light squeezenet
    python bench/models.py --all           # + every onnx backend-test light_* model (slow, big)
    python bench/models.py --only kws,fraud --repeats 5

Latency: single-thread p50 on this host, the three models measured interleaved (round-robin) so
background load hits all alike; the median over `--repeats` such measurements. The goal checked in
the last column: edgeship's model is never slower than the better of float and the default
quantizer (within --tolerance for timer noise), while meeting the pipeline's accuracy budget.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _examples() -> list[dict]:
    ex = REPO / "examples"
    return [
        {"name": "kws (DS-CNN)", "pipeline": ex / "kws" / "pipeline.yaml"},
        {"name": "llm (decoder)", "pipeline": ex / "llm" / "pipeline.yaml"},
        {"name": "fraud (MLP)", "pipeline": ex / "fraud" / "pipeline.yaml"},
    ]


def _real_models(everything: bool) -> list[dict]:
    import onnx

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    models = []
    try:
        import rapidocr_onnxruntime

        ocr = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
        models.append({"name": "ppocr-cls", "model": ocr, "inputs": {"x": [1, 3, 48, 192]}})
    except ImportError:
        pass
    names = ["squeezenet"] + (["shufflenet", "inception_v1", "bvlc_alexnet", "zfnet512", "resnet50",
                               "inception_v2", "densenet121", "vgg19"] if everything else [])
    models += [{"name": f"light_{n}", "model": light / f"light_{n}.onnx", "inputs": None} for n in names]
    return models


def _write_pipeline(folder: Path, entry: dict) -> Path:
    import yaml

    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": entry["name"].replace("_", "-")},
           "model": {"path": str(entry["model"]), "task": "classification",
                     **({"inputs": entry["inputs"]} if entry["inputs"] else {})},
           "target": "host-cpu",
           "budget": {"accuracy": {"metric": "top1_agreement", "min": 0.99}},
           "quantization": {"mode": "auto", "calibration": {"samples": 16}},
           "validation": {"samples": 16, "latency": {"warmup": 2, "runs": 10}}}
    path = folder / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _build(pipeline: Path):
    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress, build

    doc = load_documents(pipeline)[0]
    stages = ["import", "normalize", "optimize", "quantize", "legalize", "estimate", "validate"]
    return doc, build(doc, stages=stages, use_cache=False, keep_workdir=True, progress=Progress(quiet=True))


def _source_model(doc) -> Path:
    from edgeship.pipelines.manifest import resolve_path

    return Path(resolve_path(doc, doc.data["model"]["path"]))


def _default_ort_quantize(src: Path, dst: Path, calib: dict) -> str | None:
    """onnxruntime.quantization.quantize_static with defaults; None when it worked, else why not."""
    from edgeship.stages.quant_ort import ArrayReader, quiet_quantizer
    from onnxruntime.quantization import quantize_static

    try:
        with quiet_quantizer():
            quantize_static(str(src), str(dst), ArrayReader(calib))
        import onnxruntime as ort

        ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
        return None
    except Exception as exc:  # noqa: BLE001 - the point is to report that it fails
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:60]}"


def _feeds_for(path: Path, data: dict) -> dict:
    """Inputs of the original model, shaped like the pinned ones (the original may declare dynamic dims)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return {k: v for k, v in data.items() if k in names}


def _accuracy(ref_path: Path, path: Path, data: dict) -> dict:
    from edgeship.pipelines import metrics
    from edgeship.stages.quant_measure import run_all, session

    ref = run_all(session(ref_path, threads=0), data)[0]
    got = run_all(session(path, threads=0), data)[0]
    return {"top1": metrics.top1_agreement(ref, got), "sqnr": metrics.sqnr_db(ref, got)}


def bench_one(entry: dict, folder: Path, repeats: int) -> dict:
    from edgeship.pipelines.data import synthetic_inputs
    from edgeship.stages import quant_measure

    pipeline = entry.get("pipeline") or _write_pipeline(folder, entry)
    t0 = time.perf_counter()
    doc, result = _build(pipeline)
    row = {"name": entry["name"], "build_s": time.perf_counter() - t0}
    if not result.ok:
        row["error"] = str(result.error).splitlines()[0][:100]
        return row
    ctx = result.ctx
    source = _source_model(doc)
    data = ctx.validation
    if data is None:
        data = synthetic_inputs(ctx.inputs, 16, seed=2)
    calib = ctx.calibration if ctx.calibration is not None else synthetic_inputs(ctx.inputs, 16, seed=0)
    data = _feeds_for(source, data)
    calib = _feeds_for(source, calib)
    edgeship_model = Path(ctx.model_path)
    ortq = folder / f"{entry['name'].split()[0]}-ort-default.onnx"
    ortq_error = _default_ort_quantize(source, ortq, calib)
    paths = {"float": source, "edgeship": edgeship_model}
    if ortq_error is None:
        paths["ortq"] = ortq
    feed = quant_measure.first_feed(data)
    medians: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(repeats):
        p50 = quant_measure.interleaved_p50(paths, feed, rounds=3, runs=quant_measure.runs_within(paths, feed, 300.0, 3, 30), threads=1)
        for k, v in p50.items():
            medians[k].append(v)
    row.update({f"{k}_p50": float(np.median(v)) for k, v in medians.items()})
    row["selected"] = ctx.report.get("quantize", {}).get("selected", "?")
    row["edgeship_acc"] = _accuracy(source, edgeship_model, data)
    row["ortq_acc"] = _accuracy(source, ortq, data) if ortq_error is None else None
    row["ortq_error"] = ortq_error
    row["sizes_kb"] = {k: p.stat().st_size / 1024 for k, p in paths.items()}
    acc_budget = (doc.data.get("budget") or {}).get("accuracy") or {"metric": "top1_agreement", "min": 0.99}
    row["budget"] = acc_budget
    row["validate_passed"] = ctx.report.get("validate", {}).get("passed")
    return row


def _fmt_ms(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def table(rows: list[dict], tolerance: float) -> str:
    head = ["model", "float p50 ms", "edgeship p50 ms", "ort-q p50 ms", "es/float", "es/ort-q", "edgeship pick",
            "es top1", "es SQNR dB", "ort-q top1", "ort-q SQNR dB", "size KB float/es/ort-q", "goal"]
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append([r["name"], "build failed: " + r["error"]] + [""] * (len(head) - 2))
            continue
        f, e, q = r.get("float_p50"), r.get("edgeship_p50"), r.get("ortq_p50")
        best = min(x for x in (f, q) if x is not None)
        meets_speed = e <= best * (1 + tolerance)
        acc_ok = bool(r["validate_passed"])
        goal = ("ok" if meets_speed and acc_ok else "SLOWER" if not meets_speed else "ACCURACY") + f" ({e / best:.2f}x best)"
        sizes = r["sizes_kb"]
        ea, qa = r["edgeship_acc"], r["ortq_acc"]
        lines.append([
            r["name"], _fmt_ms(f), _fmt_ms(e), _fmt_ms(q) if q is not None else f"n/a ({r['ortq_error'][:38]})",
            f"{e / f:.2f}", f"{e / q:.2f}" if q else "-", r["selected"],
            f"{ea['top1']:.3f}", f"{ea['sqnr']:.1f}", f"{qa['top1']:.3f}" if qa else "-", f"{qa['sqnr']:.1f}" if qa else "-",
            f"{sizes['float']:.0f}/{sizes['edgeship']:.0f}/{sizes['ortq']:.0f}" if "ortq" in sizes else f"{sizes['float']:.0f}/{sizes['edgeship']:.0f}/-",
            goal,
        ])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every light_* zoo model too (minutes, GBs of RAM for vgg19)")
    parser.add_argument("--only", default="", help="comma-separated name prefixes to run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements per model (median taken)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="timer-noise allowance for the goal column")
    args = parser.parse_args(argv)
    os.environ.setdefault("EDGESHIP_HOME", tempfile.mkdtemp(prefix="edgeship-bench-"))
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # the zoo models make onnxruntime chatty about unused initializers
    entries = _examples() + _real_models(args.all)
    if args.only:
        prefixes = [p.strip() for p in args.only.split(",") if p.strip()]
        entries = [e for e in entries if any(e["name"].startswith(p) for p in prefixes)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeship-bench-") as tmp:
        for entry in entries:
            print(f"... {entry['name']}", file=sys.stderr, flush=True)
            rows.append(bench_one(entry, Path(tmp), args.repeats))
    print(f"host: {os.cpu_count()} CPUs visible, single-thread p50, median of {args.repeats} interleaved measurements")
    print(table(rows, args.tolerance))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
