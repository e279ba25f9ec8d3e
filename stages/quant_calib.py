"""Calibration range chosen per tensor by measured error: min-max, percentile, entropy or MSE-optimal clipping.

One method for the whole model is a compromise: min-max keeps outliers and wastes levels on them,
percentile clips tensors whose extremes matter (percentile made a MobileNetV3 detector worse than
min-max), entropy (the KL-divergence threshold of TensorRT's calibrator) keeps the distribution's
shape, MSE-optimal clipping sits between. Here every activation tensor gets the range whose
quantization error - rounding plus clipping, on calibration samples it was not fitted on - is the
smallest. The result is written as onnxruntime's own calibration cache, so the quantizer uses it
unchanged and every later candidate shares it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from edgeship.pipelines.data import strided
from edgeship.stages.quant_measure import tensor_values

MAX_SAMPLES = 8
VALUES_PER_SAMPLE = 4096  # a fixed stride through each tensor keeps memory bounded on big activations
PERCENTILE = 99.99
MSE_GRID = np.geomspace(0.01, 1.0, 25)  # clip at 1% .. 100% of the min-max range
HISTOGRAM_BINS = 2048  # entropy: |x| histogram, thresholds searched over its bins
QUANTIZED_BINS = 128  # entropy: the levels on one side of an 8-bit grid
METHODS = ("minmax", "percentile", "entropy", "mse")


def _quant_error(values: np.ndarray, lo: float, hi: float, symmetric: bool) -> float:
    """Mean squared error of 8-bit fake quantization with range [lo, hi] (always containing 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        m = max(abs(lo), abs(hi))
        lo, hi, levels = -m, m, 254
    else:
        levels = 255
    scale = (hi - lo) / levels
    if scale <= 0:
        return float(np.mean(values ** 2))
    zero = np.round(-lo / scale)
    q = np.clip(np.round(values / scale) + zero, 0, levels)
    return float(np.mean(((q - zero) * scale - values) ** 2))


def entropy_threshold(values: np.ndarray) -> float:
    """The |x| clipping threshold whose 128-level quantized histogram is closest (KL divergence) to the
    clipped one with its outliers folded into the last bin (TensorRT's entropy calibration)."""
    magnitude = np.abs(values)
    top = float(magnitude.max()) if magnitude.size else 0.0
    if top <= 0.0:
        return 0.0
    hist, edges = np.histogram(magnitude, bins=HISTOGRAM_BINS, range=(0.0, top))
    hist = hist.astype(np.float64)
    best, best_kl = HISTOGRAM_BINS, np.inf
    for stop in range(QUANTIZED_BINS, HISTOGRAM_BINS + 1, 16):
        clipped = hist[:stop].copy()
        clipped[-1] += hist[stop:].sum()
        kl = _kl_to_quantized(clipped, hist[:stop])
        if kl < best_kl:
            best, best_kl = stop, kl
    return float(edges[best])


def _kl_to_quantized(clipped: np.ndarray, inside: np.ndarray) -> float:
    """KL(clipped || the in-range bins merged into QUANTIZED_BINS levels, spread back over their non-empty
    bins). The outliers folded into `clipped`'s last bin are the clipping cost; the merge is the rounding cost."""
    sizes = np.full(QUANTIZED_BINS, inside.size // QUANTIZED_BINS)
    sizes[: inside.size % QUANTIZED_BINS] += 1  # np.array_split's groups
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    used = inside > 0
    per_level = np.add.reduceat(inside, starts) / np.maximum(np.add.reduceat(used, starts), 1)
    expanded = np.where(used, np.repeat(per_level, sizes), 0.0)
    p = clipped / clipped.sum()
    q = expanded / max(expanded.sum(), 1e-300)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


def candidate_ranges(fit: np.ndarray, symmetric: bool) -> dict[str, tuple[float, float]]:
    lo, hi = float(fit.min()), float(fit.max())
    threshold = entropy_threshold(fit)
    ranges = {"minmax": (lo, hi),
              "percentile": (float(np.percentile(fit, 100 - PERCENTILE)), float(np.percentile(fit, PERCENTILE))),
              "entropy": (max(lo, -threshold), min(hi, threshold))}
    best = min(MSE_GRID, key=lambda c: _quant_error(fit, lo * c, hi * c, symmetric))
    ranges["mse"] = (lo * float(best), hi * float(best))
    return ranges


def choose(fit: np.ndarray, held: np.ndarray, symmetric: bool) -> tuple[str, tuple[float, float], dict]:
    """(method, range, {method: held-out error}) for one tensor."""
    ranges = candidate_ranges(fit, symmetric)
    errors = {m: _quant_error(held, *r, symmetric) for m, r in ranges.items()}
    method = min(METHODS, key=lambda m: (errors[m], METHODS.index(m)))
    return method, ranges[method], errors


def _collect(model_path: Path, names: list[str], data: Mapping[str, np.ndarray], work: Path) -> dict[str, list[np.ndarray]]:
    values = tensor_values(model_path, names, data, work)
    for name, arr in data.items():  # graph inputs are calibrated too
        values.setdefault(name, np.asarray(arr))
    picked = {}
    for name in names:
        if name in values:
            arr = np.asarray(values[name], dtype=np.float64)
            per_sample = arr.reshape(arr.shape[0], -1)
            step = max(1, per_sample.shape[1] // VALUES_PER_SAMPLE)
            picked[name] = [row[::step] for row in per_sample]
    return picked


def choose_ranges(model_path: Path, cache: Path, out: Path, data: Mapping[str, np.ndarray], work: Path,
                  symmetric: bool) -> dict:
    """Write `out`: onnxruntime's calibration cache `cache` with each tensor's range chosen by held-out error.

    Returns {methods: {method: tensors}, tensors: n} for the report."""
    doc = json.loads(cache.read_text())
    names = list(doc["data"])
    values = _collect(model_path, names, strided(data, MAX_SAMPLES), work)
    counts = {m: 0 for m in METHODS}
    for name, rows in values.items():
        if not rows or not np.all(np.isfinite(np.concatenate(rows))):
            continue
        fit = np.concatenate(rows[0::2])
        held = np.concatenate(rows[1::2]) if len(rows) > 1 else fit
        method, (lo, hi), _ = choose(fit, held, symmetric)
        counts[method] += 1
        if method == "minmax":
            continue  # keep the range onnxruntime computed on all the calibration data
        entry = doc["data"][name]
        entry["lowest"]["data"] = [float(lo)]
        entry["highest"]["data"] = [float(hi)]
    out.write_text(json.dumps(doc))
    return {"methods": counts, "tensors": len(values)}
