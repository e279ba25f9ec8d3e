"""RKNN worker: runs inside the rknn-toolkit2 environment (numpy <= 1.26, torch <= 2.4), never in edgeship's.

lower: load edgeship's QDQ ONNX, build with `do_quantization=False` (edgeship's quantization is kept;
with `options.quantizer: rknn` the float model is quantized by RKNN instead, calibrated on the samples),
export `.rknn`, then run the samples in the toolkit's simulator (`init_runtime()` without a target)
and compare against the float model and the QDQ model in onnxruntime.
probe: versions only (for `edgeship toolchain doctor`).
"""

from __future__ import annotations

import os
import sys
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, os.environ.get("EDGESHIP_WORKER_LIB") or os.path.dirname(os.path.abspath(__file__)))
from _worker_io import WorkerError, log, serve  # noqa: E402

PACKAGES = ("rknn-toolkit2", "torch", "numpy", "onnx", "onnxruntime")
MAX_SAMPLES = 16  # the simulator is slow on big inputs; accuracy settles well before this


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def probe(request: dict) -> dict:
    from rknn.api import RKNN  # noqa: F401 - importing is the check (it imports torch, cv2, onnx)

    return {"versions": versions(), "report": {"import": "ok"}}


def _check(ret: int, step: str) -> None:
    if ret != 0:
        raise WorkerError(f"rknn-toolkit2 {step} failed (returned {ret}); the toolkit's reason is in the log above", "toolkit")


def _samples(path: str | None, names: list[str]) -> list[dict]:
    import numpy as np

    if not path:
        return []
    with np.load(path, allow_pickle=False) as data:
        missing = [n for n in names if n not in data.files]
        if missing:
            raise WorkerError(f"samples file lacks input(s) {', '.join(missing)}", "input")
        count = min(min(len(data[n]) for n in names), MAX_SAMPLES)
        return [{n: np.ascontiguousarray(data[n][i]) for n in names} for i in range(count)]


def _calibration_list(samples: list[dict], names: list[str], outdir: Path) -> str:
    """RKNN's own quantizer reads a text file of .npy paths, one line per sample (inputs space-separated)."""
    import numpy as np

    folder = outdir / "rknn_calibration"
    folder.mkdir(exist_ok=True)
    lines = []
    for i, feed in enumerate(samples):
        paths = []
        for n, name in enumerate(names):
            path = folder / f"s{i}_i{n}.npy"
            np.save(path, feed[name])
            paths.append(str(path))
        lines.append(" ".join(paths))
    listing = folder / "dataset.txt"
    listing.write_text("\n".join(lines) + "\n")
    return str(listing)


def _compare(got: list, want: list) -> dict:
    import numpy as np

    cos, max_abs, top1 = [], 0.0, []
    for g, w in zip(got, want):
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if g.size != w.size:
            raise WorkerError(f"simulator output has {g.size} values, the reference {w.size}", "validation")
        denom = float(np.linalg.norm(g) * np.linalg.norm(w))
        cos.append(float(g @ w / denom) if denom else float(np.allclose(g, w)))
        max_abs = max(max_abs, float(np.max(np.abs(g - w))) if g.size else 0.0)
        top1.append(bool(np.argmax(g) == np.argmax(w)))
    return {"cosine_mean": round(float(np.mean(cos)), 6), "cosine_min": round(float(np.min(cos)), 6),
            "max_abs_error": round(max_abs, 6), "top1_agreement": round(float(np.mean(top1)), 6)}


def lower(request: dict) -> dict:
    import numpy as np
    import onnxruntime as ort
    from rknn.api import RKNN

    options = dict(request.get("options") or {})
    platform = (request.get("target") or {}).get("platform") or options.get("platform")
    if not platform:
        raise WorkerError("no target platform (e.g. rk3588) in the request", "input")
    quantizer = options.get("quantizer", "edgeship")
    if quantizer not in ("edgeship", "rknn"):
        raise WorkerError(f"options.quantizer must be 'edgeship' or 'rknn', not {quantizer!r}", "input")
    float_model = request.get("float_model")
    source = request["model"] if quantizer == "edgeship" else float_model
    if not source:
        raise WorkerError("quantizer 'rknn' needs the float model in the request", "input")
    outdir = Path(request["outdir"])

    reference = ort.InferenceSession(float_model or request["model"], providers=["CPUExecutionProvider"])
    names = [i.name for i in reference.get_inputs()]
    samples = _samples(request.get("samples"), names)
    if quantizer == "rknn" and not samples:
        raise WorkerError("quantizer 'rknn' needs calibration samples", "input")

    started = time.monotonic()
    rknn = RKNN(verbose=bool(options.get("verbose", False)))
    try:
        _check(rknn.config(target_platform=platform, **dict(options.get("config") or {})), "config")
        _check(rknn.load_onnx(model=source), "load_onnx")
        if quantizer == "rknn":
            _check(rknn.build(do_quantization=True, dataset=_calibration_list(samples, names, outdir)), "build")
        else:
            _check(rknn.build(do_quantization=False), "build")
        out = outdir / "model.rknn"
        _check(rknn.export_rknn(str(out)), "export_rknn")
        build_seconds = time.monotonic() - started
        log(f"edgeship: built {out.name} ({out.stat().st_size} bytes) for {platform} in {build_seconds:.2f} s")
        report = {"tool": "rknn-toolkit2", "version": versions()["rknn-toolkit2"], "platform": platform,
                  "quantizer": quantizer, "build_seconds": round(build_seconds, 3),
                  "model_bytes": out.stat().st_size, "latency_ms": None,
                  "latency_note": "rknn-toolkit2 has no performance figures in its simulator (eval_perf needs a board)"}
        if samples:
            _check(rknn.init_runtime(), "init_runtime (simulator)")
            layout = "nchw" if all(np.ndim(samples[0][n]) == 4 for n in names) else None
            got = [rknn.inference(inputs=[s[n] for n in names], data_format=layout) for s in samples]
            want_float = [reference.run(None, s) for s in samples]
            first = lambda outs: [o[0] for o in outs]  # noqa: E731 - the first output decides
            simulator = {"samples": len(samples), "vs_float": _compare(first(got), first(want_float))}
            if quantizer == "edgeship" and float_model:
                qdq = ort.InferenceSession(request["model"], providers=["CPUExecutionProvider"])
                simulator["vs_edgeship_qdq"] = _compare(first(got), first([qdq.run(None, s) for s in samples]))
            report["simulator"] = simulator
            log(f"edgeship: simulator vs float: cosine {simulator['vs_float']['cosine_mean']}, "
                f"top-1 agreement {simulator['vs_float']['top1_agreement']} on {len(samples)} sample(s)")
    finally:
        rknn.release()
    return {"files": {"model.rknn": "model.rknn"}, "runtime": "rknn-toolkit-lite2", "report": report,
            "versions": versions()}


if __name__ == "__main__":
    sys.exit(serve({"lower": lower, "probe": probe}))
