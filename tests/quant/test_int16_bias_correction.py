"""Integer-only targets: int16 activations do not remove the int8 weights' rounding error; bias correction does.

The model is one 1x1 conv whose input channels sit on a large mean (20 +- 1, as after hard-swish and an
affine block in PP-LCNet) with a bias that cancels it, so the output is small: each weight's rounding
error times the mean is a shift of the output that int16 activations cannot remove (PP-OCR's text
detector: cosine 0.987 with every activation int16). One input channel is a 300x outlier the conv ignores
(weight 0): int8 activations over its range wipe out the others, so only int16 (16x8) can meet the goal.
"""

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from .helpers import build

CHANNELS, SIZE, MEAN, OUTLIER = 8, 8, 20.0, 300.0


def _dc_conv(path: Path) -> Path:
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.5, (CHANNELS, CHANNELS, 1, 1)).astype(np.float32)
    w[:, 0] = 0.0  # the outlier channel only widens the input's range
    means = np.full(CHANNELS, MEAN, np.float32)
    means[0] = 0.0
    b = -(w[:, :, 0, 0] @ means).astype(np.float32)  # the output is centred: the mean cancels
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")], "dc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _inputs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = MEAN + rng.normal(0, 1, (n, 1, CHANNELS, SIZE, SIZE))
    x[:, :, 0] = rng.normal(0, OUTLIER, (n, 1, SIZE, SIZE))
    return x.astype(np.float32)


def _pipeline(folder: Path, recovery: list[str]) -> Path:
    np.savez(folder / "calib.npz", x=_inputs(32, 0))
    np.savez(folder / "eval.npz", x=_inputs(32, 1))
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": "dc"},
           "model": {"path": str(_dc_conv(folder / "dc.onnx")), "task": "regression"}, "target": "arm-ethos-u65",
           "budget": {"accuracy": {"metric": "cosine", "min": 0.999}},
           "quantization": {"mode": "auto", "calibration": {"data": "calib.npz", "samples": 32}, "recovery": recovery},
           "validation": {"data": "eval.npz", "samples": 32}}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _candidates(result) -> dict:
    return {c["name"]: c for c in result.ctx.report["quantize"]["candidates"]}


def test_int16_candidate_is_bias_corrected_and_meets_the_goal(tmp_path):
    result = build(_pipeline(tmp_path, ["bias-correction", "int16-layers"]), stages=("import", "quantize"))
    assert result.ok, result.error
    rows = _candidates(result)
    int8 = [c for c in rows.values() if c.get("activations") == "int8"]
    assert any("+bc" in c["name"] for c in int8) and not any(c["meets_accuracy"] for c in int8)
    chosen = next(c for c in rows.values() if c["selected"])
    assert chosen["name"] == "static-a16w8+bc" and chosen["bias_corrected"] == 1
    assert chosen["meets_accuracy"] and chosen["scored_on"].startswith("LiteRT")


def test_without_bias_correction_int16_alone_misses_the_goal(tmp_path):
    """The cause, measured: all-int16 activations with int8 weights, uncorrected, stay under the goal."""
    from edgeship.errors import BudgetExceeded

    result = build(_pipeline(tmp_path, ["int16-layers"]), stages=("import", "quantize"))
    assert not result.ok and isinstance(result.error, BudgetExceeded)
    a16 = _candidates(result)["static-a16w8"]
    assert 0.9 < a16["accuracy"]["cosine"] < 0.999
