#!/usr/bin/env python3
"""Vendor backends on real models: OpenVINO on this host's CPU vs onnxruntime, and RKNN's simulator.

    python bench/toolchains.py                      # squeezenet + PP-OCR cls: OpenVINO rows; RK3588 row on kws
    python bench/toolchains.py --only openvino --models squeezenet,resnet50 --repeats 3
    python bench/toolchains.py --only rknn

OpenVINO rows, per model, same int8 model for both runtimes: edgeship's QDQ ONNX in onnxruntime vs
the same QDQ ONNX as OpenVINO IR on the CPU plugin (f32 precision hint pinned, so no bf16 on AMX);
plus OpenVINO IR quantized by NNCF from the float model (the alternative int8 path), and both float
models. Latency: single-thread p50, all variants measured interleaved (round-robin, `--rounds` rounds
of `--runs` calls each) so background load hits all alike; the median over `--repeats` repetitions,
with min-max spread. Accuracy: top-1 agreement and SQNR against the float model in onnxruntime, on
the validation inputs (synthetic, seeded, when the model has none).

RK3588 row: the RKNN toolchain (edgeship toolchain install rknn) lowers edgeship's QDQ model to
.rknn: build time (the worker's wall time including the toolkit's import, and the toolkit's own
build time), simulator accuracy against float, the toolkit's placement and cycle estimate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# real models with real weights that a test dependency ships (the onnx light_* models have stripped
# weights: constant outputs, fine for latency, useless for accuracy)
PPOCR = {"ppocr-cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192]),
         "ppocr-det": ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 320, 320]),
         "ppocr-rec": ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320])}


def _models(names: list[str]) -> list[dict]:
    import onnx

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    found = []
    for name in names:
        if name in PPOCR:
            try:
                import rapidocr_onnxruntime
            except ImportError:
                continue
            file, shape = PPOCR[name]
            found.append({"name": name, "model": Path(rapidocr_onnxruntime.__file__).parent / "models" / file,
                          "inputs": {"x": shape}})
        elif name == "kws":
            found.append({"name": name, "pipeline": REPO / "examples" / "kws" / "pipeline.yaml"})
        else:
            found.append({"name": name, "model": light / f"light_{name}.onnx", "inputs": None})
    return found


def quantized(entry: dict, folder: Path):
    """edgeship's build up to quantize (static int8 QDQ): (float model, QDQ model, validation inputs)."""
    import yaml

    from edgeship.pipelines.data import synthetic_inputs
    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress, build

    pipeline = entry.get("pipeline")
    if pipeline is None:
        doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": entry["name"]},
               "model": {"path": str(entry["model"]), "task": "classification",
                         **({"inputs": entry["inputs"]} if entry["inputs"] else {})},
               "target": "host-cpu", "quantization": {"mode": "static", "calibration": {"samples": 16}},
               "validation": {"samples": 16}}
        pipeline = folder / f"{entry['name']}.yaml"
        pipeline.write_text(yaml.safe_dump(doc))
    doc = load_documents(str(pipeline))[0]
    spec_q = dict((doc.data.get("quantization") or {}), mode="static")
    doc.data["quantization"] = spec_q
    result = build(doc, stages=["import", "normalize", "optimize", "quantize"], use_cache=False, keep_workdir=True,
                   progress=Progress(quiet=True))
    if not result.ok:
        raise SystemExit(f"{entry['name']}: edgeship build failed: {result.error}")
    ctx = result.ctx
    data = ctx.validation if ctx.validation is not None else synthetic_inputs(ctx.inputs, 16, seed=2)
    samples = folder / f"{entry['name']}-samples.npz"
    np.savez(samples, **data)
    return Path(ctx.float_model_path), Path(ctx.model_path), data, samples


def _accuracy(reference: np.ndarray, got: np.ndarray) -> dict:
    from edgeship.pipelines import metrics

    return {"top1": metrics.top1_agreement(reference, got), "sqnr": metrics.sqnr_db(reference, got),
            "cosine": metrics.cosine(reference, got)}


def openvino_rows(entry: dict, folder: Path, repeats: int, rounds: int, runs: int) -> dict:
    from edgeship.pipelines.data import iter_samples
    from edgeship.stages.quant_measure import run_all, session
    from edgeship.targets.backends.openvino import OpenVINOBackend, load_openvino, nncf_quantize

    ov = load_openvino()
    float_model, qdq, data, samples = quantized(entry, folder)
    feeds = list(iter_samples(data))
    out = folder / entry["name"]
    t0 = time.perf_counter()
    lowered = OpenVINOBackend().lower(qdq, {"metadata": {"name": "intel-core-cpu"}}, out / "qdq", float_model=float_model,
                                      samples=samples)
    lower_s = time.perf_counter() - t0
    core = ov.Core()
    t0 = time.perf_counter()
    nncf_model = nncf_quantize(ov, float_model, feeds)
    nncf_s = time.perf_counter() - t0
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1", "PERFORMANCE_HINT": "LATENCY"}
    compiled = {"ov-qdq": core.compile_model(str(lowered.files["model.xml"]), "CPU", config),
                "ov-nncf": core.compile_model(nncf_model, "CPU", config),
                "ov-float": core.compile_model(str(float_model), "CPU", config)}
    requests = {k: c.create_infer_request() for k, c in compiled.items()}
    ort_sessions = {"ort-qdq": session(qdq, threads=1), "ort-float": session(float_model, threads=1)}
    reference = run_all(session(float_model, threads=0), data)[0]
    accuracy = {"ort-qdq": _accuracy(reference, run_all(ort_sessions["ort-qdq"], data)[0])}
    for name, request in requests.items():
        got = np.stack([np.asarray(request.infer(f)[compiled[name].output(0)]).copy() for f in feeds])
        accuracy[name] = _accuracy(reference, got)

    feed = feeds[0]
    callers = {**{k: (lambda r=r: r.infer(feed)) for k, r in requests.items()},
               **{k: (lambda s=s: s.run(None, feed)) for k, s in ort_sessions.items()}}
    per_repeat: dict[str, list[float]] = {k: [] for k in callers}
    for _ in range(repeats):
        samples_ms: dict[str, list[float]] = {k: [] for k in callers}
        for call in callers.values():
            for _ in range(3):
                call()
        for _ in range(rounds):
            for name, call in callers.items():
                for _ in range(runs):
                    t = time.perf_counter()
                    call()
                    samples_ms[name].append((time.perf_counter() - t) * 1e3)
        for name, values in samples_ms.items():
            per_repeat[name].append(float(np.median(values)))
    from edgeship.targets.backends.openvino import execution_precisions

    return {"name": entry["name"], "lower_s": lower_s, "nncf_s": nncf_s, "accuracy": accuracy,
            "p50": {k: (float(np.median(v)), min(v), max(v)) for k, v in per_repeat.items()},
            "precisions": {k: execution_precisions(c) for k, c in compiled.items()},
            "hint": str(compiled["ov-qdq"].get_property("INFERENCE_PRECISION_HINT")), "version": ov.get_version()}


