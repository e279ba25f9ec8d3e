"""The calibration fit recovers known factors from synthetic measurements (no timing involved)."""

import pytest

from edgeship.targets import calibration_models as cm
from edgeship.targets.calibrate import Measurement, compare_rows, fit, summary, with_cost_model
from edgeship.targets.costmodel import node_work
from edgeship.targets.graphinfo import GraphInfo

from .graphs import npu_profile

TRUTH = {"Conv": 0.25, "MatMul": 0.4}
BW_EFF, OVERHEAD, PER_RUN = 0.5, 2.0, 6.0


def synthetic(model: cm.CalibrationModel, profile: dict) -> Measurement:
    """What onnxruntime would report if the machine followed the roofline with TRUTH exactly."""
    g = GraphInfo(model.model, model.inputs)
    peak = profile["compute"]["accelerator"]["peak_tops"]["float32"] * 1e12
    bw = profile["memory"]["bandwidth_gb_s"] * 1e9
    kernel: dict[str, float] = {}
    for n in g.active_nodes():
        w = node_work(g, n)
        t = max(w.flops / (peak * TRUTH.get(n.op_type, 0.3)), w.bytes / (bw * BW_EFF)) * 1e6
        kernel[n.op_type] = kernel.get(n.op_type, 0.0) + t
    wall_us = sum(kernel.values()) + OVERHEAD * len(g.active_nodes()) + PER_RUN
    return Measurement(model.name, wall_us / 1000.0, kernel, g)


def cpu_profile() -> dict:
    """Like host-cpu: the accelerator is the CPU, it runs every op, no partition boundary."""
    prof = npu_profile(fallback=False)
    prof["compute"]["host"] = None
    prof["operators"] = {"*": {}}
    return prof


def test_fit_recovers_known_factors():
    profile = cpu_profile()
    measurements = [synthetic(m, profile) for m in cm.builtin_models()]
    factors = fit(measurements, profile)
    assert factors["efficiency"]["Conv"] == pytest.approx(TRUTH["Conv"], rel=0.1)
    assert factors["efficiency"]["MatMul"] == pytest.approx(TRUTH["MatMul"], rel=0.1)
    assert factors["bandwidth_efficiency"] == pytest.approx(BW_EFF, rel=0.15)
    assert factors["per_node_overhead_us"] == pytest.approx(OVERHEAD, abs=1.0)
    assert factors["per_run_overhead_us"] == pytest.approx(PER_RUN, abs=3.0)
    rows = compare_rows(measurements, with_cost_model(profile, factors))
    assert summary(rows)["median_abs_error_pct"] < 5
    assert all(0 < v <= 1 for v in factors["efficiency"].values())  # the schema's bound


def test_per_run_overhead_has_its_own_key():
    """calibrate files the per-run overhead under cost_model.per_run_overhead_us (schema key); the cost
    model prefers it and still reads the old place (the `calibrated` record) of older overrides."""
    import yaml

    from edgeship.targets.calibrate import write_override
    from edgeship.targets.profileview import ProfileView

    factors = {"efficiency": {"default": 0.2}, "bandwidth_efficiency": 0.5, "per_node_overhead_us": 1.0,
               "per_run_overhead_us": 4.5}
    path = write_override("host-cpu", factors, [{"model": "m", "error_pct": 1.0, "ratio": 1.01}], 1)
    cost_model = yaml.safe_load(path.read_text(encoding="utf-8"))["cost_model"]
    assert cost_model["per_run_overhead_us"] == 4.5
    assert "per_run_overhead_us" not in cost_model["calibrated"]
    assert ProfileView({"cost_model": cost_model}).per_run_overhead_us() == 4.5
    old = {"cost_model": {"calibrated": {"per_run_overhead_us": 3.0}}}
    assert ProfileView(old).per_run_overhead_us() == 3.0
    both = {"cost_model": {"per_run_overhead_us": 2.0, "calibrated": {"per_run_overhead_us": 3.0}}}
    assert ProfileView(both).per_run_overhead_us() == 2.0


def test_fit_overheads_jointly_with_scale():
    """Profiling slows every kernel (here by 25%): the per-op-type fit then overestimates the roofline
    bodies, and the scale, per-node and per-run overheads - fitted jointly on the plain-run latencies,
    in log space - must absorb that without pushing the fixed costs of tiny models into the big ones."""
    profile = cpu_profile()
    measurements = [synthetic(m, profile) for m in cm.builtin_models()]
    for m in measurements:
        m.kernel_us = {op: us * 1.25 for op, us in m.kernel_us.items()}
    factors = fit(measurements, profile)
    assert factors["per_node_overhead_us"] == pytest.approx(OVERHEAD, abs=0.5)
    assert factors["per_run_overhead_us"] == pytest.approx(PER_RUN, abs=1.5)
    rows = compare_rows(measurements, with_cost_model(profile, factors))
    assert max(r["ratio"] for r in rows) < 1.05
