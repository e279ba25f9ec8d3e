"""Run an emitted integer .tflite under LiteRT with float inputs, the way a device would: quantize
each input with the scale/zero point the emitter recorded, put it in the stored layout, run, and
dequantize the outputs. This is the reference for what ships (validate, the device smoke test).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeship.errors import BuildError

IO_FILE = "model_io.json"  # the emitter's io table, next to model.tflite in an artifact


def interpreter(path: Path, threads: int = 1):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise BuildError("running .tflite needs LiteRT: pip install 'edgeship[tflite]'") from None
    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    return interp


def quantize_input(value: np.ndarray, spec: dict) -> np.ndarray:
    arr = np.asarray(value)
    if spec.get("scale") is None:
        return arr.astype(spec["dtype"])
    info = np.iinfo(spec["dtype"])
    q = np.round(arr.astype(np.float64) / spec["scale"]) + spec["zero_point"]
    q = np.clip(q, info.min, info.max).astype(spec["dtype"])
    return np.transpose(q, spec["perm"]).reshape(spec["tflite_shape"])


def dequantize_output(value: np.ndarray, spec: dict) -> np.ndarray:
    """Real values in ONNX's layout (the stored layout undone with the inverse of `perm`)."""
    arr = np.asarray(value).reshape(spec.get("tflite_shape") or np.shape(value))
    perm = spec.get("perm") or list(range(arr.ndim))
    arr = np.transpose(arr, np.argsort(perm))
    if spec.get("scale") is None:
        return arr
    return ((arr.astype(np.float64) - spec["zero_point"]) * spec["scale"]).astype(np.float32)


def timed_call(session, feeds: dict[str, np.ndarray]):
    """One inference of an onnxruntime session or a LiteRTSession, ready to time: LiteRT prepares its
    integer inputs once (LiteRTRunner.timed_call), onnxruntime takes the float feed as it is. The build's
    latency figures (quantize, validate) and the device smoke test time the same thing."""
    prepare = getattr(session, "timed_call", None)
    return prepare(feeds) if prepare is not None else (lambda: session.run(None, feeds))


class LiteRTRunner:
    """One LiteRT interpreter for one emitted model; `run(feeds)` takes and returns ONNX-named arrays."""

    def __init__(self, model: Path, io: dict | None = None, threads: int = 1):
        self.model = Path(model)
        if io is None:
            io = json.loads((self.model.parent / IO_FILE).read_text())
        self.io = io
        self.interp = interpreter(self.model, threads)
        self.in_details = self.interp.get_input_details()
        self.out_details = self.interp.get_output_details()

    def run_int(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for spec, detail in zip(self.io["inputs"], self.in_details):
            self.interp.set_tensor(detail["index"], quantize_input(feeds[spec["name"]], spec))
        self.interp.invoke()
        return [self.interp.get_tensor(d["index"]).copy() for d in self.out_details]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = self.run_int(feeds)
        return {spec["name"]: dequantize_output(arr, spec) for spec, arr in zip(self.io["outputs"], raw)}

    def timed_call(self, feeds: dict[str, np.ndarray]):
        """One inference, ready to time: the inputs are quantized once here, so a latency figure is the
        model's (set inputs, invoke, read outputs) like onnxruntime's on a float input, not numpy's
        float64 conversion, which an integer device pipeline folds into its preprocessing."""
        quantized = [(detail["index"], quantize_input(feeds[spec["name"]], spec))
                     for spec, detail in zip(self.io["inputs"], self.in_details)]
        outputs = [d["index"] for d in self.out_details]

        def call() -> list[np.ndarray]:
            for index, value in quantized:
                self.interp.set_tensor(index, value)
            self.interp.invoke()
            return [self.interp.get_tensor(index) for index in outputs]

        return call


class LiteRTSession:
    """A LiteRTRunner behind onnxruntime's session calls (get_inputs, get_outputs, run), so code written
    for onnxruntime (validate's metrics, the device smoke test) runs the shipped .tflite unchanged."""

    def __init__(self, model: Path, io: dict | None = None, threads: int = 1):
        self.runner = LiteRTRunner(model, io, threads)

    def get_inputs(self):
        from types import SimpleNamespace

        return [SimpleNamespace(name=spec["name"]) for spec in self.runner.io["inputs"]]

    def get_outputs(self):
        from types import SimpleNamespace

        return [SimpleNamespace(name=spec["name"]) for spec in self.runner.io["outputs"]]

    def timed_call(self, feed):
        return self.runner.timed_call(feed)

    def run(self, names, feed):
        outputs = self.runner.run(feed)
        wanted = names or [spec["name"] for spec in self.runner.io["outputs"]]
        return [outputs[name] for name in wanted]
