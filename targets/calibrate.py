"""Calibrate the cost model on the one target this machine can measure (host-cpu).

Each calibration model runs under onnxruntime twice: once with `enable_profiling` (per-kernel
durations, summed per ONNX op type, since onnxruntime renames and fuses nodes) and once plain (the
latency of a run: single-thread CPU time by default, see `measure`). The fit then chooses, per op
type, the efficiency (fraction of peak compute) and one bandwidth efficiency so the roofline's
per-op-type time matches the profiled kernel time, and per-node and per-run overheads so the total
matches the measured latency. The fitted factors go into a local profile override (state_dir()/targets/<target>.yaml), deep-merged on top of
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
import yaml

from edgeship.errors import TargetError
from edgeship.targets.calibration_models import CalibrationModel
from edgeship.targets.costmodel import QUANTIZED_NAMES, efficiency_key, estimate, node_work
from edgeship.targets.graphinfo import GraphInfo, ort_cpu_fuses
from edgeship.targets.placement import legalize
from edgeship.targets.profile import override_dir
from edgeship.targets.profileview import ProfileView

# onnxruntime kernel names -> the ONNX op type whose time they are
ORT_OP_ALIASES = {
    "FusedConv": "Conv", "NchwcConv": "Conv", "ConvInteger": "QLinearConv", "ReorderInput": "Conv",
    "ReorderOutput": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul",
    "MatMulInteger": "QLinearMatMul", "MatMulIntegerToFloat": "QLinearMatMul", "DynamicQuantizeMatMul": "QLinearMatMul",
    "DynamicQuantizeLinear": "QuantizeLinear", "QLinearAdd": "Add", "QLinearMul": "Mul",
    "QLinearGlobalAveragePool": "GlobalAveragePool", "QLinearAveragePool": "AveragePool", "QLinearConcat": "Concat",
    "QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu", "QLinearSoftmax": "Softmax",
    "NhwcMaxPool": "MaxPool", "QLinearGlobalMaxPool": "GlobalMaxPool",
}
MAX_RUNS = 40
RUN_BUDGET_S = 1.0
MIN_SHARE = 0.01  # op types under 1% of all measured time share one "default" efficiency ...
MIN_MODEL_SHARE = 0.25  # ... unless they take a quarter of some model's time
MIN_MODEL_US = 100.0  # (a model under 0.1 ms is all overhead: it does not make an op type major)
KERNEL_OVERHEAD_GRID = [0.0, 0.5, 1.0]  # us per kernel launch
ORT_FALLBACK = {"Gemm": "MatMul", "FusedGemm": "MatMul"}  # onnxruntime fuses MatMul + bias Add into Gemm
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


def measure(cm: CalibrationModel, runs: int = 5, warmup: int = 2, threads: int | None = None,
            run_budget_s: float = RUN_BUDGET_S) -> Measurement:
    """Profile and time one model with onnxruntime on this machine.

    Single-threaded (threads=1, the default of `calibrate`), onnxruntime computes in the calling
    thread, so its CPU time is the latency the model takes on one core, however busy the machine is
    with other work (wall clock there swings 2-3x); profiled kernel times are scaled by that run's
    CPU/wall ratio. Multi-threaded, the best wall-clock run is used instead.
    """
    data = cm.model.SerializeToString()
    graph = GraphInfo(cm.model, cm.inputs, fusable=ort_cpu_fuses)  # what onnxruntime's CPU EP fuses
    cpu_clock = threads == 1
    with tempfile.TemporaryDirectory(prefix="edgeship-calib-") as tmp:
        sess = _session(data, os.path.join(tmp, "prof"), threads)
        feeds = _feeds(sess, cm.inputs)
        run = lambda: sess.run(None, feeds)  # noqa: E731
        run()  # the first run allocates: not a measure of speed
        first = _timed(run)
        # fast models get more runs (up to MAX_RUNS within ~RUN_BUDGET_S)
        runs = max(runs, min(MAX_RUNS, int(run_budget_s * 1000.0 / max(first[1 if cpu_clock else 0], 1e-3))))
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
        fmt = w.fmt
        if w.depthwise and fmt in ("int8", "uint8") and view.unit_is_cpu("accelerator"):
            fmt = "float32"  # as costmodel.node_time: no int8 dot-product speed-up without a channel reduction
        peak, _ = view.peak_ops_per_s("accelerator", fmt)
        c = w.flops / peak * 1e6 if peak else 0.0
        mem = w.bytes / bw * 1e6 if bw else 0.0
        out.append((efficiency_key(w), c, mem))
    return out


def _kernel_us_for(m: Measurement, modelled: set[str]) -> dict[str, float]:
    """Measured kernel time per ONNX op type of the model: onnxruntime kernels whose op type the
    model does not have are mapped (MatMul+Add fused into Gemm) or left to the "default" group."""
    out: dict[str, float] = {}
    for op, us in m.kernel_us.items():
        if op not in modelled and ORT_FALLBACK.get(op) in modelled:
            op = ORT_FALLBACK[op]
        out[op] = out.get(op, 0.0) + us
    return out


def fit(measurements: list[Measurement], profile) -> dict:
    """Fitted factors: the `cost_model` section (efficiency per op type - int8 Conv/MatMul under their
    quantized names QLinearConv/QLinearMatMul, whose speed differs from the float kernels' -,
    bandwidth_efficiency, per_node_overhead_us, per_run_overhead_us).

    Two steps. The per-op-type fit (`_fit_float`) matches the roofline to the profiled kernel times;
    then `_fit_totals` fits the model of a run - latency = roofline body / scale + per-node overhead x
    nodes + per-run overhead - jointly to the measured latencies, in log space, so a 10 us model
    counts as much as a 90 ms one and over- and underestimates by the same factor cost the same."""
    if not measurements:
        raise TargetError("calibration needs at least one measured model")
    view = profile if isinstance(profile, ProfileView) else ProfileView(profile)
    return _fit_totals(measurements, view, _fit_float(measurements, view))


def _bodies(measurements: list[Measurement], view: ProfileView, eff: dict, bw_eff: float) -> np.ndarray:
    """Roofline time of each model's nodes (no overheads) under the factors, as the cost model
    computes it (a quantized op without its own entry takes its float op's, else default)."""
    float_of = {q: f for f, q in QUANTIZED_NAMES.items()}
    out = []
    for m in measurements:
        out.append(sum(max(c / eff.get(op, eff.get(float_of.get(op, ""), eff["default"])), mm / bw_eff)
                       for op, c, mm in _node_terms(m, view)))
    return np.array(out, dtype=float)


def _fit_totals(measurements: list[Measurement], view: ProfileView, factors: dict) -> dict:
    """Scale, per-node and per-run overhead, jointly and non-negative, on the measured latencies.

    One common scale on every efficiency (and the bandwidth efficiency) corrects what the per-op-type
    fits miss together (both roofline terms scale by 1/scale, so a model's body is body/scale); the
    overheads are the fixed costs the kernels do not show (dispatch between nodes, session entry and
    input/output binding). Loss: sum(log(estimate / measured)^2). Efficiencies stay <= 1 (schema): if
    scaling clamps one, the overheads are refitted with the clamped bodies."""
    eff, bw_eff = factors["efficiency"], factors["bandwidth_efficiency"]
    walls = np.array([m.wall_ms * 1000.0 for m in measurements])
    counts = np.array([len(m.graph.active_nodes()) for m in measurements], dtype=float)
    bodies = _bodies(measurements, view, eff, bw_eff)
    theta = _nnls_log(np.stack([bodies, counts, np.ones_like(walls)], axis=1), np.zeros_like(walls), walls)
    inv_scale, per_node, per_run = (float(v) for v in theta)
    if inv_scale <= 0:  # degenerate (overheads alone explain every model): keep the kernel fit's scale
        inv_scale = 1.0
        per_node, per_run = (float(v) for v in _nnls_log(np.stack([counts, np.ones_like(walls)], axis=1), bodies, walls))
    lam = 1.0 / inv_scale
    scaled = {k: round(min(1.0, v * lam), 4) for k, v in eff.items()}
    scaled_bw = round(min(1.0, bw_eff * lam), 4)
    if any(v * lam > 1.0 for v in eff.values()) or bw_eff * lam > 1.0:
        bodies = _bodies(measurements, view, scaled, scaled_bw)
        per_node, per_run = (float(v) for v in _nnls_log(np.stack([counts, np.ones_like(walls)], axis=1), bodies, walls))
    return dict(factors, efficiency=scaled, bandwidth_efficiency=scaled_bw,
                per_node_overhead_us=round(per_node, 3), per_run_overhead_us=round(per_run, 3))


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin ||a x - b|| over x >= 0, for a few columns: the best feasible least-squares solution over
    every subset of free columns (exact - the optimum is the unconstrained fit on its support)."""
    n = a.shape[1]
    best, best_loss = np.zeros(n), float(b @ b)
    for mask in range(1, 2**n):
        cols = [j for j in range(n) if mask >> j & 1]
        sol, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
        if (sol < 0).any():
            continue
        x = np.zeros(n)
        x[cols] = sol
        loss = float(((a @ x - b) ** 2).sum())
        if loss < best_loss - 1e-15:
            best, best_loss = x, loss
    return best


def _nnls_log(a: np.ndarray, offset: np.ndarray, walls: np.ndarray, iters: int = 50) -> np.ndarray:
    """argmin sum(log((offset + a x) / walls)^2) over x >= 0: projected Gauss-Newton with step halving,
    started from least squares on the relative error (offset + a x - walls) / walls."""
    def loss(x):
        pred = offset + a @ x
        return float((np.log(pred / walls) ** 2).sum()) if (pred > 0).all() else float("inf")

    x = _nnls(a / walls[:, None], 1.0 - offset / walls)
    cur = loss(x)
    for _ in range(iters):
        pred = offset + a @ x
        if not (pred > 0).all():
            break
        # linearised: log(pred'/w) ~ log(pred/w) + (a (x' - x)) / pred
        target = (a @ x) / pred - np.log(pred / walls)
        step = _nnls(a / pred[:, None], target) - x
        t = 1.0
        while t > 1e-4:
            cand = x + t * step
            new = loss(cand)
            if new < cur:
                break
            t /= 2
        else:
            break
        converged = cur - new < 1e-12 * max(cur, 1.0)
        x, cur = cand, new
        if converged:
            break
    return x


def _fit_float(measurements: list[Measurement], profile) -> dict:
    view = profile if isinstance(profile, ProfileView) else ProfileView(profile)
    terms = [_node_terms(m, view) for m in measurements]
    kernels = [_kernel_us_for(m, {op for op, _, _ in t}) for m, t in zip(measurements, terms)]
    modelled_ops = {op for t in terms for op, _, _ in t}
    total_by_op: dict[str, float] = {}
    for k in kernels:
        for op, us in k.items():
            total_by_op[op] = total_by_op.get(op, 0.0) + us
    grand = sum(total_by_op.values()) or 1.0

    def share_in_some_model(op: str) -> float:
        return max((k.get(op, 0.0) / sum(k.values()) for k in kernels if sum(k.values()) >= MIN_MODEL_US), default=0.0)

    # an op type gets its own factor when it matters overall or dominates at least one (non-tiny) model
    major = sorted(op for op in modelled_ops
                   if total_by_op.get(op, 0.0) / grand >= MIN_SHARE or share_in_some_model(op) >= MIN_MODEL_SHARE)
    float_of = {q: f for f, q in QUANTIZED_NAMES.items()}

    def group(op: str) -> str:
        """An op's factor: its own, else (quantized ops) its float op's, else default - the same
        fallback the cost model uses when the table has no entry."""
        if op in major:
            return op
        if float_of.get(op) in major:
            return float_of[op]
        return "default"

    groups = sorted(set(map(group, modelled_ops)) | {"default"})
    walls = np.array([m.wall_ms * 1000.0 for m in measurements])

    def arrays(g: str):
        """Per group: node compute/memory terms with their model index, and measured time per model
        (the default group also takes kernels the model has no op type for)."""
        idx, comp, mem = [], [], []
        for mi, t in enumerate(terms):
            for op, c, mm in t:
                if group(op) == g:
                    idx.append(mi)
                    comp.append(c)
                    mem.append(mm)
        measured = np.zeros(len(measurements))
        for mi, k in enumerate(kernels):
            measured[mi] = sum(us for op, us in k.items() if (group(op) if op in modelled_ops else "default") == g)
        onehot = np.zeros((len(idx), len(measurements)))
        onehot[np.arange(len(idx)), np.array(idx, dtype=int)] = 1.0
        return onehot, np.array(comp), np.array(mem), measured

    data = {g: arrays(g) for g in groups}

    def search(bw_grid, eff_grids: dict, kernel_overheads) -> tuple[float, float, float, dict]:
        """Best (loss, bandwidth efficiency, per-kernel overhead, {group: efficiency}) over the grids.
        Given the bandwidth efficiency and overhead, each group's loss is independent: exhaustive and cheap."""
        best = None
        for o in kernel_overheads:
            for b in bw_grid:
                total_loss, chosen = 0.0, {}
                for g, (onehot, comp, mem, measured) in data.items():
                    grid = eff_grids[g]
                    # predicted time per model for every efficiency on the grid: shape (E, models)
                    per_node = np.maximum(comp[None, :] / grid[:, None], mem[None, :] / b) + o
                    pred = per_node @ onehot
                    loss = (((pred - measured[None, :]) / walls[None, :]) ** 2).sum(axis=1)
                    k = int(np.argmin(loss)) if comp.any() else len(grid) - 1  # no arithmetic: efficiency unused
                    chosen[g] = float(grid[k])
                    total_loss += float(loss[k])
                if best is None or total_loss < best[0]:
                    best = (total_loss, float(b), float(o), chosen)
        return best

    _, b0, o0, e0 = search(BW_GRID, {g: EFF_GRID for g in groups}, KERNEL_OVERHEAD_GRID)
    fine = np.geomspace(0.88, 1.14, 17)  # refine around the coarse optimum (the grid step is ~8-14%)
    _, bw_eff, kernel_o, effs = search(np.minimum(1.0, b0 * fine), {g: np.clip(e0[g] * fine, EFF_GRID[0], 1.0) for g in groups},
                                       [o0])
    efficiency = {"default": round(effs["default"], 4)}
    for g in groups:
        if g != "default" and data[g][1].any():
            efficiency[g] = round(effs[g], 4)
    # op types the profile names but the fit pooled into "default": the override is deep-merged, so
    # leaving them out would keep their old datasheet guesses next to the fitted default
    for op in (view.data.get("cost_model", {}).get("efficiency") or {}):
        efficiency.setdefault(op, efficiency["default"])
    # the per-kernel launch cost only steadies the per-op-type fit (profiled kernel times carry it);
    # the per-node and per-run overheads are fitted on the measured latencies in `_fit_totals`
    return {"efficiency": efficiency, "bandwidth_efficiency": round(bw_eff, 4),
            "per_node_overhead_us": round(kernel_o, 3), "per_run_overhead_us": 0.0}


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
        **summary(rows),
        "models": [r["model"] for r in rows],
    }
    # per_run_overhead_us is a cost_model key of its own (older overrides kept it in the calibration
    # record: ProfileView.per_run_overhead_us() still reads it there when the key is absent)
    factors = dict(cost_model)
    factors["per_run_overhead_us"] = float(factors.get("per_run_overhead_us", 0.0) or 0.0)
    existing["cost_model"] = {**factors, "calibrated": calibrated}
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