def rknn_row(entry: dict, folder: Path) -> dict:
    from edgeship.targets.backends.rknn import RknnBackend

    float_model, qdq, _data, samples = quantized(entry, folder)
    t0 = time.perf_counter()
    lowered = RknnBackend(platform="rk3588", log=lambda line: None).lower(
        qdq, {"metadata": {"name": "rockchip-rk3588"}}, folder / f"{entry['name']}-rknn", float_model=float_model, samples=samples)
    return {"name": entry["name"], "wall_s": time.perf_counter() - t0, "report": lowered.report}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_openvino(rows: list[dict]) -> None:
    variants = ["ort-float", "ov-float", "ort-qdq", "ov-qdq", "ov-nncf"]
    table = [["model"] + [f"{v} p50 ms" for v in variants] + ["ov-qdq/ort-qdq", "top1 ort-qdq/ov-qdq/ov-nncf",
                                                             "SQNR dB ort-qdq/ov-qdq/ov-nncf"]]
    for r in rows:
        p = r["p50"]
        cells = [f"{p[v][0]:.3f} ({p[v][1]:.3f}-{p[v][2]:.3f})" for v in variants]
        a = r["accuracy"]
        table.append([r["name"], *cells, f"{p['ov-qdq'][0] / p['ort-qdq'][0]:.2f}x",
                      "/".join(f"{a[k]['top1']:.3f}" for k in ("ort-qdq", "ov-qdq", "ov-nncf")),
                      "/".join(f"{a[k]['sqnr']:.1f}" for k in ("ort-qdq", "ov-qdq", "ov-nncf"))])
    print(_table(table))
    for r in rows:
        print(f"{r['name']}: OpenVINO {r['version']}, CPU precision hint {r['hint']}; execution precisions "
              + "; ".join(f"{k} {v}" for k, v in r["precisions"].items())
              + f"; lower {r['lower_s']:.2f} s, NNCF quantize {r['nncf_s']:.2f} s")


def print_rknn(rows: list[dict]) -> None:
    table = [["model", "target", "build s (toolkit)", "worker wall s", ".rknn KB", "sim cosine vs float",
              "sim top1 vs float", "sim top1 vs edgeship QDQ", "NPU ops %", "cycles (toolkit)", "CPU ops"]]
    for r in rows:
        rep = r["report"]
        sim = (rep.get("simulator") or {}).get("vs_float") or {}
        qdq = (rep.get("simulator") or {}).get("vs_edgeship_qdq") or {}
        table.append([r["name"], rep.get("platform", "?"), f"{rep['build_seconds']:.3f}", f"{r['wall_s']:.1f}",
                      f"{rep['model_bytes'] / 1024:.0f}", f"{sim.get('cosine_mean', float('nan')):.4f}",
                      f"{sim.get('top1_agreement', float('nan')):.3f}", f"{qdq.get('top1_agreement', float('nan')):.3f}",
                      f"{rep.get('ops_on_accelerator_pct', '-')}",
                      str(rep.get("cycles")), ",".join(rep.get("cpu_op_types") or []) or "-"])
    print(_table(table))
    for r in rows:
        print(f"{r['name']}: {r['report']['versions']}; toolkit messages: {len(r['report']['messages']['errors'])} error(s), "
              f"benign: {r['report']['messages']['benign']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["openvino", "rknn"], help="one backend")
    parser.add_argument("--models", default="ppocr-cls,ppocr-rec,ppocr-det", help="OpenVINO models (light_* names, ppocr-cls)")
    parser.add_argument("--rknn-model", default="kws", help="the RK3588 model (kws, or a light_* name)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeship-bench-toolchains-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "openvino"):
            rows = [openvino_rows(e, folder, args.repeats, args.rounds, args.runs)
                    for e in _models([m.strip() for m in args.models.split(",") if m.strip()])]
            print_openvino(rows)
        if args.only in (None, "rknn"):
            from edgeship.targets.backends.rknn import TOOLCHAIN
            from edgeship.targets.toolchains.env import ToolchainEnv

            if not ToolchainEnv(TOOLCHAIN).installed:
                print("RK3588: the rknn toolchain is not installed: edgeship toolchain install rknn", file=sys.stderr)
                return 1
            print()
            print_rknn([rknn_row(e, folder) for e in _models([args.rknn_model])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
