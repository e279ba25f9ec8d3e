"""Intel OpenVINO backend: edgeship's QDQ ONNX -> OpenVINO IR (model.xml + model.bin), validated on this host's CPU.

Runs in edgeship's own process: `openvino` needs only numpy (< 2.6) and openvino-telemetry, which
conflict with none of edgeship's pins (the `openvino` extra). int8 comes from edgeship's QDQ model:
OpenVINO turns each QuantizeLinear/DequantizeLinear pair into a FakeQuantize and its CPU plugin runs
those layers in int8 (measured against NNCF's own quantization in bench/toolchains.py: see
docs/backends.md). `quantizer: nncf` quantizes the float model with NNCF instead, when a profile asks.

Two OpenVINO defaults are pinned: the CPU plugin's inference precision (bf16 on CPUs with AMX unless
told otherwise; `precision` option, default f32, so host validation measures what the QDQ model means),
and telemetry (`import openvino` writes a client id under ~/intel and sends usage events unless the
consent file says 0: edgeship writes the vendor's opt-out file before importing, unless the user has
already made a choice there). The compiled model's execution precision per layer is recorded.

Next to the IR goes `openvino.json`: the target's device (CPU, NPU, GPU), the CPU precision hint and
threads. The device agent (fleet/openvino_runtime.py) compiles the IR for that device in its smoke test.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.errors import BuildError
from edgeship.openvino_common import DEVICE_CONFIG, opt_out_of_telemetry, telemetry_state, type_name
from edgeship.targets.backends import Lowered

HOST_DEVICE = "CPU"


def load_openvino():
    """The openvino module, telemetry declined first; BuildError with the install line when missing."""
    opt_out_of_telemetry()
    try:
        import openvino
    except ImportError:
        raise BuildError("backend 'openvino' needs the openvino package: pip install 'edgeship[openvino]'",
                         stage="lower") from None
    return openvino


def _plain(value) -> str:
    """rt_info values arrive wrapped (OVAny); their payload is a string."""
    return str(getattr(value, "value", value))


def execution_precisions(compiled) -> dict[str, int]:
    """Layers of the compiled model per runtime precision (e.g. {"i8": 12, "f32": 3}), from its execution graph."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = _plain(info["layerType"]) if "layerType" in info else ""
        if layer in ("Input", "Output", "Const", "Parameter", "Result"):
            continue
        precision = _plain(info["runtimePrecision"]) if "runtimePrecision" in info else "unknown"
        counts[precision.lower()] += 1
    return dict(sorted(counts.items()))


def _load_samples(samples: Path, names: list[str]) -> list[dict[str, np.ndarray]]:
    with np.load(samples, allow_pickle=False) as data:
        missing = [n for n in names if n not in data.files]
        if missing:
            raise BuildError(f"samples lack input(s) {', '.join(missing)}", stage="lower")
        count = min(len(data[n]) for n in names)
        return [{n: np.ascontiguousarray(data[n][i]) for n in names} for i in range(count)]


def _agreement(got: list[np.ndarray], want: list[np.ndarray]) -> dict:
    from edgeship.pipelines import metrics

    ref, cand = np.stack(want), np.stack(got)
    return {"top1_agreement": round(metrics.top1_agreement(ref, cand), 6), "cosine": round(metrics.cosine(ref, cand), 6),
            "sqnr_db": round(metrics.sqnr_db(ref, cand), 3), "max_abs_error": round(metrics.max_abs_error(ref, cand), 6)}


def is_quantized(model: Path) -> bool:
    """Whether the model carries QDQ (edgeship's quantize stage chose int8 for it)."""
    from edgeship.targets.backends.toolchain_backend import load_graph

    graph = load_graph(model)
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


def nncf_quantize(openvino, float_model: Path, samples: list[dict[str, np.ndarray]]):
    """NNCF's post-training quantization of the float model, calibrated on `samples` (when a profile asks for it)."""
    try:
        import nncf
    except ImportError:
        raise BuildError("backend option quantizer: nncf needs the nncf package: pip install nncf", stage="lower") from None
    model = openvino.Core().read_model(str(float_model))
    return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))


