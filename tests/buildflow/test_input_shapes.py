"""`edgeship validate` checks declared input shapes against the model and the data files, as the
build would, and the "pin it" hint for an unpinned dynamic dim is a shape that builds."""

from __future__ import annotations

import re

import numpy as np
import yaml

from edgeship.cli import main

from .models import pipeline_doc, tiny_mlp, write_manifest


def _validate(capsys, manifest) -> tuple[int, list[str]]:
    code = main(["validate", str(manifest)])
    return code, [line for line in capsys.readouterr().err.splitlines() if ": " in line and "error(s)" not in line]


def _model(tmp_path):
    return tiny_mlp(tmp_path / "models" / "mlp.onnx", batch="batch")  # x: [batch, 8]


def test_unpinned_dynamic_dim_is_an_error_whose_hint_builds(tmp_path, capsys):
    _model(tmp_path)
    np.savez(tmp_path / "eval.npz", x=np.random.default_rng(0).standard_normal((5, 3, 8)).astype(np.float32))
    doc = pipeline_doc("models/mlp.onnx", {}, validation={"data": "eval.npz"})
    del doc["model"]["inputs"]
    manifest = write_manifest(tmp_path / "p.yaml", doc)
    code, errors = _validate(capsys, manifest)
    assert code == 2 and len(errors) == 1, errors
    assert "input 'x' dim 0 ('batch') is dynamic and not pinned" in errors[0]
    hint = re.search(r"pin it: model\.inputs: (\{.*?\}), a shape that runs", errors[0])
    assert hint, errors[0]
    pinned = yaml.safe_load(hint.group(1))
    assert pinned == {"x": [3, 8]}  # the batch of the data file, not a guess

    doc["model"]["inputs"] = pinned
    write_manifest(manifest, doc)
    assert main(["validate", str(manifest)]) == 0
    assert main(["build", str(manifest), "-o", str(tmp_path / "out"), "-q"]) == 0, capsys.readouterr().err


def test_declared_shapes_are_checked_against_the_model(tmp_path, capsys):
    _model(tmp_path)
    cases = {
        "rank": ({"x": [1, 8, 2]}, "model.inputs.x: 3 dims given but input 'x' has rank 2 ([?, 8])"),
        "fixed": ({"x": [1, 9]}, "model.inputs.x[1]: input 'x' dim 1 is fixed at 8 in the model, the manifest says 9"),
        "name": ({"xx": [1, 8]}, "model.inputs.xx: the model has no input 'xx' (did you mean 'x'?)"),
    }
    for name, (inputs, expected) in cases.items():
        manifest = write_manifest(tmp_path / f"{name}.yaml", pipeline_doc("models/mlp.onnx", inputs))
        code, errors = _validate(capsys, manifest)
        assert code == 2 and len(errors) == 1 and expected in errors[0], (name, errors)
        assert re.match(rf"^{re.escape(str(manifest))}:\d+:\d+: ", errors[0])  # located in the manifest


def test_data_files_are_checked_against_the_declared_shapes(tmp_path, capsys):
    _model(tmp_path)
    np.savez(tmp_path / "calib.npz", x=np.zeros((5, 3, 8), np.float32))
    manifest = write_manifest(tmp_path / "p.yaml", pipeline_doc(
        "models/mlp.onnx", {"x": [2, 8]}, quantization={"mode": "static", "calibration": {"data": "calib.npz"}}))
    code, errors = _validate(capsys, manifest)
    assert code == 2 and len(errors) == 1, errors
    assert "quantization.calibration.data: calib.npz: key 'x' has shape [5, 3, 8]; expected (N, *[2, 8])" in errors[0]
