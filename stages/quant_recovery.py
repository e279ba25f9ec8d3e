"""Accuracy recovery when full int8 misses the goal: measured sensitivity, then mixed-precision candidates.

0. `calibration`, `bias-correction`, `equalize` (cheapest first): each activation's range chosen per tensor by
   measured error (quant_calib; a candidate of its own); the best int8 candidate with its biases corrected for its weights' expected
   error; cross-layer equalization of the float model, requantized.
1. `sensitivity`: every quantized layer of the best int8 candidate, quantized alone, scored end to end
   on the validation data (quant_sensitivity). Cached per model + data + policy + metric (not the
   bound), so a rebuild that only changes the budget reuses it.
2. `float-layers` (targets that run float, e.g. the host): int8 for the largest set of layers, taken
   most-MACs-per-damage first, that still meets the goal (bisected); the rest stay float.
3. `int16-layers` (16x8 targets): the fewest most-sensitive layers get int16 activations with int8
   weights, the rest int8 - fully integer; each candidate and search step bias-corrected when the policy
   lists `bias-correction` (the int8 weights' error is what 16-bit activations leave). If even all-int16 misses, the build fails on an
   integer-only target with a table of the layers that break it (never a float fallback there).
The ranking runs on surgery-made models (one per layer: cheap); each search step is a real
onnxruntime build scored on all the validation data (a surgery model misses how the quantizer shares
Q/DQ between readers, and top-1 agreement on a 32-sample subset cannot tell 0.97 from 1.0), so what
the search accepts is exactly what ships.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import onnx

from edgeship.errors import BudgetExceeded, BudgetRow
from edgeship.pipelines.data import strided
from edgeship.stages import quant_sensitivity as qs
from edgeship.stages.quant_subset import quantized_nodes

SENSITIVITY_SAMPLES = 32  # at most, per layer of the ranking
MIN_RANKING_SAMPLES = 4
RANKING_BUDGET_S = 60.0  # the ranking runs one model per layer: fewer samples per layer on big models
VERSION = "5"
TABLE_LAYERS = 8  # layers named in the failure table


def cache_key(ctx, policy, goal: dict, base_name: str) -> str:
    """Model + data + policy + metrics (not bounds): what the ranking depends on."""
    doc = {"v": VERSION, "model": ctx.digests.get("float_model") or ctx.digests.get("model", ""),
           "calibration": ctx.data_digest("calibration"), "validation": ctx.data_digest("validation"),
           "validation_samples": ctx.setting("validation", "samples"), "policy": policy.describe(), "base": base_name,
           "metrics": {k: v["metric"] for k, v in goal["outputs"].items()}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def ranking_samples(layers: int, seconds_per_sample: float) -> int:
    """Samples per layer so that the ranking takes about RANKING_BUDGET_S of inference (4..32)."""
    affordable = RANKING_BUDGET_S / max(1, layers) / max(seconds_per_sample, 1e-6)
    return int(max(MIN_RANKING_SAMPLES, min(SENSITIVITY_SAMPLES, affordable)))


def _cache_file(key: str, kind: str = "quant-sensitivity") -> Path:
    from edgeship.pipelines.cache import cache_root

    return cache_root() / kind / key[:2] / f"{key}.json"


def _store(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def calibration_key(ctx, policy) -> str:
    """The activation ranges depend on the float model, the calibration data, how they are computed and
    which tensors get one: an integer-only target quantizes ops the host leaves float (magika's LayerNorm
    Sub), so a cache the host build wrote lacks their ranges and the quantizer refuses it."""
    from edgeship.stages.quant_ort import op_types_to_quantize

    doc = {"v": VERSION, "model": ctx.digests.get("float_model") or ctx.digests.get("model", ""),
           "calibration": ctx.data_digest("calibration"), "method": policy.method, "samples": policy.samples,
           "keep_float": list(policy.keep_float), "op_types": op_types_to_quantize(policy)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def reuse_calibration(ctx, policy, local: Path) -> bool:
    """Copy a stored calibration cache into `local` (onnxruntime then skips calibrating); True on a hit."""
    try:
        local.write_text(_cache_file(calibration_key(ctx, policy), "quant-calibration").read_text())
        return True
    except OSError:
        return False


def keep_calibration(ctx, policy, local: Path) -> None:
    if local.is_file():
        _store(_cache_file(calibration_key(ctx, policy), "quant-calibration"), local.read_text())


def sensitivity(ctx, policy, goal, cands, base: dict, report: dict) -> list[dict]:
    """The per-layer ranking, cached: each layer quantized alone, scored on a subset of the validation data."""
    from edgeship.stages.quant_measure import run_all, session

    float_model = onnx.load(str(ctx.float_model_path or cands.pre))
    layers = len(quantized_nodes(onnx.load(base["path"], load_external_data=False)))
    data = strided(cands.eval_data, ranking_samples(layers, cands.reference_seconds_per_sample))
    ranker = qs.Scorer(float_model, data, cands.names, run_all(session(ctx.float_model_path or cands.pre, threads=0), data), goal)
    key = cache_key(ctx, policy, goal, base["name"])
    path = _cache_file(key)
    try:
        ranking = json.loads(path.read_text())
        report["sensitivity_cache"] = "hit"
    except (OSError, ValueError):
        ranking = qs.rank_layers(ranker, onnx.load(base["path"]), qs.layer_macs(Path(ctx.float_model_path or cands.pre)))
        _store(path, json.dumps(ranking))
        report["sensitivity_cache"] = "miss"
    report["sensitivity"] = {"base": base["name"], "samples": len(next(iter(data.values()))), "layers": ranking}
    return ranking


def calibrated(cands, policy, base: dict, report: dict) -> dict | None:
    """The base candidate requantized with each tensor's range chosen by measured error (its own cache file).

    The later steps keep min-max ranges: a per-tensor error criterion can still hurt end to end (on magika
    it made the int16 and float-layer searches worse), and a better-but-failing candidate is no evidence."""
    from edgeship.stages.quant_calib import choose_ranges

    if not cands.cache.is_file():
        return None
    chosen = cands.work / "calibration-chosen.json"
    report["calibration_choice"] = choose_ranges(Path(cands.pre), cands.cache, chosen, cands.calib, cands.work,
                                                 symmetric=policy.activation_symmetric)
    minmax_cache, cands.cache = cands.cache, chosen
    try:
        return cands.static(f"{base['name']}+calib", base["per_channel"], cands.keep,
                            replace(policy, activation_dtype=base["activations"]))
    finally:
        cands.cache = minmax_cache


def _output_means(model_path: Path, tensors: list[str], data: dict, work: Path) -> dict:
    """Per-channel means of intermediate `tensors` over `data`."""
    from edgeship.stages.quant_equalize import channel_means
    from edgeship.stages.quant_measure import tensor_values

    return {t: channel_means(v) for t, v in tensor_values(model_path, tensors, data, work).items()}


def _correct_biases_of(cands, qdq_path: Path, out_path: Path) -> int:
    """Bias correction of the QDQ model at `qdq_path` (its own conv input means on the calibration data),
    written to `out_path`; returns how many biases changed."""
    from edgeship.stages.quant_equalize import correct_biases

    qdq = onnx.load(str(qdq_path))
    tensors = [n.input[0] for n in qdq.graph.node if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 2]
    means = _output_means(qdq_path, tensors, strided(cands.calib, SENSITIVITY_SAMPLES), cands.work)
    changed = correct_biases(qdq, onnx.load(str(cands.pre)), means)
    onnx.save(qdq, str(out_path))
    return changed


def bias_corrected(cands, base: dict, report: dict) -> dict | None:
    """The base candidate with each Conv bias corrected for its int8 weights' expected mean shift."""
    path = cands.work / f"{base['name']}+bc.onnx"
    changed = _correct_biases_of(cands, Path(base["path"]), path)
    report["bias_correction"] = {"base": base["name"], "biases": changed}
    if not changed:
        return None
    return cands.add(f"{base['name']}+bc", "static", path, per_channel=base["per_channel"], float_nodes=0,
                     activations=base["activations"])


