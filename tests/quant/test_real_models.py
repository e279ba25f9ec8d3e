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
