"""pipelines/data.py: .npz validation errors are one clear line; synthetic data is deterministic."""

import numpy as np
import pytest

from edgeship.errors import ManifestError
from edgeship.pipelines.data import load_npz, strided, synthetic_inputs

INPUTS = {"audio": {"shape": [1, 49, 10], "dtype": "float32"}}


def _save(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def test_load_npz_ok_and_casts_float64(tmp_path):
    path = _save(tmp_path, audio=np.zeros((5, 1, 49, 10)), _labels=np.arange(5))
    data = load_npz(path, INPUTS, samples=3)
    assert data["audio"].shape == (3, 1, 49, 10) and data["audio"].dtype == np.float32


def test_load_npz_accepts_missing_batch_axis(tmp_path):
    path = _save(tmp_path, audio=np.zeros((4, 49, 10), np.float32))
    assert load_npz(path, INPUTS)["audio"].shape == (4, 1, 49, 10)


@pytest.mark.parametrize(
    "arrays, words",
    [
        ({"speech": np.zeros((2, 1, 49, 10))}, ["missing key", "speech"]),
        ({"audio": np.zeros((2, 1, 49, 10)), "audoi": np.zeros(2)}, ["unknown key", "audoi"]),
        ({"audio": np.zeros((2, 1, 10, 49))}, ["shape [2, 1, 10, 49]", "[1, 49, 10]"]),
    ],
)
def test_load_npz_errors_name_the_problem(tmp_path, arrays, words):
    path = _save(tmp_path, **arrays)
    with pytest.raises(ManifestError) as err:
        load_npz(path, INPUTS, origin=("p.yaml", 7, 9, "quantization.calibration.data"))
    text = str(err.value)
    assert text.startswith("p.yaml:7:9: quantization.calibration.data: d.npz:")
    assert "\n" not in text
    for w in words:
        assert w in text


def test_load_npz_missing_and_corrupt(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        load_npz(tmp_path / "nope.npz", INPUTS)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ManifestError, match="readable"):
        load_npz(bad, INPUTS)


def test_load_npz_rejects_fractional_ids_and_uneven_counts(tmp_path):
    spec = {"ids": {"shape": [1, 4], "dtype": "int64"}, "mask": {"shape": [1, 4], "dtype": "float32"}}
    with pytest.raises(ManifestError, match="fractional"):
        load_npz(_save(tmp_path, ids=np.full((2, 1, 4), 0.5), mask=np.zeros((2, 1, 4))), spec)
    with pytest.raises(ManifestError, match="different sample counts"):
        load_npz(_save(tmp_path, ids=np.zeros((2, 1, 4), np.int64), mask=np.zeros((3, 1, 4))), spec)


def test_synthetic_inputs_deterministic_and_typed():
    spec = {"x": {"shape": [1, 3], "dtype": "float32"}, "ids": {"shape": [1, 5], "dtype": "int64", "range": [0, 7]}}
    a = synthetic_inputs(spec, 4, seed=1)
    b = synthetic_inputs(spec, 4, seed=1)
    c = synthetic_inputs({"x": spec["x"]}, 4, seed=1)
    assert a["x"].shape == (4, 1, 3) and a["x"].dtype == np.float32
    assert a["ids"].dtype == np.int64 and a["ids"].min() >= 0 and a["ids"].max() < 7
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["x"], c["x"])
    assert not np.array_equal(a["x"], synthetic_inputs(spec, 4, seed=2)["x"])


def test_synthetic_inputs_rejects_unpinned_dims():
    with pytest.raises(ValueError, match="unpinned"):
        synthetic_inputs({"x": {"shape": ["batch", 3]}}, 2)


def test_strided_spreads_samples():
    data = {"x": np.arange(10)[:, None]}
    assert strided(data, 3)["x"][:, 0].tolist() == [0, 4, 9]