def _int16_bias_correction(cands, policy):
    """(post-build step, name suffix) for the int16 candidates: their weights are int8 all the same, and
    with 16-bit activations the weights' rounding is what is left (PP-OCR's detector: cosine 0.987 -> 0.99+).
    None when the policy leaves bias correction out."""
    if "bias-correction" not in policy.recovery or policy.power_of_two:
        return None, ""

    def correct(path: Path) -> dict:
        return {"bias_corrected": _correct_biases_of(cands, path, path)}

    return correct, "+bc"


def equalized(cands, policy, base: dict, report: dict) -> dict | None:
    """Cross-layer equalization of the float model, then the base candidate's quantization of it."""
    from edgeship.stages import quant_ort
    from edgeship.stages.quant_equalize import equalize

    model = onnx.load(str(cands.pre))
    facts = equalize(model)
    report["equalization"] = facts
    if not facts["pairs"]:
        return None
    pre = cands.work / "equalized-preprocessed.onnx"
    onnx.save(model, str(pre))
    path = cands.work / f"{base['name']}+cle.onnx"
    quant_ort.quantize_static_qdq(pre, path, replace(policy, activation_dtype=base["activations"]), cands.calib,
                                  cands.work / "calibration-equalized.json", cands.keep, base["per_channel"])
    return cands.add(f"{base['name']}+cle", "static", path, per_channel=base["per_channel"], float_nodes=0,
                     activations=base["activations"], equalized_pairs=facts["pairs"])


