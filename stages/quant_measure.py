"""Running models on this host: outputs for accuracy, and latency that survives a noisy machine.

Shared by quantize (auto compares candidates) and validate (the budget check). Latency of several
candidates is measured interleaved, round by round, so a burst of load from another process hits
every candidate alike instead of deciding the ranking.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import onnxruntime as ort

from edgeship.errors import BuildError
from edgeship.pipelines.data import iter_samples
from edgeship.targets.backends.litert_run import timed_call


def session(path: Path | str, threads: int = 1, profile_prefix: str | None = None) -> ort.InferenceSession:
    """A CPU session; `threads=0` lets onnxruntime use every core."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - an invalid model is a build failure, not a traceback
        raise BuildError(f"onnxruntime cannot load {Path(path).name}: {str(exc).splitlines()[0]}") from None


def output_names(sess: ort.InferenceSession) -> list[str]:
    return [o.name for o in sess.get_outputs()]


def run_all(sess: ort.InferenceSession, data: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run every sample; returns one `(N, *output_shape)` array per output."""
    per_output: list[list[np.ndarray]] = []
    names = {i.name for i in sess.get_inputs()}
    for feed in iter_samples(data):
        outs = sess.run(None, {k: v for k, v in feed.items() if k in names})
        if not per_output:
            per_output = [[] for _ in outs]
        for slot, value in zip(per_output, outs):
            slot.append(np.asarray(value))
    return [np.stack(values) for values in per_output]


def tensor_values(model_path: Path, tensors: list[str], data: Mapping[str, np.ndarray], workdir: Path) -> dict[str, np.ndarray]:
    """Intermediate tensors of a model on `data`, stacked `(N, ...)`: exposed as extra graph outputs."""
    import onnx

    model = onnx.load(str(model_path))
    produced = {o for n in model.graph.node for o in n.output}
    present = {o.name for o in model.graph.output}
    for name in tensors:
        if name in produced and name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    path = Path(workdir) / f"probe-{Path(model_path).stem}.onnx"
    onnx.save(model, str(path))
    try:
        sess = session(path, threads=0)
        values = dict(zip(output_names(sess), run_all(sess, data)))
    finally:
        path.unlink(missing_ok=True)
    return {name: values[name] for name in tensors if name in values}


def first_feed(data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return next(iter_samples(data))


def time_runs(sess, feed: dict, runs: int) -> list[float]:
    """Milliseconds of each of `runs` inferences (an onnxruntime or a LiteRT session)."""
    return _time_call(timed_call(sess, feed), runs)


def _time_call(call, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def latency(sess, feed: dict, warmup: int = 10, runs: int = 50) -> list[float]:
    """Milliseconds per run after `warmup` untimed runs."""
    time_runs(sess, feed, warmup)
    return time_runs(sess, feed, runs)


def interleaved_p50(paths: Mapping[str, Path], feed: dict, rounds: int = 5, runs: int = 10, threads: int = 1) -> dict[str, float]:
    """Median latency (ms) per ONNX model under onnxruntime, measured round-robin (interleaved_sessions_p50)."""
    return interleaved_sessions_p50({name: session(path, threads) for name, path in paths.items()}, feed, rounds, runs)


def interleaved_sessions_p50(sessions: Mapping[str, object], feed: dict, rounds: int = 5, runs: int = 10) -> dict[str, float]:
    """Median latency (ms) per session (onnxruntime or LiteRT), measured round-robin so background load
    hits all alike."""
    calls = {name: timed_call(sess, feed) for name, sess in sessions.items()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        _time_call(call, 3)
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name].extend(_time_call(call, runs))
    return {name: float(np.median(values)) for name, values in samples.items()}


def runs_within(paths: Mapping[str, Path], feed: dict, budget_ms: float, low: int, high: int) -> int:
    """Timed runs per model and round so the slowest model takes about `budget_ms` (within [low, high])."""
    return runs_within_sessions({name: session(path, threads=1) for name, path in paths.items()}, feed, budget_ms,
                                low, high)


def runs_within_sessions(sessions: Mapping[str, object], feed: dict, budget_ms: float, low: int, high: int) -> int:
    """runs_within for sessions already made (onnxruntime or LiteRT)."""
    slowest = 0.0
    for sess in sessions.values():
        time_runs(sess, feed, 1)
        slowest = max(slowest, min(time_runs(sess, feed, 2)))
    return int(max(low, min(high, budget_ms / max(slowest, 1e-3))))


def percentiles(times_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(times_ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "p99": float(np.percentile(arr, 99)),
        "mean": float(arr.mean()), "min": float(arr.min()), "runs": int(arr.size),
    }


def all_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
