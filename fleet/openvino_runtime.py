"""Run an OpenVINO IR release (model.xml + model.bin) on the OpenVINO device it was built for, behind the
small part of onnxruntime's session interface the smoke test uses (`get_inputs()`, `run(None, feed)`).

The `openvino` backend records in `openvino.json` (next to the IR) the device the target runs the model
on (CPU, NPU, GPU), and the CPU plugin's precision hint and thread count it validated with. The agent
compiles for that device or says which driver is missing, rather than quietly timing the CPU in place of
an NPU. OpenVINO is imported only for OpenVINO releases, telemetry declined first (as the backend does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.errors import AgentError
from edgeship.openvino_common import DEVICE_CONFIG as CONFIG_FILE
from edgeship.fleet.runtimes import RUNTIMES
from edgeship.openvino_common import opt_out_of_telemetry, type_name

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")  # OpenVINO picks or splits among real devices itself
DRIVERS = {  # device -> what makes OpenVINO list it (the pip wheel carries the plugins, not the drivers)
    "NPU": "install Intel's NPU driver (github.com/intel/linux-npu-driver) so /dev/accel/accel0 exists and the "
           "agent's user may open it (group render)",
    "GPU": "install Intel's GPU compute runtime (intel-opencl-icd / github.com/intel/compute-runtime) and let the "
           "agent's user open /dev/dri/renderD* (group render)",
}


def _fail(message: str) -> AgentError:
    return AgentError(f"smoke test: {message}", "smoke-failed")


def _first_line(err: Exception) -> str:
    """OpenVINO's errors are a stack of "Exception from src/...:" and "Check '...' failed at src/...:" lines
    around the one that says what went wrong ("Incorrect weights in bin file!")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    said = [line for line in lines if not (line.startswith("Exception from ") or
                                           (line.startswith("Check '") and " failed at " in line))]
    return (said or lines or [type(err).__name__])[0][:240]


def release_config(release: Path) -> dict:
    """The device, precision hint and threads the artifact was built for. Releases built before the backend
    wrote openvino.json fall back to the device in their report's lower section, else the CPU."""
    path = Path(release) / CONFIG_FILE
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise _fail(f"{CONFIG_FILE} unreadable: {err}") from None
        if not isinstance(config, dict):
            raise _fail(f"{CONFIG_FILE} is not a JSON object")
        return config
    try:
        lower = json.loads((Path(release) / "report.json").read_text())["stages"]["lower"]
        return {"device": str(lower.get("device") or "CPU"), "precision": "f32", "threads": 1}
    except (OSError, ValueError, KeyError, TypeError):
        return {"device": "CPU", "precision": "f32", "threads": 1}


def compile_config(device: str, config: dict) -> dict[str, str]:
    """Plugin properties: latency-oriented everywhere; on the CPU the precision hint and threads the build
    validated with (the CPU plugin would pick bf16 by itself on AMX cores). Other devices run at their own
    precision (the NPU's is f16/int8): what the target is, not what the build host measured."""
    properties = {"PERFORMANCE_HINT": "LATENCY"}
    if device == "CPU":
        properties["INFERENCE_PRECISION_HINT"] = str(config.get("precision") or "f32")
        properties["INFERENCE_NUM_THREADS"] = str(int(config.get("threads") or 1))
    return properties


def check_device(device: str, available: list[str]) -> None:
    """A one-line AgentError with the fix when the release's device is not one OpenVINO lists here.
    Virtual devices (AUTO, HETERO:NPU,CPU, ...) choose among what is present: OpenVINO reports those."""
    base = device.split(":", 1)[0].split(".", 1)[0].upper()
    if base in VIRTUAL_DEVICES:
        return
    present = {name.split(".", 1)[0].upper() for name in available} | set(available)
    if device in present or (device == base and base in present):
        return
    fix = DRIVERS.get(base, f"install the OpenVINO plugin and driver for {base}, or build for a target this device has")
    raise _fail(f"this release was built for OpenVINO device {device}, which this device lacks (OpenVINO lists: "
                f"{', '.join(available) or 'none'}): {fix}")


def load_openvino():
    """The openvino module, telemetry declined first; the install line when it is missing."""
    opt_out_of_telemetry()
    try:
        import openvino
    except ImportError:
        raise _fail(f"this release runs on OpenVINO, which is not installed on this device: "
                    f"{RUNTIMES['openvino'].install}") from None
    return openvino


@dataclass(frozen=True)
class InputInfo:
    name: str


class OpenVINOSession:
    """One IR compiled for its device, one infer request reused across runs (as an application would)."""

    def __init__(self, release: Path):
        release = Path(release)
        xml, weights = release / MODEL_FILE, release / WEIGHTS_FILE
        for path in (xml, weights):
            if not path.is_file():
                raise _fail(f"the release has no {path.name} (an OpenVINO artifact carries model.xml and model.bin)")
        config = release_config(release)
        self.device = str(config.get("device") or "CPU")
        ov = load_openvino()
        core = ov.Core()
        try:
            model = core.read_model(str(xml), str(weights))
        except Exception as err:  # noqa: BLE001 - OpenVINO's own exception types
            raise _fail(f"OpenVINO cannot read {MODEL_FILE}/{WEIGHTS_FILE}: {_first_line(err)}") from None
        check_device(self.device, list(core.available_devices))
        try:
            self._compiled = core.compile_model(model, self.device, compile_config(self.device, config))
        except Exception as err:  # noqa: BLE001
            raise _fail(f"OpenVINO cannot compile the model for {self.device}: {_first_line(err)}") from None
        self._request = self._compiled.create_infer_request()
        bundle_inputs = set(config.get("inputs") or [])
        self._inputs = [InputInfo(_port_name(port, bundle_inputs)) for port in self._compiled.inputs]
        self.precision = _hint(self._compiled)

    def get_inputs(self) -> list[InputInfo]:
        return list(self._inputs)

    def run(self, _names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._request.infer({i.name: np.ascontiguousarray(feed[i.name]) for i in self._inputs})
        return [np.asarray(results[port]).copy() for port in self._compiled.outputs]


def _port_name(port, wanted: set[str]) -> str:
    """The input's ONNX name (an IR tensor may carry several names; samples.npz uses the ONNX one)."""
    names = port.get_names()
    return next((n for n in sorted(names) if n in wanted), None) or port.get_any_name()


def _hint(compiled) -> str | None:
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # noqa: BLE001 - a plugin without the property
        return None
    return type_name(value)


def openvino_session(release: Path) -> OpenVINOSession:
    return OpenVINOSession(release)
