"""Calibrate the cost model on the one target this machine can measure (host-cpu).

Each calibration model runs under onnxruntime twice: once with `enable_profiling` (per-kernel
durations, summed per ONNX op type, since onnxruntime renames and fuses nodes) and once plain
(wall-clock latency, what `validate` measures). The fit then chooses, per op type, the efficiency
(fraction of peak compute) and one bandwidth efficiency so the roofline's per-op-type time matches
the profiled kernel time, and a per-node overhead so the total matches the wall clock. The fitted
factors go into a local profile override (state_dir()/targets/<target>.yaml), deep-merged on top of
the packaged profile by `load_target`.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import yaml

from edgeship.errors import TargetError
from edgeship.targets.calibration_models import CalibrationModel
from edgeship.targets.costmodel import estimate, node_work
from edgeship.targets.graphinfo import GraphInfo
from edgeship.targets.placement import legalize
from edgeship.targets.profile import override_dir
from edgeship.targets.profileview import ProfileView

# onnxruntime kernel names -> the ONNX op type whose time they are
ORT_OP_ALIASES = {
    "FusedConv": "Conv", "NchwcConv": "Conv", "QLinearConv": "Conv", "ConvInteger": "Conv", "ReorderInput": "Conv",
    "ReorderOutput": "Conv", "FusedGemm": "Gemm", "QGemm": "Gemm", "FusedMatMul": "MatMul", "QLinearMatMul": "MatMul",
    "MatMulInteger": "MatMul", "MatMulIntegerToFloat": "MatMul", "DynamicQuantizeMatMul": "MatMul",
    "DynamicQuantizeLinear": "QuantizeLinear", "QLinearAdd": "Add", "QLinearMul": "Mul",
    "QLinearGlobalAveragePool": "GlobalAveragePool", "QLinearAveragePool": "AveragePool", "QLinearConcat": "Concat",
    "QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu", "QLinearSoftmax": "Softmax",
}
MAX_RUNS = 40
RUN_BUDGET_S = 1.0
MIN_SHARE = 0.01  # op types under 1% of the measured time share one "default" efficiency
EFF_GRID = np.geomspace(1e-4, 1.0, 120)
BW_GRID = np.geomspace(0.02, 1.0, 30)


@dataclass
class Measurement:
    """One model measured on this machine."""

    name: str
    wall_ms: float  # latency of one session.run (see `clock`)
    kernel_us: dict[str, float]  # ONNX op type -> summed kernel time per run (median over runs)
    graph: GraphInfo = field(repr=False)
    runs: int = 0
    clock: str = "wall"  # "cpu": single-thread CPU time (immune to other load); "wall": best wall clock


def _session(model_bytes: bytes, profile_prefix: str | None, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        if threads == 1:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _feeds(session, shapes: dict) -> dict:
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in session.get_inputs():
        shape = shapes.get(inp.name) or [d if isinstance(d, int) else 1 for d in inp.shape]
        dtype = np.float32 if "float" in inp.type else np.int64
        feeds[inp.name] = rng.standard_normal(shape).astype(dtype) if dtype is np.float32 else np.zeros(shape, dtype)
    return feeds


def _kernel_times(profile_path: str, warmup: int) -> tuple[list[dict[str, float]], list[float]]:
    """Per run: ONNX op type -> summed kernel microseconds; and each run's model_run microseconds."""
    with open(profile_path, encoding="utf-8") as fh:
        events = json.load(fh)
    runs: list[dict[str, float]] = []
    run_us: list[float] = []
    current: dict[str, float] = {}
    for ev in events:
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            op = ORT_OP_ALIASES.get(op, op)
            current[op] = current.get(op, 0.0) + float(ev.get("dur", 0))
        elif ev.get("cat") == "Session" and ev.get("name") == "model_run":
            runs.append(current)
            run_us.append(float(ev.get("dur", 0)))
            current = {}
    return runs[warmup:] or runs, run_us[warmup:] or run_us


def _timed(run) -> tuple[float, float]:
    """(wall ms, CPU ms of this thread) of one call."""
    w, c = time.perf_counter(), time.thread_time()
    run()
    return (time.perf_counter() - w) * 1000.0, (time.thread_time() - c) * 1000.0


