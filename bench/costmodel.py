"""Cost model accuracy on host-cpu: estimated vs measured latency per model, and the error.

Models: the calibration set (built-in models, their int8 QDQ versions, onnx light_* models), the example models
(examples/*/models/*.onnx) and real exported models shipped with rapidocr-onnxruntime (PP-OCR det,
rec, cls). Every model is measured once with onnxruntime, single-threaded by default, as the CPU time of
a run (median): on a machine shared with other work the wall clock swings 2-3x, the CPU time does not.
Then three estimates:

  profile   the packaged host-cpu figures, uncalibrated
  fitted    factors fitted on every model here (in-sample: what `edgeship calibrate` would write)
  held-out  factors fitted on all the *other* models (leave-one-out: an honest generalisation test)

Goal (issue #4): median absolute error under 25% after calibration, no model over 2x.
Run:  python bench/costmodel.py [--runs 5] [--all] [--threads N]     (bounded: a few minutes at most)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]

# pins for the dynamic dims of the real models
RAPIDOCR_SHAPES = {"det": [1, 3, 320, 320], "rec": [1, 3, 48, 320], "cls": [1, 3, 48, 192]}


def example_models():
    from edgeship.targets.calibration_models import CalibrationModel

    out = []
    for path in sorted(ROOT.glob("examples/*/models/*.onnx")):
        if "-v2" in path.stem:  # same graph as v1, new weights
            continue
        model = onnx.load(str(path))
        out.append(CalibrationModel(f"example:{path.stem}", model, _shapes(model, None)))
    return out


def real_models():
    from edgeship.targets.calibration_models import CalibrationModel

    try:
        import rapidocr_onnxruntime
    except ImportError:
        return []
    out = []
    for path in sorted((Path(rapidocr_onnxruntime.__file__).parent / "models").glob("*.onnx")):
        kind = next((k for k in RAPIDOCR_SHAPES if f"_{k}_" in path.name), None)
        model = onnx.load(str(path))
        out.append(CalibrationModel(f"ppocr-{kind or path.stem}", model, _shapes(model, RAPIDOCR_SHAPES.get(kind))))
    return out


def _shapes(model, pin):
    inits = {i.name for i in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.dim_value > 0 else None for d in inp.type.tensor_type.shape.dim]
        if pin is not None:
            dims = [d if d is not None else p for d, p in zip(dims, pin)]
        shapes[inp.name] = [d or 1 for d in dims]
    return shapes


def table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1: stable on a shared machine)")
    parser.add_argument("--all", action="store_true", help="include vgg19 (550 MB of weights, slow)")
    parser.add_argument("--measurements", metavar="FILE.pkl",
                        help="reuse measurements saved in FILE.pkl (written there when it does not exist): refit without re-measuring")
    args = parser.parse_args(argv)

    from edgeship.targets import calibrate as cal
    from edgeship.targets.costmodel import node_work
    from edgeship.targets import calibration_models as cm
    from edgeship.targets.profile import TargetProfile, PROFILES_DIR
    import yaml

    # the packaged profile, not a local override: the bench fits its own factors
    profile = TargetProfile(yaml.safe_load((PROFILES_DIR / "host-cpu.yaml").read_text()))
    models = cm.builtin_models() + cm.int8_models() + cm.light_models(cm.LIGHT_DEFAULT + (["vgg19"] if args.all else []))
    models += example_models() + real_models()
    t0 = time.perf_counter()
    saved = Path(args.measurements) if args.measurements else None
    if saved is not None and saved.is_file():
        import pickle

        measurements = pickle.loads(saved.read_bytes())  # a file this script wrote (trusted, local)
    else:
        measurements = []
        for m in models:
            print(f"measuring {m.name} ...", file=sys.stderr, flush=True)
            measurements.append(cal.measure(m, runs=args.runs, warmup=args.warmup, threads=args.threads or None))
        if saved is not None:
            import pickle

            saved.write_bytes(pickle.dumps(measurements))
    measured_s = time.perf_counter() - t0

    raw = cal.compare_rows(measurements, profile)
    factors = cal.fit(measurements, profile)
    fitted = cal.compare_rows(measurements, cal.with_cost_model(profile, factors))
    held = cal.leave_one_out(measurements, profile)

    rows = [("model", "GFLOP", "measured ms", "profile ms", "err", "fitted ms", "err", "held-out ms", "err")]
    for m, r, f, h in zip(measurements, raw, fitted, held):
        gflop = sum(node_work(m.graph, n).flops for n in m.graph.active_nodes()) / 1e9
        rows.append((m.name, f"{gflop:.3f}", f"{r['measured_ms']:.3f}", f"{r['estimated_ms']:.3f}", f"{r['error_pct']:+.0f}%",
                     f"{f['estimated_ms']:.3f}", f"{f['error_pct']:+.0f}%", f"{h['estimated_ms']:.3f}", f"{h['error_pct']:+.0f}%"))
    print(table(rows))
    print()
    for label, rs in (("profile (uncalibrated)", raw), ("fitted (in-sample)", fitted), ("held-out (leave-one-out)", held)):
        s = cal.summary(rs)
        over = sum(1 for r in rs if r["ratio"] > 2)
        print(f"{label:26s} median |error| {s['median_abs_error_pct']:5.1f}%   worst {s['max_ratio']:.2f}x   models over 2x: {over}")
    s = cal.summary(fitted)
    ok = s["median_abs_error_pct"] < 25 and s["max_ratio"] <= 2
    print(f"\ngoal (after calibration: median < 25%, none over 2x): {'met' if ok else 'NOT met'}")
    eff = ", ".join(f"{k} {v}" for k, v in factors["efficiency"].items())
    print(f"fitted: efficiency {eff}; bandwidth_efficiency {factors['bandwidth_efficiency']}; "
          f"per_node_overhead_us {factors['per_node_overhead_us']}; per_run_overhead_us {factors['per_run_overhead_us']}")
    import os
    import onnxruntime

    print(f"{len(measurements)} models, measured in {measured_s:.0f} s; onnxruntime {onnxruntime.__version__}, "
          f"{os.cpu_count()} CPUs, threads {args.threads or 'default'}, runs {args.runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
