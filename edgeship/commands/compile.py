"""`edgeship calibrate TARGET` and `edgeship compare PIPELINE.yaml --targets a,b,c`.

calibrate: measure the cost model against onnxruntime on this machine and store the fitted factors
as a local profile override. compare: build one pipeline for several targets (stages up to
`estimate`) and print which chip the model fits - the answer to "where should this model go".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeship.errors import LegalizeError, UsageError


def register(subparsers) -> None:
    cal = subparsers.add_parser(
        "calibrate", help="fit the cost model's efficiency factors on this machine (host-cpu)",
        description="Profile a set of models with onnxruntime on this machine, fit the cost model's per-op "
                    "efficiency, bandwidth efficiency and per-node overhead, print estimate vs measurement, and "
                    "write the factors to state_dir()/targets/<target>.yaml (merged on top of the profile).")
    cal.add_argument("target", nargs="?", default="host-cpu", help="a measurable target (default: host-cpu)")
    cal.add_argument("--quick", action="store_true", help="only the small built-in models (seconds, less accurate)")
    cal.add_argument("--models", default="", help="comma-separated light_* model names to use "
                     "(e.g. squeezenet,resnet50; default: all but vgg19)")
    cal.add_argument("--add", action="append", default=[], metavar="MODEL.onnx", help="also measure this ONNX model")
    cal.add_argument("--no-int8", action="store_true", help="skip the int8 QDQ models (no QLinearConv/QLinearMatMul factors)")
    cal.add_argument("--runs", type=int, default=5, help="timed runs per model (default 5)")
    cal.add_argument("--warmup", type=int, default=2, help="warm-up runs per model (default 2)")
    cal.add_argument("--run-budget", type=float, default=1.0, metavar="SECONDS",
                     help="fast models get extra runs (up to 40) within this many seconds each (default 1.0)")
    cal.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1: stable on a machine shared with other work; 0 = onnxruntime's default)")
    cal.add_argument("--dry-run", action="store_true", help="fit and print, do not write the override")
    cal.add_argument("--json", action="store_true", help="machine-readable output")
    cal.set_defaults(func=run_calibrate)

    cmp_ = subparsers.add_parser(
        "compare", help="build a pipeline for several targets and compare fit, latency and memory",
        description="Build PIPELINE.yaml for each target (stages up to estimate) and print one table: "
                    "target, ops on the accelerator, partitions, estimated latency, peak memory, meets budget.")
    cmp_.add_argument("pipeline", help="a Pipeline manifest")
    cmp_.add_argument("--targets", required=True, help="comma-separated target names, or 'all'")
    cmp_.add_argument("--no-cache", action="store_true", help="do not reuse cached stage results")
    cmp_.add_argument("--json", action="store_true", help="the legacy JSON list (prefer -o json)")
    from edgeship.output import add_output_option

    add_output_option(cmp_)
    cmp_.set_defaults(func=run_compare)


# -- calibrate -------------------------------------------------------------------------------------------
def _table(rows: list[tuple], align_right: set[int] | None = None) -> str:
    align_right = align_right or set()
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, row in enumerate(rows):
        cells = [str(c).rjust(w) if i in align_right and k else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        out.append("  ".join(cells).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _calibration_set(args):
    import onnx

    from edgeship.targets import calibration_models as cm

    names = [n.strip().removeprefix("light_") for n in args.models.split(",") if n.strip()] or None
    if names:
        known = {p.stem.removeprefix("light_") for p in cm.light_dir().glob("light_*.onnx")}
        bad = [n for n in names if n not in known]
        if bad:
            raise UsageError(f"--models: unknown light model(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
    for extra in args.add:
        if not Path(extra).is_file():
            raise UsageError(f"--add {extra}: no such file")
    models = cm.builtin_models() + ([] if args.no_int8 else cm.int8_models())
    if not args.quick:
        models += cm.light_models(names)
    for extra in args.add:
        path = Path(extra)
        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        except Exception as err:
            raise UsageError(f"--add {extra}: not a valid ONNX model ({str(err).splitlines()[0][:200] or type(err).__name__})") from None
        inits = {i.name for i in model.graph.initializer}
        shapes = {i.name: [d.dim_value or 1 for d in i.type.tensor_type.shape.dim] for i in model.graph.input if i.name not in inits}
        models.append(cm.CalibrationModel(path.stem, model, shapes))
    return models


def run_calibrate(args) -> int:
    from edgeship.targets import load_target
    from edgeship.targets import calibrate as cal

    profile = load_target(args.target)
    if not profile.data.get("measurable"):
        raise UsageError(f"target {args.target!r} is not measurable on this machine: only measurable targets "
                         f"(host-cpu) can be calibrated; other targets use their datasheet figures")
    if args.runs < 1 or args.warmup < 0:
        raise UsageError("--runs must be >= 1 and --warmup >= 0")
    models = _calibration_set(args)
    measurements = []
    for m in models:
        if not args.json:
            print(f"measuring {m.name} ...", file=sys.stderr, flush=True)
        try:
            measurements.append(cal.measure(m, runs=args.runs, warmup=args.warmup, threads=args.threads or None,
                                            run_budget_s=max(0.0, args.run_budget)))
        except Exception as err:  # onnxruntime refusing a user's --add model: one line naming it
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise UsageError(f"{m.name}: onnxruntime could not run it: {first}") from None
    before = cal.compare_rows(measurements, profile)
    factors = cal.fit(measurements, profile)
    after = cal.compare_rows(measurements, cal.with_cost_model(profile, factors))
    path = None
    if not args.dry_run:
        path = cal.write_override(args.target, factors, after, args.threads or None)
        detail = path.with_suffix(".calibration.json")
        detail.write_text(json.dumps({"before": before, "after": after, "factors": factors}, indent=2))
    if args.json:
        print(json.dumps({"factors": factors, "before": before, "after": after, "summary": cal.summary(after),
                          "override": str(path) if path else None}, indent=2))
        return 0
    rows = [("model", "measured ms", "estimate before", "error before", "estimate after", "error after")]
    for b, a in zip(before, after):
        rows.append((a["model"], f"{a['measured_ms']:.3f}", f"{b['estimated_ms']:.3f}", f"{b['error_pct']:+.1f}%",
                     f"{a['estimated_ms']:.3f}", f"{a['error_pct']:+.1f}%"))
    print(_table(rows, {1, 2, 3, 4, 5}))
    clock = measurements[0].clock if measurements else "wall"
    print("\nmeasured: " + ("single-thread CPU time per run (median; immune to other load on this machine)"
                            if clock == "cpu" else "best wall-clock run"))
    sb, sa = cal.summary(before), cal.summary(after)
    print(f"median |error|: {sb['median_abs_error_pct']}% before, {sa['median_abs_error_pct']}% after calibration; "
          f"worst ratio {sa['max_ratio']}x after (in-sample: the same models were used for the fit)")
    eff = ", ".join(f"{k} {v}" for k, v in factors["efficiency"].items())
    print(f"efficiency: {eff}; bandwidth_efficiency {factors['bandwidth_efficiency']}; "
          f"per_node_overhead_us {factors['per_node_overhead_us']}; per_run_overhead_us {factors['per_run_overhead_us']}")
    if path:
        print(f"wrote {path}")
    return 0


# -- compare ---------------------------------------------------------------------------------------------
def _stages_until_estimate(spec: dict) -> list[str]:
    from edgeship.stages import registry

    names = list(spec.get("stages") or registry.DEFAULT_ORDER)
    names = [n for n in names if n not in ("validate", "package")]
    for needed in ("legalize", "estimate"):
        if needed not in names:
            names.append(needed)
    order = {n: i for i, n in enumerate(registry.DEFAULT_ORDER)}
    return sorted(names, key=lambda n: order.get(n, len(order)))


def compare_targets(pipeline: str, targets: list[str], use_cache: bool = True) -> list[dict]:
    """Build `pipeline` for each target up to `estimate`; one summary row per target."""
    from edgeship.pipelines.manifest import load_documents
    from edgeship.pipelines.runner import Progress, build
    from edgeship.stages.estimate import budget_check
    from edgeship.targets import load_target

    docs = load_documents(pipeline, kinds=["Pipeline"])
    if len(docs) != 1:
        raise UsageError(f"{pipeline}: expected one Pipeline document, found {len(docs)}")
    doc = docs[0]
    for name in targets:
        load_target(name)  # unknown names fail before any build, with suggestions
    stages = _stages_until_estimate(doc.data)
    rows = []
    for name in targets:
        result = build(doc, target=name, progress=Progress(quiet=True), use_cache=use_cache, stages=stages)
        leg = result.ctx.report.get("legalize") or {}
        est = result.ctx.report.get("estimate") or {}
        row = {"target": name, "accelerator_pct": leg.get("accelerator_pct"), "partitions": len(leg.get("partitions", [])),
               "host_round_trips": leg.get("host_round_trips"), "latency_ms": est.get("latency_ms"),
               "latency_source": est.get("latency_source") or "edgeship estimate",
               "vendor": vendor_figures(result.ctx.report.get("lower") or {}),
               "peak_memory_kb": est.get("peak_memory_kb"),
               "budget": budget_check(est, doc.data.get("budget") or {}) if est else {}, "error": None}
        if result.error is not None:
            err = result.error
            if isinstance(err, LegalizeError):
                row["error"] = f"{len(leg.get('rejected', []))} node(s) rejected"
            else:
                row["error"] = str(err).splitlines()[0]
        checks = row["budget"]
        row["meets_budget"] = (row["error"] is None and all(c["ok"] for c in checks.values())) if (checks or row["error"]) else None
        rows.append(row)
    return rows


def vendor_figures(lowered: dict) -> str:
    """The vendor compiler's own figures from the lower stage's report, one cell ("-" when it gave none)."""
    if not lowered or lowered.get("backend") in (None, "onnxruntime"):
        return "-"
    parts = []
    if lowered.get("latency_ms") is not None:
        parts.append(f"{lowered['latency_ms']:.3f} ms")
    if lowered.get("cycles"):
        parts.append(f"{lowered['cycles']} cycles")
    pct = lowered.get("ops_on_accelerator_pct", lowered.get("macs_on_accelerator_pct"))
    if pct is not None:
        parts.append(f"{pct}% on NPU")
    memory = {k: v for k, v in (lowered.get("memory") or {}).items() if isinstance(v, (int, float)) and v}
    if memory:
        parts.append(", ".join(f"{k.removesuffix('_kb')} {v:.0f} KiB" for k, v in memory.items()))
    host = lowered.get("host_validation") or {}
    if host.get("p50_ms") is not None:
        parts.append(f"host CPU p50 {host['p50_ms']:.3f} ms (this machine)")
    simulator = (lowered.get("simulator") or {}).get("vs_float") or {}
    if simulator:
        parts.append(f"simulator cosine {simulator['cosine_mean']:.4f}")
    return f"{lowered.get('tool') or lowered['backend']}: " + ("; ".join(parts) or "no figures")


def format_compare(rows: list[dict]) -> str:
    table = [("target", "on accelerator", "partitions", "round trips", "latency ms", "latency from", "peak memory KiB",
              "meets budget", "vendor's figures")]
    for r in rows:
        fits = {True: "yes", False: "no", None: "n/a (no budget)"}[r["meets_budget"]]
        if r["error"]:
            fits = f"no: {r['error']}"
        failed = [k for k, c in r["budget"].items() if not c["ok"]]
        if failed and not r["error"]:
            fits = f"no ({', '.join(failed)})"
        table.append((r["target"], f"{r['accelerator_pct']}%" if r["accelerator_pct"] is not None else "-",
                      str(r["partitions"]), str(r["host_round_trips"] if r["host_round_trips"] is not None else "-"),
                      f"{r['latency_ms']:.3f}" if r["latency_ms"] is not None else "-", r["latency_source"],
                      f"{r['peak_memory_kb']:.1f}" if r["peak_memory_kb"] is not None else "-", fits, r["vendor"]))
    return _table(table, {1, 2, 3, 4, 6}) + ("\nlatency from: 'edgeship estimate' is the roofline cost model; a tool name "
                                             "is that vendor compiler's own figure. Peak memory is edgeship's estimate.")


def run_compare(args) -> int:
    from edgeship import api
    from edgeship.output import print_document, wants

    rows = [r.to_dict() for r in api.compare(args.pipeline, args.targets, use_cache=not args.no_cache)]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif wants(args, "json"):
        print_document("Comparison", pipeline=str(args.pipeline), targets=rows)
    else:
        print(format_compare(rows))
    return 0