def measure(cm: CalibrationModel, runs: int = 5, warmup: int = 2, threads: int | None = None) -> Measurement:
    """Profile and time one model with onnxruntime on this machine.

    Single-threaded (threads=1, the default of `calibrate`), onnxruntime computes in the calling
    thread, so its CPU time is the latency the model takes on one core, however busy the machine is
    with other work (wall clock there swings 2-3x); profiled kernel times are scaled by that run's
    CPU/wall ratio. Multi-threaded, the best wall-clock run is used instead.
    """
    data = cm.model.SerializeToString()
    graph = GraphInfo(cm.model, cm.inputs)
    cpu_clock = threads == 1
    with tempfile.TemporaryDirectory(prefix="edgeship-calib-") as tmp:
        sess = _session(data, os.path.join(tmp, "prof"), threads)
        feeds = _feeds(sess, cm.inputs)
        run = lambda: sess.run(None, feeds)  # noqa: E731
        run()  # the first run allocates: not a measure of speed
        first = _timed(run)
        # fast models get more runs (up to MAX_RUNS within ~RUN_BUDGET_S)
        runs = max(runs, min(MAX_RUNS, int(RUN_BUDGET_S * 1000.0 / max(first[1 if cpu_clock else 0], 1e-3))))
        clocks = [first] + [_timed(run) for _ in range(max(0, warmup - 2) + runs)]
        per_run, _ = _kernel_times(sess.end_profiling(), 0)
        del sess
    skip = max(warmup, 2)
    per_run, clocks = per_run[skip:] or per_run, clocks[skip - 1:]
    if cpu_clock and len(per_run) == len(clocks):
        per_run = [{op: us * min(1.0, c / w) for op, us in r.items()} for r, (w, c) in zip(per_run, clocks)]
        ops = sorted({op for r in per_run for op in r})
        kernel_us = {op: statistics.median(r.get(op, 0.0) for r in per_run) for op in ops}
    else:  # the least disturbed run (smallest total kernel time)
        kernel_us = dict(min(per_run, key=lambda r: sum(r.values()))) if per_run else {}
    plain = _session(data, None, threads)
    run = lambda: plain.run(None, feeds)  # noqa: E731
    for _ in range(warmup):
        run()
    timed = [_timed(run) for _ in range(runs)]
    if cpu_clock:
        latency = statistics.median(c for _, c in timed)
    else:  # best wall clock: other processes on a shared machine only ever add time
        latency = min(w for w, _ in timed)
    return Measurement(cm.name, latency, kernel_us, graph, runs, "cpu" if cpu_clock else "wall")


# -- fitting --------------------------------------------------------------------------------------------
def _node_terms(m: Measurement, view: ProfileView) -> list[tuple[str, float, float]]:
    """(op type, compute us at 100% peak, memory us at 100% bandwidth) for each active node."""
    out = []
    bw = view.bandwidth_bytes_per_s()
    for n in m.graph.active_nodes():
        w = node_work(m.graph, n)
        peak, _ = view.peak_ops_per_s("accelerator", w.fmt)
        c = w.flops / peak * 1e6 if peak else 0.0
        mem = w.bytes / bw * 1e6 if bw else 0.0
        out.append((n.op_type, c, mem))
    return out


