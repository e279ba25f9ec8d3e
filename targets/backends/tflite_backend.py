"""Backend `tflite`: integer TFLite for LiteRT (XNNPACK) on Arm Linux CPUs, and the first half of
every TFLite-based vendor flow (Vela). Emits `model.tflite` + `model_io.json` and checks itself:
the .tflite under LiteRT against the QDQ ONNX under onnxruntime on the same inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeship.targets.backends import Lowered
from edgeship.targets.backends.litert_run import IO_FILE, LiteRTRunner
from edgeship.targets.backends.tflite_emit import EMITTER_VERSION, emit

SELF_CHECK_SAMPLES = 4


def _synthetic_feeds(io: dict, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        feed = {}
        for spec in io["inputs"]:
            if spec.get("scale") is None:
                feed[spec["name"]] = rng.integers(0, 10, spec["shape"]).astype(spec["dtype"])  # as pipelines.data does
            else:  # values across the input's calibrated range
                info = np.iinfo(spec["dtype"])
                lo = (info.min - spec["zero_point"]) * spec["scale"]
                hi = (info.max - spec["zero_point"]) * spec["scale"]
                feed[spec["name"]] = rng.uniform(lo, hi, spec["shape"]).astype(np.float32)
        feeds.append(feed)
    return feeds


def sample_feeds(samples: Path | None, n: int = SELF_CHECK_SAMPLES) -> list[dict] | None:
    """The first `n` validation samples from the lower stage's .npz (None: none given)."""
    if samples is None:
        return None
    with np.load(samples, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    count = min(n, *(len(v) for v in arrays.values())) if arrays else 0
    return [{k: v[i] for k, v in arrays.items()} for i in range(count)] or None


def self_check(qdq_model: Path, tflite_model: Path, io: dict, feeds: list[dict] | None = None) -> dict:
    """Outputs of the .tflite (LiteRT) vs the QDQ ONNX (onnxruntime, unoptimized), in output LSBs."""
    import onnxruntime as ort

    source = "validation data" if feeds else "synthetic (uniform over each input's quantized range)"
    feeds = feeds or _synthetic_feeds(io, SELF_CHECK_SAMPLES)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # the QDQ model's own semantics (DequantizeLinear -> float op -> QuantizeLinear): onnxruntime's graph
    # optimizations swap in QLinear kernels whose rounding differs around a layer kept in float
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(qdq_model), options, providers=["CPUExecutionProvider"])
    runner = LiteRTRunner(tflite_model, io)
    total = within = 0
    worst = 0.0
    names = [o.name for o in session.get_outputs()]
    for feed in feeds:
        ref = dict(zip(names, session.run(None, {k: v for k, v in feed.items()})))
        got = runner.run(feed)
        for spec in io["outputs"]:
            if spec.get("scale") is None:
                continue
            lsb = np.abs(got[spec["name"]].astype(np.float64) - ref[spec["name"]]) / spec["scale"]
            total += lsb.size
            within += int((lsb <= 1.0 + 1e-3).sum())  # float32 dequantization blurs an exact LSB
            worst = max(worst, float(lsb.max()))
    pct = 100.0 * within / total if total else 100.0
    return {"samples": len(feeds), "inputs": source, "elements": total, "within_1_lsb_pct": round(pct, 3), "max_lsb": round(worst, 3)}


def write_tflite(model: Path, workdir: Path) -> tuple[Path, dict, dict]:
    """Emit model.tflite + model_io.json into workdir; (path, io, op origin by output tensor)."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = emit(model)
    path = workdir / "model.tflite"
    path.write_bytes(result.data)
    (workdir / IO_FILE).write_text(json.dumps(result.io, indent=2))
    return path, result.io, {"tensor_origin": result.tensor_origin, "operators": len(result.op_origin),
                             "absorbed": result.absorbed}


def litert_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


class TFLiteBackend:
    name = "tflite"
    version = "2+emitter" + EMITTER_VERSION
    integer_only = True

    def __init__(self, threads: int = 4, delegate: str = "xnnpack", fallback: str | None = None):
        self.threads, self.delegate = int(threads), str(delegate)
        self.fallback = fallback  # "onnxruntime": a model the emitter cannot write ships as ONNX instead

    def lower(self, model: Path, target, workdir: Path, *, float_model: Path | None = None,
              samples: Path | None = None) -> Lowered:
        if self.fallback == "onnxruntime":
            from edgeship.targets.backends.onnx_backend import OnnxRuntimeBackend
            from edgeship.targets.backends.tflite_emit import unsupported_nodes

            problems = unsupported_nodes(model)
            if problems:
                lowered = OnnxRuntimeBackend().lower(model, target, workdir)
                lowered.report["fallback"] = {"to": "onnxruntime", "because": {k: v.message for k, v in problems.items()}}
                return lowered
        path, io, facts = write_tflite(model, workdir)
        report = {"tool": "edgeship integer TFLite emitter", "runtime_version": litert_version(),
                  "operators": facts["operators"], "self_check": self_check(model, path, io, sample_feeds(samples)),
                  "runtime_options": {"threads": self.threads, "delegate": self.delegate}}
        return Lowered({"model.tflite": path, IO_FILE: workdir / IO_FILE}, "litert", report, io)
