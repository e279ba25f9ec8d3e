"""Scoring auto's candidates on what ships: the emitted .tflite under LiteRT where the backend emits TFLite.

On `tflite` and `vela` targets the artifact is the integer .tflite the emitter writes from the QDQ
model, and validate checks the budget on it under LiteRT; its rounding differs slightly from
onnxruntime's QDQ kernels, so a candidate scored under onnxruntime can sit on the budget there and
fall under it in validate. A candidate the emitter cannot write (float, dynamic, float layers) ships
as ONNX where the backend has a fallback, so it is scored under onnxruntime, with the reason as a note;
so is one whose .tflite LiteRT refuses to prepare (lower would then fail on it, and say why).
On a measurable target each candidate is also timed on that runtime (`timing_session`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeship.errors import BuildError
from edgeship.stages import quant_measure
from edgeship.targets.backends import backend_spec

TFLITE_BACKENDS = ("tflite", "vela")  # backends whose artifact is the emitter's integer .tflite (vela compiles it)
LITERT = "LiteRT (.tflite)"
ONNXRUNTIME = "onnxruntime"


def emits_tflite(target_data: dict) -> bool:
    return backend_spec(target_data)[0] in TFLITE_BACKENDS


class ShippedRunner:
    """Outputs of a candidate on the runtime that will run it: (outputs, runtime, note or None)."""

    def __init__(self, target_data: dict, work: Path):
        self.tflite = emits_tflite(target_data)
        self.work = Path(work) / "shipped"
        self.emitted: dict[str, tuple[Path, dict]] = {}  # candidate path -> its .tflite and io table, once LiteRT ran it

    def outputs(self, path: Path, data: dict, kind: str) -> tuple[list[np.ndarray], str, str | None]:
        note = None
        if self.tflite and kind == "static":
            try:
                return self._litert(path, data), LITERT, None
            except (BuildError, ImportError) as err:
                note = f"not scored under LiteRT: the TFLite emitter cannot lower it ({_first_line(err)})"
            except (RuntimeError, ValueError) as err:  # LiteRT refuses the emitted file (a kernel fails to prepare)
                note = f"not scored under LiteRT: LiteRT cannot run the emitted .tflite ({_first_line(err)})"
        elif self.tflite:
            note = f"not scored under LiteRT: a {kind} model is not emitted as integer TFLite"
        return quant_measure.run_all(quant_measure.session(path, threads=0), data), ONNXRUNTIME, note

    def _litert(self, path: Path, data: dict) -> list[np.ndarray]:
        """Emit with the tflite backend's own entry point and run it as validate does."""
        from edgeship.targets.backends.litert_run import LiteRTSession
        from edgeship.targets.backends.tflite_backend import write_tflite

        tflite, io, _facts = write_tflite(Path(path), self.work / Path(path).stem)
        outputs = quant_measure.run_all(LiteRTSession(tflite, io), data)
        self.emitted[str(path)] = (tflite, io)
        return outputs

    def timing_session(self, path: Path, runtime: str):
        """A single-thread session for timing a scored candidate on the runtime that scored it, which is the
        one that will run it: LiteRT (its default XNNPACK delegate) for an emitted .tflite, else onnxruntime."""
        if runtime == LITERT:
            from edgeship.targets.backends.litert_run import LiteRTSession

            return LiteRTSession(*self._emitted(path), threads=1)
        return quant_measure.session(path, threads=1)

    def _emitted(self, path: Path) -> tuple[Path, dict]:
        """The .tflite and io table emitted for a candidate: this run's, or an earlier run's in the same
        work folder (a kept build's, as bench/quant.py reads them)."""
        if str(path) not in self.emitted:
            from edgeship.targets.backends.litert_run import IO_FILE

            folder = self.work / Path(path).stem
            self.emitted[str(path)] = (folder / "model.tflite", json.loads((folder / IO_FILE).read_text()))
        return self.emitted[str(path)]


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