def _installed(package: str) -> str:
    """A package's installed version without importing it (importing openvino starts its telemetry)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


class OpenVINOBackend:
    """Options (profile `backend.options`): device (the target's OpenVINO device: CPU, NPU, GPU), precision
    (CPU inference precision hint for host validation: f32 | bf16 | f16), quantizer (edgeship | nncf),
    threads (host validation threads, default 1), runs (timed host runs, default 20)."""

    name = "openvino"
    # part of the lower stage's cache key; 2: writes openvino.json, the device agent's run settings
    version = f"2-openvino{_installed('openvino')}-nncf{_installed('nncf')}"
    integer_only = False

    def __init__(self, device: str = "CPU", precision: str = "f32", quantizer: str = "edgeship", threads: int = 1,
                 runs: int = 20):
        if quantizer not in ("edgeship", "nncf"):
            raise BuildError(f"backend openvino: quantizer must be 'edgeship' or 'nncf', not {quantizer!r}", stage="lower")
        self.device, self.precision, self.quantizer = str(device), str(precision), quantizer
        self.threads, self.runs = int(threads), int(runs)

    def int8_source(self, model: Path, float_model: Path | None) -> str:
        """Who makes the int8: edgeship's policy decides *whether* (a QDQ model arrives or a float one),
        `quantizer` decides *how* for OpenVINO. "float" when edgeship kept the model in float."""
        if not is_quantized(model):
            return "float"
        if self.quantizer == "nncf" and float_model is not None:
            return "nncf"
        return "edgeship-qdq" if self.quantizer == "edgeship" else "edgeship-qdq (nncf asked, but no float model was given)"

    def compile_on_host(self, core, xml: Path):
        config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": str(self.threads),
                  "PERFORMANCE_HINT": "LATENCY"}
        return core.compile_model(str(xml), HOST_DEVICE, config)

    def lower(self, model: Path, target: Any, workdir: Path, *, float_model: Path | None = None,
              samples: Path | None = None) -> Lowered:
        from edgeship.stages.quant_measure import session

        ov = load_openvino()
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        synthetic = samples is None
        if synthetic:
            from edgeship.targets.backends.toolchain_backend import synthetic_samples

            samples = synthetic_samples(Path(float_model or model), workdir / "synthetic_samples.npz")
        reference = session(float_model or model, threads=0)
        names = [i.name for i in reference.get_inputs()]
        feeds = _load_samples(Path(samples), names)
        started = time.monotonic()
        core = ov.Core()
        int8_source = self.int8_source(Path(model), float_model)
        xml = workdir / "model.xml"
        try:
            ir = nncf_quantize(ov, Path(float_model), feeds) if int8_source == "nncf" else core.read_model(str(model))
            ov.save_model(ir, str(xml), compress_to_fp16=False)  # keep float weights as they are; int8 stays int8
            convert_seconds = time.monotonic() - started
            compiled = self.compile_on_host(core, xml)
            request = compiled.create_infer_request()
            got = [np.asarray(request.infer(feed)[compiled.output(0)]).copy() for feed in feeds]
        except BuildError:
            raise
        except Exception as err:  # OpenVINO's and NNCF's own exception types: one line, the rest is theirs
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise BuildError(f"openvino {int8_source}: {first}", stage="lower") from None
        want = [reference.run(None, feed)[0] for feed in feeds]
        accuracy = {"vs_float" if float_model else "vs_model": _agreement(got, want)}
        if float_model:
            qdq = session(model, threads=0)
            accuracy["vs_edgeship_qdq_onnxruntime"] = _agreement(got, [qdq.run(None, f)[0] for f in feeds])
        times = []
        for _ in range(3):
            request.infer(feeds[0])
        for _ in range(max(1, self.runs)):
            t0 = time.perf_counter()
            request.infer(feeds[0])
            times.append((time.perf_counter() - t0) * 1e3)
        report = {
            "tool": "openvino", "version": ov.get_version(), "device": self.device, "quantizer": self.quantizer,
            "int8_source": int8_source,
            "convert_seconds": round(convert_seconds, 3),
            "ir_bytes": {"model.xml": xml.stat().st_size, "model.bin": xml.with_suffix(".bin").stat().st_size},
            "host_validation": {
                "device": HOST_DEVICE, "precision_hint": type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
                "execution_precisions": execution_precisions(compiled), "threads": self.threads,
                "samples": len(feeds), "inputs": "synthetic (seeded normal)" if synthetic else "validation data",
                "accuracy": accuracy, "p50_ms": round(float(np.median(times)), 4), "runs": len(times)},
            "latency_ms": None,
            "latency_note": (f"measured on this host's CPU plugin, not on {self.device}" if self.device != HOST_DEVICE
                             else "see host_validation.p50_ms (this host's CPU, not the target's)"),
            "available_devices": list(core.available_devices),
            "telemetry": telemetry_state(),
        }
        run_config = workdir / DEVICE_CONFIG
        run_config.write_text(json.dumps({"device": self.device, "precision": self.precision, "threads": self.threads,
                                          "inputs": names, "openvino": ov.get_version()}, indent=2) + "\n")
        files = {"model.xml": xml, "model.bin": xml.with_suffix(".bin"), DEVICE_CONFIG: run_config}
        return Lowered(files, "openvino", report, {"device": self.device, "inputs": names})
