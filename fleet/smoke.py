"""The device smoke test: does this release actually run here, fast enough, with sane outputs?

Run before the `current` link is switched, so a model that crashes onnxruntime, produces NaNs or
blows its latency budget on this device never becomes the running release.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edgeship.errors import AgentError
from edgeship.fleet.agent_config import SmokeConfig
from edgeship.fleet.runtimes import RUNTIMES

RUNNERS = tuple(RUNTIMES)  # runtimes a bundle may name that this agent runs


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _budget_p95(bundle_meta: dict) -> float | None:
    latency = (bundle_meta.get("budget") or {}).get("latency_ms") or {}
    for key in ("p95", "p99", "p50"):
        if isinstance(latency.get(key), (int, float)):
            return float(latency[key])
    return None


def _load_samples(release: Path, session, count: int) -> list[dict[str, np.ndarray]]:
    path = release / "samples.npz"
    inputs = session.get_inputs()
    if not path.exists():
        raise AgentError("smoke test: bundle has no samples.npz", "smoke-failed")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        raise AgentError(f"smoke test: samples.npz unreadable: {err}", "smoke-failed") from None
    missing = [i.name for i in inputs if i.name not in arrays]
    if missing:
        raise AgentError(f"smoke test: samples.npz lacks input(s) {', '.join(missing)}", "smoke-failed")
    available = min(len(arrays[i.name]) for i in inputs) if inputs else 0
    if available == 0:
        raise AgentError("smoke test: samples.npz holds no samples", "smoke-failed")
    # [n, ...] keeps scalar inputs (stored as shape (N,)) 0-d arrays: onnxruntime refuses numpy scalars
    return [{i.name: arrays[i.name][n, ...] for i in inputs} for n in range(min(count, available))]


def _litert_session(release: Path):
    """The release's model.tflite in LiteRT (needs the `litert` extra on the device)."""
    try:
        from edgeship.targets.backends.litert_run import LiteRTSession

        return LiteRTSession(release / "model.tflite")
    except ImportError as err:
        if (err.name or "").split(".")[0] not in ("ai_edge_litert", "tflite_runtime"):
            raise AgentError(f"smoke test: the LiteRT runner needs module {err.name!r}, which this device lacks: "
                             f"{RUNTIMES['litert'].install}", "smoke-failed") from None
        raise AgentError(f"smoke test: LiteRT is not installed: {RUNTIMES['litert'].install}", "smoke-failed") from None
    except Exception as err:
        if "pip install" in str(err):
            raise AgentError(f"smoke test: {err}", "smoke-failed") from None
        raise


def _onnxruntime_session(model: Path):
    """Single-threaded, quiet: the smoke test times one core, like the build's latency figures.
    Imported here: a board running only LiteRT or RKNN artifacts need not load onnxruntime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def smoke_test(release: Path, config: SmokeConfig) -> dict:
    """Load the release's model in the runtime its bundle names (onnxruntime, LiteRT for a .tflite,
    rknn-toolkit-lite2 for a .rknn, OpenVINO for IR on the device it was built for), run its samples,
    check outputs and p95 latency. MCU artifacts (TFLite Micro) are refused: they are flashed.

    Returns the figures on success; raises AgentError(reason="smoke-failed", figures=...) otherwise.
    """
    release = Path(release)
    try:
        meta = json.loads((release / "bundle.json").read_text())
    except (OSError, ValueError) as err:
        raise AgentError(f"smoke test: bundle.json unreadable: {err}", "smoke-failed") from None
    runtime = meta.get("runtime", "onnxruntime")
    if runtime.startswith("tflite-micro"):
        raise AgentError(f"smoke test: this artifact is for runtime {runtime!r} (a microcontroller firmware build: flash "
                         "model_data.cc/.h with TensorFlow Lite Micro); a Linux device agent cannot run it - build for "
                         "this device's target instead", "smoke-failed")
    if runtime not in RUNNERS:
        raise AgentError(f"smoke test: this agent has no runner for runtime {runtime!r} (it runs "
                         f"{', '.join(RUNNERS[:-1])} and {RUNNERS[-1]})", "smoke-failed")
    try:
        if runtime == "rknn-toolkit-lite2":
            from edgeship.fleet.rknn_runtime import rknn_session

            session = rknn_session(release)
        elif runtime == "openvino":
            from edgeship.fleet.openvino_runtime import openvino_session

            session = openvino_session(release)
        elif runtime == "litert":
            session = _litert_session(release)
        else:
            session = _onnxruntime_session(release / "model.onnx")
    except AgentError:
        raise
    except Exception as err:  # onnxruntime raises its own exception types for bad models
        raise AgentError(f"smoke test: model does not load: {str(err).splitlines()[0][:200]}", "smoke-failed") from None
    samples = _load_samples(release, session, config.samples)

    timings: list[float] = []
    # one inference as the build timed it: a LiteRT session on inputs quantized once, onnxruntime on the float feed
    from edgeship.targets.backends.litert_run import timed_call

    try:
        session.run(None, samples[0])  # warm-up: first run pays allocation costs
        for feed in samples:
            call = timed_call(session, feed)
            for _ in range(config.runs):
                start = time.perf_counter()
                outputs = call()
                timings.append((time.perf_counter() - start) * 1000.0)
                for out in outputs:
                    arr = np.asarray(out)
                    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
                        raise AgentError("smoke test: model produced non-finite outputs (NaN/Inf)", "smoke-failed",
                                         {"samples": len(samples)})
    except AgentError:
        raise
    except Exception as err:
        raise AgentError(f"smoke test: inference failed: {str(err).splitlines()[0][:200]}", "smoke-failed") from None

    p50, p95 = _percentile(timings, 50), _percentile(timings, 95)
    budget = _budget_p95(meta)
    limits = []
    if budget is not None:
        limits.append(budget * config.latency_tolerance)
    if config.max_latency_ms is not None:
        limits.append(float(config.max_latency_ms))
    limit = min(limits) if limits else None
    figures = {
        "samples": len(samples),
        "runs": len(timings),
        "p50_ms": round(p50, 4),
        "p95_ms": round(p95, 4),
        "budget_p95_ms": budget,
        "tolerance": config.latency_tolerance,
        "max_latency_ms": config.max_latency_ms,
        "limit_ms": round(limit, 4) if limit is not None else None,
        "p95_ratio": round(p95 / budget, 6) if budget else None,
    }
    if runtime == "openvino":  # which plugin was timed, at which precision: a CPU figure is not an NPU figure
        figures.update(device=session.device, precision=session.precision)
    if limit is not None and p95 > limit:
        raise AgentError(
            f"smoke test failed: p95 {p95:.3f} ms exceeds the limit of {limit:.3f} ms"
            + (f" (budget {budget} ms x tolerance {config.latency_tolerance})" if budget is not None and limit == budget * config.latency_tolerance else " (smoke.max_latency_ms)"),
            "smoke-failed",
            figures,
        )
    return figures