def float_layers(cands, policy, base: dict, ranking: list[dict], report: dict) -> dict | None:
    """int8 for the largest cheap-damage-first set of layers meeting the goal; the rest float."""
    policy = replace(policy, activation_dtype=base["activations"])
    order = [n for n in qs.int8_order(ranking) if n not in cands.keep]
    k, trials = qs.largest_passing_prefix(order, lambda nodes: cands.trial(base["per_channel"], policy, nodes_to_quantize=nodes))
    report["search_float_layers"] = {"order": order, "int8_layers": k, "trials": trials}
    if k == 0:
        return None
    chosen, kept = order[:k], order[k:]
    row = cands.static(f"{base['name']}+float{len(kept)}", base["per_channel"], cands.keep, policy, nodes_to_quantize=chosen)
    row.update(kept_float=kept, float_nodes=len(kept),
               layer_precision={**{n: "int8" for n in chosen}, **{n: "float" for n in kept}})
    return row


def _activation_tensors(model: onnx.ModelProto, nodes: list[str]) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    tensors: list[str] = []
    for name in nodes:
        node = by_name.get(name)
        for t in (list(node.input) + list(node.output)) if node is not None else []:
            if t and t not in inits and t not in tensors:
                tensors.append(t)
    return tensors


def int16_layers(cands, policy, base: dict, ranking: list[dict], report: dict) -> dict | None:
    """The fewest most-sensitive layers at int16 activations (the rest int8) meeting the goal, fully integer;
    every int16 candidate (and search step) bias-corrected where the policy allows it."""
    post, suffix = _int16_bias_correction(cands, policy)
    a16_policy = replace(policy, activation_dtype="int16", activation_symmetric=True)
    full = cands.static(f"static-a16w8{suffix}", base["per_channel"], cands.keep, a16_policy, post=post)
    full.update(int16_layers=[r["node"] for r in ranking], layer_precision={r["node"]: "int16" for r in ranking})
    if not full["meets_accuracy"]:
        return None
    mixed_policy = replace(policy, activation_dtype=base["activations"], activation_symmetric=True)
    float_model = onnx.load(str(cands.pre), load_external_data=False)
    least_first = [r["node"] for r in reversed(ranking)]  # int8 for the least sensitive layers first

    def evaluate(int8_nodes: list[str]) -> dict:
        int16 = least_first[len(int8_nodes):]
        return cands.trial(base["per_channel"], mixed_policy, int16_tensors=_activation_tensors(float_model, int16), post=post)

    k, trials = qs.largest_passing_prefix(least_first, evaluate)
    report["search_int16_layers"] = {"int8_layers": k, "int16_layers": len(least_first) - k, "trials": trials}
    if k == 0:
        return full
    int16 = least_first[k:]
    row = cands.static(f"{base['name']}+int16x{len(int16)}{suffix}", base["per_channel"], cands.keep, mixed_policy,
                       int16_tensors=_activation_tensors(float_model, int16), post=post)
    row.update(int16_layers=int16, layer_precision={**{n: "int8" for n in least_first[:k]}, **{n: "int16" for n in int16}})
    return row if row["meets_accuracy"] else full


def fail_integer_only(ctx, goal: dict, best: dict | None, ranking: list[dict]) -> None:
    """No integer candidate meets the goal on an integer-only target: the table names the layers."""
    rows = []
    if best is not None:
        value = best["accuracy"].get(goal["metric"])
        rows.append(BudgetRow(f"accuracy.{goal['metric']} (best integer: {best['name']})", f"{goal['bound']:g}",
                              f"{value:.4g}" if value is not None else "-", "no fully integer candidate meets it"))
    for r in ranking[:TABLE_LAYERS]:
        value = r.get(goal["metric"])
        rows.append(BudgetRow(f"layer {r['node']} ({r['op_type']}) int8 alone", f"{goal['bound']:g}",
                              f"{value:.4g}" if isinstance(value, float) else str(value),
                              f"output noise {r['noise']:.3g}, SQNR {r['sqnr_db']:.1f} dB"))
    raise BudgetExceeded(rows or [BudgetRow(f"accuracy.{goal['metric']}", f"{goal['bound']:g}", "-", "nothing quantized")],
                         stage="quantize")
