"""Run a `.rknn` on a Rockchip board with rknn-toolkit-lite2, behind the small part of onnxruntime's
session interface the smoke test uses (`get_inputs()`, `run(None, feed)`).

rknn-toolkit-lite2 ships aarch64 wheels only and needs the board's NPU driver: it is imported when a
release names that runtime, never on the build machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.errors import AgentError

RUNTIME = "rknn-toolkit-lite2"
MODEL_FILE = "model.rknn"


@dataclass(frozen=True)
class InputInfo:
    name: str
    shape: list


class RknnLiteSession:
    """One loaded `.rknn` on the board's NPU (all cores, the runtime picks)."""

    def __init__(self, model: Path, inputs: dict[str, dict]):
        try:
            from rknnlite.api import RKNNLite
        except ImportError:
            raise AgentError(f"smoke test: this release runs on {RUNTIME}, which is not installed on this device "
                             f"(pip install {RUNTIME} on the board)", "smoke-failed") from None
        self._inputs = [InputInfo(name, list(spec.get("shape") or [])) for name, spec in inputs.items()]
        self._rknn = RKNNLite()
        if self._rknn.load_rknn(str(model)) != 0:
            raise AgentError(f"smoke test: {RUNTIME} cannot load {model.name}", "smoke-failed")
        if self._rknn.init_runtime(core_mask=getattr(RKNNLite, "NPU_CORE_AUTO", 0)) != 0:
            raise AgentError(f"smoke test: {RUNTIME} cannot start the NPU runtime (is the rknpu driver loaded?)", "smoke-failed")

    def get_inputs(self) -> list[InputInfo]:
        return list(self._inputs)

    def run(self, _names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [np.asarray(feed[i.name]) for i in self._inputs]
        layout = "nchw" if all(a.ndim == 4 for a in arrays) else None
        outputs = self._rknn.inference(inputs=arrays, data_format=layout)
        if outputs is None:
            raise RuntimeError(f"{RUNTIME} inference returned nothing")
        return list(outputs)


def rknn_session(release: Path) -> RknnLiteSession:
    meta = json.loads((Path(release) / "bundle.json").read_text())
    return RknnLiteSession(Path(release) / MODEL_FILE, meta.get("inputs") or {})
