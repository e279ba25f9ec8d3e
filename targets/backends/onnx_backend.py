"""The default backend: the quantized ONNX is what ships, run by onnxruntime (host CPU, Jetson, ...)."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgeship.targets.backends import Lowered


class OnnxRuntimeBackend:
    name = "onnxruntime"
    version = "1"
    integer_only = False

    def __init__(self, **options):
        self.options = options

    def lower(self, model: Path, target, workdir: Path, *, float_model: Path | None = None,
              samples: Path | None = None) -> Lowered:
        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / "model.onnx"
        shutil.copyfile(model, out)
        return Lowered({"model.onnx": out}, "onnxruntime", {"tool": "onnxruntime", "note": "the quantized ONNX ships as is"})
