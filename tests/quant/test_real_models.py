"""Real published models, as they ship, built for host-cpu with static int8: accuracy against float.

- PP-OCR's text-direction classifier from rapidocr-onnxruntime (Paddle export: opset 11, dynamic
  batch/height/width, HardSigmoid, Clip) - in the default run;
- the onnx package's backend-test zoo models (`light_*.onnx`: opset 9, IR 3, weights made by
  ConstantOfShape) - squeezenet in the default run, the bigger ones marked slow.
No file is edited: the pipeline's stages must take them as they are.
"""

import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.require import require_module
from .helpers import build

STAGES = ("import", "normalize", "optimize", "quantize", "validate")


def _onnx_light(name: str) -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


def _ppocr_cls() -> Path:
    rapidocr = require_module("rapidocr_onnxruntime")
    return Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"


def _pipeline(tmp_path: Path, model: Path, inputs: dict | None, samples: int) -> Path:
    shutil.copy(model, tmp_path / model.name)  # beside the manifest: a model outside its folder is refused
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": model.stem.replace("_", "-").lower()},
           "model": {"path": model.name, "task": "classification", **({"inputs": inputs} if inputs else {})},
           "target": "host-cpu",
           "quantization": {"mode": "static", "calibration": {"samples": samples, "method": "minmax"}},
           "validation": {"samples": samples, "latency": {"warmup": 1, "runs": 3}}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _check(result) -> dict:
    assert result.ok, result.error
    q = result.ctx.report["quantize"]
    assert q["selected"].startswith("static") and q["calibration"]["synthetic"] is True  # said loudly
    accuracy = result.ctx.report["validate"]["accuracy"]["primary"]
    assert {"top1_agreement", "cosine", "sqnr_db", "max_abs_error"} <= set(accuracy)
    return accuracy


def test_ppocr_classifier_static_int8(tmp_path):
    model = _ppocr_cls()
    result = build(_pipeline(tmp_path, model, {"x": [1, 3, 48, 192]}, samples=16), stages=STAGES)
    accuracy = _check(result)
    assert accuracy["cosine"] > 0.9  # int8 stays close to float on this export


def test_light_squeezenet_static_int8(tmp_path):
    result = build(_pipeline(tmp_path, _onnx_light("squeezenet"), None, samples=4), stages=STAGES)
    _check(result)
    # every weight of the light_* models is 0.02: the output is constant, and the build says so
    assert any("constant" in w for w in result.ctx.warnings)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                                  "shufflenet", "vgg19", "zfnet512"])
def test_light_zoo_static_int8(tmp_path, name):
    result = build(_pipeline(tmp_path, _onnx_light(name), None, samples=4), stages=STAGES)
    _check(result)


# --- trained models with realistic data made in code (bench/real_data.py) -----------------------------

def _real_data():
    require_module("PIL")
    require_module("magika")
    require_module("rapidocr_onnxruntime")
    from bench import real_data

    return real_data


def test_real_data_is_deterministic_and_shaped_for_the_models():
    real_data = _real_data()
    lines, labels = real_data.ocr_lines(6, seed=3)
    again, _ = real_data.ocr_lines(6, seed=3)
    assert lines.shape == (6, 3, 48, 192) and lines.dtype.name == "float32" and labels.tolist() == [0, 1] * 3
    assert (lines == again).all() and -1.0 <= lines.min() and lines.max() <= 1.0
    files = real_data.magika_inputs(12, seed=0)
    assert files.shape == (12, 2048) and files.dtype.name == "int32" and (files == real_data.magika_inputs(12, 0)).all()
    assert files.max() <= 256 and len({bytes(r[:16].astype("uint8")) for r in files}) > 6  # varied real files


def test_the_goal_is_inferred_as_classification_for_both_real_classifiers():
    from edgeship.stages import quant_goal
    from edgeship.stages.quant_measure import output_names, run_all, session

    real_data = _real_data()
    for model, data in ((real_data.ppocr_cls_model(), {"x": real_data.ocr_lines(8, 0)[0][:, None]}),
                        (real_data.magika_model(), {"bytes": real_data.magika_inputs(8, 0)[:, None]})):
        sess = session(model)
        goal = quant_goal.accuracy_goal(None, None, output_names(sess), run_all(sess, data), model)
        assert goal["metric"] == "top1_agreement" and goal["inferred"], goal
    # and the text-orientation classifier really reads the rendered lines: upright vs 180 degrees
    lines, labels = real_data.ocr_lines(16, 5)
    probs = run_all(session(real_data.ppocr_cls_model()), {"x": lines[:, None]})[0].reshape(16, -1)
    assert (probs.argmax(-1) == labels).mean() >= 0.9


@pytest.mark.slow
def test_magika_auto_ships_a_faster_int8_model_meeting_top1(tmp_path):
    import numpy as np

    real_data = _real_data()
    np.savez(tmp_path / "calib.npz", bytes=real_data.magika_inputs(64, 0)[:, None])
    np.savez(tmp_path / "eval.npz", bytes=real_data.magika_inputs(200, 1)[:, None])
    shutil.copyfile(real_data.magika_model(), tmp_path / "magika.onnx")  # a model outside the folder is refused
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": "magika"},
           "model": {"path": "magika.onnx", "inputs": {"bytes": [1, 2048]}}, "target": "host-cpu",
           "quantization": {"mode": "auto", "calibration": {"data": "calib.npz", "samples": 64}},
           "validation": {"data": "eval.npz", "samples": 200, "latency": {"warmup": 2, "runs": 10}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    result = build(tmp_path / "p.yaml", stages=STAGES)
    assert result.ok, result.error
    q = result.ctx.report["quantize"]
    chosen = next(c for c in q["candidates"] if c["selected"])
    assert chosen["kind"] == "static" and chosen["meets_accuracy"] and "+float" in chosen["name"]


@pytest.mark.slow
def test_ppocr_detector_gets_a_fully_integer_model_on_the_ethos_u65(tmp_path):
    """The DB text detector (ConvTranspose upsampling, PP-LCNet affine blocks): auto ships 16x8/8-bit integers
    that meet cosine 0.99 under LiteRT, and Vela places every operator on the NPU (took ~4 min here)."""
    import numpy as np

    require_module("ethosu.vela")
    require_module("ai_edge_litert")
    real_data = _real_data()
    np.savez(tmp_path / "calib.npz", x=real_data.ocr_pages(24, 0)[:, None])
    np.savez(tmp_path / "eval.npz", x=real_data.ocr_pages(24, 1)[:, None])
    shutil.copyfile(real_data.ppocr_det_model(), tmp_path / "det.onnx")
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": "ppocr-det"},
           "model": {"path": "det.onnx", "inputs": {"x": [1, 3, 320, 320]}}, "target": "arm-ethos-u65",
           "quantization": {"mode": "auto", "calibration": {"data": "calib.npz", "samples": 24}},
           "validation": {"data": "eval.npz", "samples": 24}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    result = build(tmp_path / "p.yaml", stages=("import", "normalize", "optimize", "quantize", "legalize", "lower",
                                                "estimate", "validate"))
    assert result.ok, result.error
    report = result.ctx.report
    chosen = next(c for c in report["quantize"]["candidates"] if c["selected"])
    assert chosen["kind"] == "static" and not chosen.get("float_nodes") and chosen["scored_on"].startswith("LiteRT")
    assert set(report["quantize"]["layer_precision"].values()) <= {"int8", "int16"}
    assert report["lower"]["operators"]["cpu"] == 0
    assert report["validate"]["accuracy"]["primary"]["cosine"] >= 0.99
