"""pipelines/metrics.py: each metric on known cases, JSON-safe at the edges."""

import json

import numpy as np

from edgeship.pipelines import metrics


def test_identical_outputs_are_perfect():
    x = np.random.default_rng(0).standard_normal((8, 10))
    assert metrics.top1_agreement(x, x) == 1.0
    assert abs(metrics.cosine(x, x) - 1.0) < 1e-12
    assert metrics.sqnr_db(x, x) == metrics.SQNR_CEILING_DB
    assert metrics.max_abs_error(x, x) == 0.0


def test_known_values():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    cand = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert metrics.top1_agreement(ref, cand) == 0.5
    assert abs(metrics.cosine(ref, cand) - 0.5) < 1e-12
    assert abs(metrics.sqnr_db(ref, cand) - 0.0) < 1e-9  # noise energy == signal energy
    assert metrics.max_abs_error(ref, cand) == 1.0
    noisy = ref + 0.01
    assert abs(metrics.sqnr_db(ref, noisy) - 10 * np.log10(2 / (4 * 1e-4))) < 1e-6


def test_next_token_logits_agreement_is_per_token():
    ref = np.zeros((1, 4, 5))
    ref[0, :, 2] = 1
    cand = ref.copy()
    cand[0, 0, 3] = 5
    assert metrics.top1_agreement(ref, cand) == 0.75


def test_non_finite_is_json_safe():
    ref = np.array([[np.inf, 1.0]])
    cand = np.array([[1.0, 1.0]])
    values = {m: f(ref, cand) for m, f in metrics.FUNCTIONS.items()}
    json.dumps(values, allow_nan=False)
    assert metrics.max_abs_error(ref, cand) == 1e30


def test_direction_and_compare():
    assert metrics.meets("cosine", 0.99, 0.98) and not metrics.meets("max_abs_error", 0.5, 0.1)
    assert metrics.shortfall("top1_agreement", 0.9, 0.99) > 0
    out = metrics.compare([np.eye(3)], [np.eye(3)], ["logits"])
    assert out["primary"]["top1_agreement"] == 1.0
