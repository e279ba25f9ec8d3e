"""Backends: the seam between edgeship's quantized ONNX and a chip's own compiler.

A target profile names its backend (`backend: {name: vela, options: {...}}`); the `lower` stage
hands the pipeline's quantized ONNX to it and gets back the native files, the runtime that runs
them, and the vendor's own report (latency/cycles, memory, per-layer placement). Built-in backends
live in this package; third parties register more under the entry-point group `edgeship.backends`
(`name = "package.module:BackendClass"`), like stages. A backend whose optional extra is not
installed fails with the exact `pip install` line.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from edgeship.errors import BuildError

ENTRY_POINT_GROUP = "edgeship.backends"
DEFAULT_BACKEND = "onnxruntime"
# backend name -> (module under edgeship.targets.backends, class, the extra that installs its dependencies)
BUILTIN = {
    "onnxruntime": ("onnx_backend", "OnnxRuntimeBackend", None),
    "tflite": ("tflite_backend", "TFLiteBackend", "tflite"),
    "vela": ("vela", "VelaBackend", "tflite"),
    "rknn": ("rknn", "RknnBackend", None),  # its SDK lives in a toolchain environment, not an extra
    "openvino": ("openvino", "OpenVINOBackend", "openvino"),  # imports openvino itself, telemetry declined first
}
# backend name -> the runtime its artifacts name in bundle.json: what a device needs to run them
# (fleet bootstrap checks boards against it; a third-party backend's runtime is known once it lowers)
ARTIFACT_RUNTIMES = {"onnxruntime": "onnxruntime", "tflite": "litert", "vela": "tflite-micro+ethos-u",
                     "rknn": "rknn-toolkit-lite2", "openvino": "openvino"}
EXTRA_MODULES = {"tflite": ("ai_edge_litert", "flatbuffers"), "vela": ("ai_edge_litert", "flatbuffers", "ethosu.vela")}


@dataclass
class Lowered:
    """What a backend returns: artifact file name -> path, the runtime that runs them, the vendor report.

    report keys (all optional): tool, version, latency_ms, cycles, memory {sram_kb, flash_kb, ...},
    placement [{name, op, unit, onnx_node}], cpu_ops (ONNX node names the vendor left on the CPU),
    macs_on_accelerator_pct, self_check {...}.
    """
    files: dict[str, Path]
    runtime: str
    report: dict[str, Any] = field(default_factory=dict)
    io: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: ClassVar[str]
    version: ClassVar[str]  # part of the lower stage's cache key
    integer_only: ClassVar[bool]  # True: needs a fully integer QDQ model (no float islands)

    def lower(self, model: Path, target: Any, workdir: Path, *, float_model: Path | None = None,
              samples: Path | None = None) -> Lowered: ...
    # float_model: the normalized float ONNX (for backends that quantize with their own tool);
    # samples: the validation inputs as one .npz (None: synthetic), for calibration or a vendor self-check


_registry: dict[str, type] = {}


def backend_spec(target_data: dict) -> tuple[str, dict]:
    """(backend name, options) a profile asks for; profiles without `backend` use onnxruntime."""
    spec = (target_data or {}).get("backend") or {}
    return str(spec.get("name") or DEFAULT_BACKEND), dict(spec.get("options") or {})


def artifact_runtime(target_data: dict) -> str | None:
    """The runtime a target's artifacts name (None for a third-party backend)."""
    return ARTIFACT_RUNTIMES.get(backend_spec(target_data)[0])


def install_hint(name: str) -> str:
    extra = BUILTIN.get(name, (None, None, None))[2]
    return f"pip install 'edgeship[{extra}]'" if extra else f"install the package that provides backend {name!r}"


def _load_builtin(name: str) -> type | None:
    if name not in BUILTIN:
        return None
    module, cls, _extra = BUILTIN[name]
    for dep in EXTRA_MODULES.get(name, ()):
        try:
            importlib.import_module(dep)
        except ImportError:
            raise BuildError(f"backend {name!r} needs {dep.split('.')[0]}, which is not installed: {install_hint(name)}",
                             stage="lower") from None
    return getattr(importlib.import_module(f"edgeship.targets.backends.{module}"), cls)


def _load_entry_point(name: str) -> type | None:
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # pragma: no cover - broken metadata must not stop a build
        return None
    for ep in eps:
        if ep.name == name:
            try:
                return ep.load()
            except Exception as err:
                raise BuildError(f"third-party backend {name!r} ({ep.value}) failed to load: {err}", stage="lower") from None
    return None


def get_backend(name: str) -> type:
    """The backend class for `name` (built-in or entry point); BuildError naming the fix otherwise."""
    if name in _registry:
        return _registry[name]
    cls = _load_builtin(name) or _load_entry_point(name)
    if cls is None:
        near = difflib.get_close_matches(name, list(BUILTIN), n=2)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise BuildError(f"unknown backend {name!r}{hint}; third-party backends register under the entry-point group "
                         f"{ENTRY_POINT_GROUP!r}", stage="lower")
    for attr in ("name", "version", "lower"):
        if not hasattr(cls, attr):
            raise BuildError(f"backend {name!r} ({cls.__qualname__}) lacks `{attr}`", stage="lower")
    _registry[name] = cls
    return cls


def backend_for(target_data: dict):
    """An instance of the target's backend, configured with the profile's options."""
    name, opts = backend_spec(target_data)
    return get_backend(name)(**opts)


def integer_only(target_data: dict) -> bool:
    """Whether the target's backend needs a fully integer model: quantize leaves nothing in float and
    legalize rejects a node the TFLite emitter cannot write. False for a backend with a `fallback`
    (raspberry-pi-5 ships ONNX when the emitter cannot lower the model). Read without importing the
    backend's dependencies, so quantize can ask even where the extra is missing."""
    name, options = backend_spec(target_data)
    return name in ("tflite", "vela") and not options.get("fallback")


__all__ = ["Backend", "Lowered", "get_backend", "backend_for", "backend_spec", "integer_only", "install_hint",
           "ENTRY_POINT_GROUP"]
