"""Accuracy of a candidate model against its float reference, as numbers a budget can be checked on.

Inputs are the outputs of both models on the same samples, stacked `(N, ...)`. Every function
returns a plain float (JSON-safe: no inf, no NaN), so reports and budgets never special-case.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

SQNR_CEILING_DB = 200.0  # identical outputs: reported as this instead of +inf (JSON has no inf)

HIGHER_IS_BETTER = {"top1_agreement": True, "cosine": True, "sqnr_db": True, "max_abs_error": False}
METRICS = tuple(HIGHER_IS_BETTER)


def _pair(reference, candidate) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {cand.shape}")
    return ref, cand


def top1_agreement(reference, candidate) -> float:
    """Fraction of positions where both pick the same class (argmax over the last axis).

    For a classifier `(N, C)` that is per sample; for next-token logits `(N, T, V)` per token.
    """
    ref, cand = _pair(reference, candidate)
    if ref.ndim == 0 or ref.size == 0:
        return 1.0
    ref = np.nan_to_num(ref, nan=-np.inf)
    cand = np.nan_to_num(cand, nan=-np.inf)
    return float(np.mean(np.argmax(ref, axis=-1) == np.argmax(cand, axis=-1)))


def cosine(reference, candidate) -> float:
    """Mean over samples of the cosine similarity of the flattened outputs (1.0 = same direction)."""
    ref, cand = _pair(reference, candidate)
    ref = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(1, -1)
    cand = cand.reshape(ref.shape)
    values = []
    for r, c in zip(ref, cand):
        nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
        if not (math.isfinite(nr) and math.isfinite(nc)):
            values.append(1.0 if np.array_equal(r, c) else 0.0)
        elif nr == 0.0 and nc == 0.0:
            values.append(1.0)
        elif nr == 0.0 or nc == 0.0:
            values.append(0.0)
        else:
            values.append(float(np.dot(r, c) / (nr * nc)))
    return float(np.clip(np.mean(values), -1.0, 1.0)) if values else 1.0


def sqnr_db(reference, candidate) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(|ref|^2 / |ref - cand|^2), capped at 200."""
    ref, cand = _pair(reference, candidate)
    finite = np.isfinite(ref) & np.isfinite(cand)
    if not finite.all():
        if not np.array_equal(ref[~finite], cand[~finite], equal_nan=True):
            return 0.0
        ref, cand = ref[finite], cand[finite]
    signal = float(np.sum(ref * ref))
    noise = float(np.sum((ref - cand) ** 2))
    if noise == 0.0:
        return SQNR_CEILING_DB
    if signal == 0.0:
        return -SQNR_CEILING_DB
    return float(min(SQNR_CEILING_DB, max(-SQNR_CEILING_DB, 10.0 * math.log10(signal / noise))))


def max_abs_error(reference, candidate) -> float:
    """Largest absolute difference anywhere (a non-finite mismatch counts as 1e30, not inf)."""
    ref, cand = _pair(reference, candidate)
    if ref.size == 0:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(ref - cand)
    same = (ref == cand) | (np.isnan(ref) & np.isnan(cand))
    diff = np.where(same, 0.0, diff)
    diff = np.nan_to_num(diff, nan=1e30, posinf=1e30)
    return float(diff.max())


FUNCTIONS = {"top1_agreement": top1_agreement, "cosine": cosine, "sqnr_db": sqnr_db, "max_abs_error": max_abs_error}


def default_metrics(task: str | None) -> list[str]:
    """Which metrics apply: top-1 only makes sense for classifiers and next-token logits."""
    if task in ("classification", "generative", None):
        return list(METRICS)
    return ["cosine", "sqnr_db", "max_abs_error"]


def compare(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], names: Sequence[str],
            metrics: Sequence[str] = METRICS) -> dict:
    """Every metric per output, plus `primary` = the first output's figures (what budgets check)."""
    per_output: dict[str, dict[str, float]] = {}
    for name, ref, cand in zip(names, reference, candidate):
        per_output[name] = {m: FUNCTIONS[m](ref, cand) for m in metrics}
    primary = per_output[names[0]] if names else {}
    return {"primary": dict(primary), "outputs": per_output}


def meets(metric: str, value: float, bound: float) -> bool:
    """True when `value` satisfies the budget `bound` in the metric's direction (min for higher-is-better)."""
    return value >= bound if HIGHER_IS_BETTER[metric] else value <= bound


def shortfall(metric: str, value: float, bound: float) -> float:
    """How far from the bound, positive when the budget fails (in the metric's own units)."""
    return (bound - value) if HIGHER_IS_BETTER[metric] else (value - bound)


def summarize(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in values.items())
