#!/usr/bin/env python3
"""Quantization on trained networks that ship inside PyPI packages, with realistic data made in code.

    python bench/quant.py                       # ppocr-cls, ppocr-det, magika; host + Ethos-U65
    python bench/quant.py --only magika --repeats 5

Per model: float p50 (1 thread, this host), onnxruntime's `quantize_static` with its defaults, and
each edgeship candidate `auto` built for host-cpu (static int8 per-channel / per-tensor, the
mixed-precision recovery), the candidates `auto` built for host-cpu-litert (this machine shipping
integer TFLite for LiteRT + XNNPACK; float islands fall back to onnxruntime), each run and timed on
the runtime that would ship it, plus the fully integer model `auto` ships to an Arm Ethos-U65 (int8 or
16x8, never float): the task metric `auto` held it to, cosine, SQNR, p50, speed-up over float
(onnxruntime, 1 thread), and which layers stayed float or went int16. Accuracy is against the float
model on held-out data (not the calibration data), on the runtime that ships each row: the Ethos-U65's
is its emitted .tflite under LiteRT (what Vela compiles; its p50 is that .tflite on this host's LiteRT,
int16 on reference kernels, not the chip: Vela's figures are in bench/backends.py). Latency: every model of a row group measured
interleaved, round-robin, in several runs; the median over runs is printed, with the spread (min-max of
the runs' medians). A LiteRT row times the interpreter on inputs quantized once beforehand.
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
sys.path.insert(0, str(REPO))

from bench import real_data  # noqa: E402

STAGES = ("import", "normalize", "optimize", "quantize")
INTEGER_TARGET = "arm-ethos-u65"
LITERT_TARGET = "host-cpu-litert"


def _models() -> list[dict]:
    """name, model, pinned inputs, (calibration, evaluation) data builders."""
    def ocr(n, seed):
        return {"x": real_data.ocr_lines(n, seed)[0][:, None]}

    def det(n, seed):
        return {"x": real_data.ocr_pages(n, seed)[:, None]}

    def mg(n, seed):
        return {"bytes": real_data.magika_inputs(n, seed)[:, None]}

    return [
        {"name": "ppocr-cls", "model": real_data.ppocr_cls_model(), "inputs": {"x": [1, 3, 48, 192]},
         "calib": lambda: ocr(64, 0), "eval": lambda: ocr(200, 1)},
        {"name": "ppocr-det", "model": real_data.ppocr_det_model(), "inputs": {"x": [1, 3, 320, 320]},
         "calib": lambda: det(24, 0), "eval": lambda: det(24, 1)},
        {"name": "magika", "model": real_data.magika_model(), "inputs": {"bytes": [1, 2048]},
         "calib": lambda: mg(64, 0), "eval": lambda: mg(200, 1)},
    ]


def _pipeline(folder: Path, entry: dict, target: str) -> Path:
    import yaml

    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": f"{entry['name']}-{target}"},
           "model": {"path": str(entry["model"]), "inputs": entry["inputs"]}, "target": target,
           "quantization": {"mode": "auto", "calibration": {"data": "calib.npz", "samples": 64}},
           "validation": {"data": "eval.npz", "samples": 200}}
    path = folder / f"{target}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _build(manifest: Path):
    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress, build

    return build(load_documents(manifest)[0], stages=list(STAGES), use_cache=False, keep_workdir=True,
                 progress=Progress(quiet=True))


def _accuracy(goal: dict, reference: list, sess, data: dict, names: list) -> dict:
    from edgeship.pipelines import metrics
    from edgeship.stages import quant_goal
    from edgeship.stages.quant_measure import run_all

    got = run_all(sess, data)
    cmp = metrics.compare(reference, got, names, quant_goal.metric_names(goal))
    first = cmp["primary"]
    return {"metric": first.get(goal["metric"]), "cosine": first["cosine"], "sqnr": first["sqnr_db"],
            "meets": quant_goal.evaluate(goal, cmp)[0]}


def _layers(row: dict) -> str:
    flt, i16 = len(row.get("kept_float") or []), len(row.get("int16_layers") or [])
    if row.get("kind") == "float":
        return "all float"
    parts = [f"{flt} float"] if flt else []
    parts += [f"{i16} int16"] if i16 else []
    return ", ".join(parts) or "none"


def _litert_rows(build, float_path: Path, paths: dict, rows: dict, sessions: dict) -> None:
    """auto's candidates for host-cpu-litert (its float only when auto kept it: the float baseline is the
    group's), each with a single-thread session on the runtime that would ship it
    (quant_shipped.ShippedRunner.timing_session)."""
    from edgeship.stages.quant_shipped import LITERT, ShippedRunner

    work = Path(build.ctx.workdir) / "quantize"
    shipped = ShippedRunner(build.ctx.target_data, work)
    for c in build.ctx.report["quantize"]["candidates"]:
        path = float_path if c["kind"] == "float" else work / f"{c['name']}.onnx"
        if (c["kind"] == "float" and not c["selected"]) or not path.is_file():
            continue
        label = (f"{LITERT_TARGET}: {c['name']} [{'LiteRT' if c['timed_on'] == LITERT else 'ort'}]"
                 + (" (auto's pick)" if c["selected"] else ""))
        paths[label], rows[label] = path, c
        sessions[label] = shipped.timing_session(path, c["timed_on"])


def bench_one(entry: dict, folder: Path, repeats: int, integer: bool, litert: bool) -> dict:
    from edgeship.stages.quant_measure import (first_feed, interleaved_sessions_p50, output_names, run_all,
                                               runs_within_sessions, session)
    from edgeship.stages.quant_ort import default_quantize_static

    folder.mkdir(parents=True, exist_ok=True)
    calib, evaluation = entry["calib"](), entry["eval"]()
    np.savez(folder / "calib.npz", **calib)
    np.savez(folder / "eval.npz", **evaluation)
    t0 = time.perf_counter()
    host = _build(_pipeline(folder, entry, "host-cpu"))
    build_s = {"host": time.perf_counter() - t0}
    if not host.ok:
        return {"name": entry["name"], "error": str(host.error).splitlines()[0][:120]}
    q = host.ctx.report["quantize"]
    goal = q["accuracy_goal"]
    work = Path(host.ctx.workdir) / "quantize"
    float_label = "float" + (" (auto's pick)" if q["selected"] == "float" else "")
    paths = {float_label: Path(entry["model"])}
    rows = {float_label: {"kind": "float", "name": "float"}}
    ortq = folder / "ort-default.onnx"
    try:
        default_quantize_static(Path(entry["model"]), ortq, {k: v for k, v in calib.items()})
        paths["ort quantize_static defaults"] = ortq
        rows["ort quantize_static defaults"] = {"kind": "static", "name": "ort-default"}
    except Exception as exc:  # noqa: BLE001 - the point is to show that it fails
        rows["ort quantize_static defaults"] = {"error": f"{type(exc).__name__}"}
    for c in q["candidates"]:
        if c["kind"] == "float" or not (work / f"{c['name']}.onnx").is_file():
            continue
        label = f"edgeship {c['name']}" + (" (auto's pick)" if c["selected"] else "")
        paths[label], rows[label] = work / f"{c['name']}.onnx", c
    litert_sessions: dict = {}
    if litert:
        t0 = time.perf_counter()
        lite = _build(_pipeline(folder, entry, LITERT_TARGET))
        build_s["litert"] = time.perf_counter() - t0
        if lite.ok:
            _litert_rows(lite, Path(entry["model"]), paths, rows, litert_sessions)
        else:
            rows[f"{LITERT_TARGET}: build failed"] = {"error": str(lite.error).splitlines()[0][:100]}
    if integer:
        t0 = time.perf_counter()
        ethos = _build(_pipeline(folder, entry, INTEGER_TARGET))
        build_s["ethos"] = time.perf_counter() - t0
        if ethos.ok and ethos.ctx.report["quantize"].get("selected"):
            from edgeship.stages.quant_shipped import LITERT, ShippedRunner

            pick = next(c for c in ethos.ctx.report["quantize"]["candidates"] if c["selected"])
            label = f"{INTEGER_TARGET}: {pick['name']} (integer{', LiteRT' if pick['scored_on'] == LITERT else ''})"
            paths[label] = Path(ethos.ctx.workdir) / "quantize" / f"{pick['name']}.onnx"
            rows[label] = pick
            # scored like auto and validate score it: the emitted .tflite under LiteRT (what Vela compiles)
            litert_sessions[label] = ShippedRunner(ethos.ctx.target_data, paths[label].parent).timing_session(
                paths[label], pick["scored_on"])
        else:
            rows[f"{INTEGER_TARGET}: no integer model"] = {"error": str(ethos.error).splitlines()[0][:100]}
    ref_sess = session(paths[float_label], threads=0)
    names = output_names(ref_sess)
    reference = run_all(ref_sess, evaluation)
    # every row on the runtime that would ship it: onnxruntime (1 thread), or LiteRT for host-cpu-litert's .tflite
    sessions = {label: litert_sessions.get(label) or session(path, threads=1) for label, path in paths.items()}
    accuracy = {label: _accuracy(goal, reference, sess, evaluation, names) for label, sess in sessions.items()}
    feed = first_feed(evaluation)
    runs: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(repeats):
        per_round = runs_within_sessions(sessions, feed, 150.0, 2, 20)
        for k, v in interleaved_sessions_p50(sessions, feed, rounds=3, runs=per_round).items():
            runs[k].append(v)
    return {"name": entry["name"], "goal": goal, "rows": rows, "accuracy": accuracy, "runs": runs, "build_s": build_s,
            "selected": q["selected"], "float_label": float_label}


def table(result: dict) -> str:
    if "error" in result:
        return f"{result['name']}: build failed: {result['error']}"
    goal = result["goal"]
    float_p50 = float(np.median(result["runs"][result["float_label"]]))
    head = ["model", goal["metric"], "cosine", "SQNR dB", "p50 ms (spread)", "speed-up", "layers float/int16", "goal"]
    lines = [head]
    for label, row in result["rows"].items():
        if "error" in row:
            lines.append([label] + ["-"] * (len(head) - 2) + [f"failed: {row['error']}"])
            continue
        acc, p = result["accuracy"][label], result["runs"][label]
        med = float(np.median(p))
        speed = float_p50 / med
        ok = acc["meets"] and (speed >= 1.3 or "integer" in label)
        lines.append([label, f"{acc['metric']:.4f}", f"{acc['cosine']:.4f}", f"{acc['sqnr']:.1f}",
                      f"{med:.3f} ({min(p):.3f}-{max(p):.3f})", f"{speed:.2f}x", _layers(row),
                      "-" if label == result["float_label"] else ("MET" if ok else "accuracy" if not acc["meets"] else "speed")])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    builds = ", ".join(f"{k} {v:.0f}s" for k, v in result["build_s"].items())
    return (f"== {result['name']}: goal {goal['summary']}\n   (builds: {builds}; goal column: accuracy and >= 1.3x float "
            f"on host, accuracy only for the integer target)\n" + "\n".join(out))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved latency runs per model (median printed)")
    parser.add_argument("--no-integer", action="store_true", help=f"skip the {INTEGER_TARGET} (integer-only) build")
    parser.add_argument("--no-litert", action="store_true", help=f"skip the {LITERT_TARGET} (LiteRT + XNNPACK) build")
    args = parser.parse_args(argv)
    # a state dir kept across runs: the sensitivity analysis is cached per model + data + policy, so a
    # second run measures again without re-ranking every layer
    os.environ.setdefault("EDGESHIP_HOME", str(Path(tempfile.gettempdir()) / "edgeship-quant-bench-state"))
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    entries = _models()
    # the models live in their packages' folders, outside each manifest's: allow them (pipelines/containment.py)
    allowed = [p for p in os.environ.get("EDGESHIP_ALLOW_PATHS", "").split(os.pathsep) if p]
    os.environ["EDGESHIP_ALLOW_PATHS"] = os.pathsep.join(allowed + [str(Path(e["model"]).parent) for e in entries])
    if args.only:
        wanted = {p.strip() for p in args.only.split(",")}
        entries = [e for e in entries if e["name"] in wanted]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeship-quant-bench-") as tmp:
        for entry in entries:
            print(f"... {entry['name']}", file=sys.stderr, flush=True)
            print(table(bench_one(entry, Path(tmp) / entry["name"], args.repeats, not args.no_integer,
                                       not args.no_litert)), flush=True)
    print(f"host: {os.cpu_count()} CPUs visible; single-thread p50; median of {args.repeats} interleaved runs; "
          f"total {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