def fit(measurements: list[Measurement], profile) -> dict:
    """Fitted `cost_model` section: efficiency per op type, bandwidth_efficiency, per_node_overhead_us."""
    view = profile if isinstance(profile, ProfileView) else ProfileView(profile)
    if not measurements:
        raise TargetError("calibration needs at least one measured model")
    terms = [_node_terms(m, view) for m in measurements]
    total_by_op: dict[str, float] = {}
    for m in measurements:
        for op, us in m.kernel_us.items():
            total_by_op[op] = total_by_op.get(op, 0.0) + us
    grand = sum(total_by_op.values()) or 1.0
    modelled_ops = {op for t in terms for op, _, _ in t}
    major = sorted(op for op in modelled_ops if total_by_op.get(op, 0.0) / grand >= MIN_SHARE)
    group = lambda op: op if op in major else "default"  # noqa: E731
    groups = sorted(set(map(group, modelled_ops)))
    walls = np.array([m.wall_ms * 1000.0 for m in measurements])

    def arrays(g: str):
        """Per group: node compute/memory terms with their model index, and measured time per model."""
        idx, comp, mem = [], [], []
        for mi, t in enumerate(terms):
            for op, c, mm in t:
                if group(op) == g:
                    idx.append(mi)
                    comp.append(c)
                    mem.append(mm)
        measured = np.zeros(len(measurements))
        for mi, m in enumerate(measurements):
            measured[mi] = sum(us for op, us in m.kernel_us.items() if op in modelled_ops and group(op) == g)
        return np.array(idx, dtype=int), np.array(comp), np.array(mem), measured

    data = {g: arrays(g) for g in groups}

    def search(bw_grid, eff_grids: dict) -> tuple[float, float, dict]:
        """Best (loss, bandwidth efficiency, {group: efficiency}) over the grids. Given the bandwidth
        efficiency, each group's loss is independent, so the search is exhaustive and cheap."""
        best = None
        for b in bw_grid:
            total_loss, chosen = 0.0, {}
            for g, (idx, comp, mem, measured) in data.items():
                grid = eff_grids[g]
                # predicted time per model for every efficiency on the grid: shape (E, models)
                per_node = np.maximum(comp[None, :] / grid[:, None], mem[None, :] / b)
                pred = np.zeros((len(grid), len(measurements)))
                for mi in range(len(measurements)):
                    pred[:, mi] = per_node[:, idx == mi].sum(axis=1)
                loss = (((pred - measured[None, :]) / walls[None, :]) ** 2).sum(axis=1)
                k = int(np.argmin(loss)) if comp.any() else len(grid) - 1  # no arithmetic: efficiency unused
                chosen[g] = float(grid[k])
                total_loss += float(loss[k])
            if best is None or total_loss < best[0]:
                best = (total_loss, float(b), chosen)
        return best

    _, b0, e0 = search(BW_GRID, {g: EFF_GRID for g in groups})
    fine = np.geomspace(0.88, 1.14, 17)  # refine around the coarse optimum (the grid step is ~8-14%)
    best = search(np.minimum(1.0, b0 * fine), {g: np.clip(e0[g] * fine, EFF_GRID[0], 1.0) for g in groups})
    _, bw_eff, effs = best
    # overhead: what the wall clock has beyond the fitted kernel times, per node, fitted by least
    # squares on the relative error (so a 2 ms model counts as much as a 40 ms one)
    bodies = np.array([sum(max(c / effs[group(op)], mm / bw_eff) for op, c, mm in t) for t in terms])
    counts = np.array([len(t) for t in terms], dtype=float)
    den = float(((counts / walls) ** 2).sum())
    overhead = max(0.0, float(((counts * (walls - bodies)) / walls**2).sum()) / den) if den else 0.0
    efficiency = {"default": round(effs.get("default", view.efficiency("default")), 4)}
    for g in groups:
        if g != "default" and data[g][1].any():
            efficiency[g] = round(effs[g], 4)
    return {"efficiency": efficiency, "bandwidth_efficiency": round(bw_eff, 4), "per_node_overhead_us": round(overhead, 3)}


def compare_rows(measurements: list[Measurement], profile) -> list[dict]:
    """Estimated vs measured latency per model under `profile` (already carrying the factors)."""
    view = profile if isinstance(profile, ProfileView) else ProfileView(profile)
    rows = []
    for m in measurements:
        est = estimate(m.graph, view, legalize(m.graph, view))["latency_ms"]
        err = (est - m.wall_ms) / m.wall_ms if m.wall_ms else 0.0
        rows.append({"model": m.name, "estimated_ms": round(est, 3), "measured_ms": round(m.wall_ms, 3),
                     "error_pct": round(100.0 * err, 1), "ratio": round(max(est, m.wall_ms) / max(1e-9, min(est, m.wall_ms)), 2)})
    return rows


def with_cost_model(profile, cost_model: dict) -> ProfileView:
    """A copy of the profile with `cost_model` replaced (to compare before/after without touching disk)."""
    view = profile if isinstance(profile, ProfileView) else ProfileView(profile)
    data = json.loads(json.dumps(view.data))
    data["cost_model"] = {**data.get("cost_model", {}), **cost_model}
    return ProfileView(data)


def summary(rows: list[dict]) -> dict:
    errs = [abs(r["error_pct"]) for r in rows]
    return {"models": len(rows), "median_abs_error_pct": round(statistics.median(errs), 1) if errs else None,
            "max_ratio": max((r["ratio"] for r in rows), default=None)}


def write_override(target: str, cost_model: dict, rows: list[dict], threads: int | None) -> Path:
    """Merge the fitted factors into state_dir()/targets/<target>.yaml (other keys there are kept)."""
    folder = override_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{target}.yaml"
    existing = {}
    if path.is_file():
        existing = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    import onnxruntime as ort

    calibrated = {
        "at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "onnxruntime": ort.__version__,
        "cpu_count": os.cpu_count(),
        "threads": threads or "default",
        "models": [r["model"] for r in rows],
        **summary(rows),
    }
    existing["cost_model"] = {**cost_model, "calibrated": calibrated}
    header = "# Written by `edgeship calibrate`: cost model factors fitted on this machine. Safe to delete.\n"
    path.write_text(header + yaml.safe_dump(existing, sort_keys=False), encoding="utf-8")
    return path


def leave_one_out(measurements: list[Measurement], profile) -> list[dict]:
    """Each model estimated with factors fitted on all the others: how well calibration generalises."""
    rows = []
    for i, m in enumerate(measurements):
        rest = measurements[:i] + measurements[i + 1:]
        factors = fit(rest, profile)
        rows += compare_rows([m], with_cost_model(profile, factors))
    return rows
