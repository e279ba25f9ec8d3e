"""0-d (scalar) int64 model inputs and control flow (If, Loop) build end to end.

A model with an int64 scalar input used to fail in optimize with `Unable to handle object of type
<class 'numpy.int64'>`: `.npz` data of shape (N,) was fed per sample as numpy scalars. The model here
is made in code: audio [1, 6, 4] float, `rate` and `steps` 0-d int64; an If picks a scale from the
rate, a Loop runs `steps` times."""

from __future__ import annotations

import numpy as np
import pytest

from edgeship.cli import main
from edgeship.fleet.agent_config import SmokeConfig
from edgeship.fleet.smoke import smoke_test
from edgeship.pipelines.data import iter_samples, load_npz

from .models import pipeline_doc, scalar_control_flow, write_manifest

INPUTS = {"audio": [1, 6, 4], "rate": [], "steps": []}


@pytest.fixture
def model_dir(tmp_path):
    scalar_control_flow(tmp_path / "models" / "scf.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "eval.npz", audio=rng.standard_normal((8, 1, 6, 4)).astype(np.float32),
             rate=np.array([8000, 16000] * 4, dtype=np.int64), steps=np.array([1, 2, 3, 4] * 2, dtype=np.int64))
    return tmp_path


def test_scalar_samples_are_0d_arrays(model_dir):
    specs = {"audio": {"shape": [1, 6, 4], "dtype": "float32"}, "rate": {"shape": [], "dtype": "int64"},
             "steps": {"shape": [], "dtype": "int64"}}
    data = load_npz(model_dir / "eval.npz", specs)
    feed = next(iter_samples(data))
    assert isinstance(feed["rate"], np.ndarray) and feed["rate"].shape == () and feed["rate"].dtype == np.int64
    assert feed["audio"].shape == (1, 6, 4)


@pytest.mark.parametrize("quantization, validation", [
    ({"mode": "none"}, {"data": "eval.npz"}),
    ({"mode": "static", "calibration": {"data": "eval.npz"}}, {"data": "eval.npz"}),
    ({"mode": "auto"}, {}),  # synthetic calibration and validation inputs from the declared shapes
], ids=["float", "static-calibrated-from-data", "auto-synthetic"])
def test_control_flow_model_with_int64_scalars_builds_and_smoke_tests(model_dir, capsys, quantization, validation):
    manifest = write_manifest(model_dir / "p.yaml", pipeline_doc("models/scf.onnx", INPUTS, quantization=quantization,
                                                                 validation=validation))
    code = main(["build", str(manifest), "-o", str(model_dir / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Unable to handle" not in err and "does not run in onnxruntime" not in err
    figures = smoke_test(model_dir / "out" / "p", SmokeConfig(latency_tolerance=1e6))  # what a device runs
    assert figures["samples"] >= 1
