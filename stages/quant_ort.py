"""onnxruntime.quantization, driven safely: pre-processing with fallbacks, bounded calibration memory,
one calibration shared by every candidate, and the checks the quantizer itself does not make.

Why these wrappers exist (see DESIGN "Known pitfalls"):
- per-channel DequantizeLinear needs opset >= 13; on an older model the quantizer writes an invalid
  model, so we refuse before quantizing;
- `quant_pre_process`'s symbolic shape inference asserts on some real exports: retry without it,
  then without pre-processing at all, and say which path was taken;
- percentile/entropy calibration keeps every intermediate output of every sample in memory
  (onnxruntime #10503, #21979): the sample count is capped from the model's activation size, and
  MinMax runs strided (`CalibStridedMinMax`).
"""

from __future__ import annotations

import logging
import contextlib
import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from edgeship.errors import BuildError
from edgeship.pipelines.data import sample_at, sample_count, strided
from edgeship.stages.normalize import default_opset

QUANT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8, "int16": QuantType.QInt16, "uint16": QuantType.QUInt16}
METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}
HISTOGRAM_MEMORY_BYTES = 512 * 2**20  # cap for percentile/entropy: samples x activation bytes
MINMAX_STRIDE = 16
DYNAMIC_OP_TYPES = ["MatMul", "Attention", "LSTM"]  # where dynamic int8 pays off on CPU (no ConvInteger)



@contextmanager
def quiet_quantizer():
    """onnxruntime.quantization logs advice on the root logger; keep it out of build output."""
    import onnxruntime

    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    onnxruntime.set_default_logger_severity(3)  # its internal sessions warn about exporter leftovers
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print() progress
            yield
    finally:
        onnxruntime.set_default_logger_severity(2)  # onnxruntime's default (warning)
        root.setLevel(old)


class ArrayReader(CalibrationDataReader):
    """Feeds `{name: (N, *shape)}` arrays one sample at a time; supports the strided range protocol."""

    def __init__(self, data: dict[str, np.ndarray]):
        self.data = data
        self.start, self.end = 0, sample_count(data)
        self.pos = self.start

    def __len__(self) -> int:
        return sample_count(self.data)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self))
        self.pos = self.start

    def rewind(self) -> None:
        self.pos = self.start

    def get_next(self):
        if self.pos >= self.end:
            return None
        feed = sample_at(self.data, self.pos)
        self.pos += 1
        return feed


def require_opset_for_per_channel(model_path: Path) -> None:
    opset = default_opset(onnx.load(str(model_path), load_external_data=False))
    if opset < 13:
        raise BuildError(f"per-channel quantization needs opset >= 13 (DequantizeLinear axis) but the model is "
                         f"opset {opset}; run the normalize stage first (it upgrades the opset)", stage="quantize")


def activation_bytes_per_sample(model_path: Path) -> int:
    """Sum of every float intermediate tensor's size for one sample (from ONNX shape inference)."""
    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    except Exception:
        return 0
    total = 0
    for vi in list(model.graph.value_info) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        dims = [d.dim_value for d in t.shape.dim]
        if dims and all(d > 0 for d in dims):
            total += int(np.prod(dims)) * 4
    return total


def bounded_calibration(data: dict[str, np.ndarray], method: str, samples: int, model_path: Path) -> tuple[dict, dict]:
    """At most `samples` samples, fewer for histogram methods on big activations; returns (data, facts)."""
    limit = max(1, samples)
    facts: dict = {"requested": samples, "available": sample_count(data)}
    if method in ("percentile", "entropy"):
        per_sample = activation_bytes_per_sample(model_path)
        if per_sample:
            cap = max(4, HISTOGRAM_MEMORY_BYTES // per_sample)
            if cap < limit:
                facts["memory_capped"] = f"{cap} samples keep histogram calibration under {HISTOGRAM_MEMORY_BYTES >> 20} MB"
                limit = cap
    chosen = strided(data, limit)
    facts["used"] = sample_count(chosen)
    return chosen, facts


def preprocess(src: Path, dst: Path) -> str:
    """onnxruntime's recommended pre-processing, degrading gracefully; returns what was done."""
    attempts = (("symbolic shape inference + optimization", {}),
                ("onnx shape inference + optimization (symbolic shape inference failed)", {"skip_symbolic_shape": True}))
    for label, kwargs in attempts:
        try:
            with quiet_quantizer():
                quant_pre_process(str(src), str(dst), **kwargs)
            onnx.checker.check_model(str(dst))
            return label
        except Exception:  # noqa: BLE001 - the quantizer's own helper asserts on real exports
            continue
    dst.write_bytes(Path(src).read_bytes())
    return "skipped (pre-processing failed on this model; quantizing it as it is)"


def _stride(n: int) -> int | None:
    """Largest stride <= MINMAX_STRIDE dividing n (the quantizer requires an exact division)."""
    if n <= MINMAX_STRIDE:
        return None
    return next(s for s in range(MINMAX_STRIDE, 0, -1) if n % s == 0)


# ops onnxruntime's QDQ quantizer leaves in float unless asked (Sub is in neither of its registries;
# the rest are quantized only behind an already quantized input): integer-only backends need them all
INTEGER_ONLY_EXTRA_OPS = ("Sub", "Div", "HardSigmoid", "HardSwish", "Tanh", "Sigmoid", "LeakyRelu", "Relu", "Clip",
                          "ReduceMean", "ReduceSum", "ReduceMax", "Max", "Min", "Sqrt", "Reciprocal", "Exp", "Log",
                          "Expand", "GlobalMaxPool")


def op_types_to_quantize(policy) -> list[str] | None:
    """None (onnxruntime's default list), or that list plus the ops an integer-only backend needs."""
    if not getattr(policy, "integer_only", False):
        return None
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry) | set(INTEGER_ONLY_EXTRA_OPS))


def extra_options(policy) -> dict:
    opts = {
        "ActivationSymmetric": bool(policy.activation_symmetric),
        "WeightSymmetric": bool(policy.weight_symmetric),
    }
    if getattr(policy, "integer_only", False):  # a MaxPool or Reshape first in the graph is quantized too
        opts["ForceQuantizeNoInputCheck"] = True
    if policy.method == "percentile":
        opts["CalibPercentile"] = 99.999
    return opts


def quantize_static_qdq(src: Path, dst: Path, policy, calibration: dict[str, np.ndarray] | None, cache: Path,
                        nodes_to_exclude: list[str], per_channel: bool, nodes_to_quantize: list[str] | None = None,
                        int16_tensors: list[str] = ()) -> None:
    """QDQ static quantization; calibrates once into `cache` and reuses it for every later candidate.

    `nodes_to_quantize` limits int8 to those nodes (the rest stay float); `int16_tensors` get symmetric
    int16 activations (16x8 with int8 weights), onnxruntime inserting the int8<->int16 conversions."""
    if per_channel:
        require_opset_for_per_channel(src)
    opts = extra_options(policy)
    if int16_tensors:
        opts["TensorQuantOverrides"] = {t: [{"quant_type": QuantType.QInt16, "symmetric": True}] for t in int16_tensors}
    reader = None
    if not cache.is_file():
        if calibration is None:
            raise BuildError("static quantization needs calibration data", stage="quantize")
        reader = ArrayReader(calibration)
        stride = _stride(len(reader)) if policy.method == "minmax" else None
        if stride:
            opts["CalibStridedMinMax"] = stride
    try:
        with quiet_quantizer():
            quantize_static(
                str(src), str(dst), reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QUANT_TYPES[policy.activation_dtype],
                weight_type=QUANT_TYPES[policy.weight_dtype],
                nodes_to_exclude=list(nodes_to_exclude),
                op_types_to_quantize=op_types_to_quantize(policy),
                nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize is not None else None,
                calibrate_method=METHODS[policy.method],
                extra_options=opts,
                calibration_cache_path=str(cache),
            )
    except BuildError:
        raise
    except Exception as exc:  # noqa: BLE001 - report the quantizer's failure as a build error
        raise BuildError(f"onnxruntime static quantization failed: {type(exc).__name__}: {exc}", stage="quantize") from None
    onnx.checker.check_model(str(dst))


def quantize_dynamic_int8(src: Path, dst: Path, policy, nodes_to_exclude: list[str], per_channel: bool) -> None:
    """Weights int8 ahead of time, activation scales computed at run time (MatMul-heavy models on CPU)."""
    weight = QUANT_TYPES.get(policy.weight_dtype, QuantType.QInt8)
    if weight not in (QuantType.QInt8, QuantType.QUInt8):
        weight = QuantType.QInt8
    try:
        with quiet_quantizer():
            quantize_dynamic(str(src), str(dst), weight_type=weight, per_channel=per_channel,
                             op_types_to_quantize=DYNAMIC_OP_TYPES, nodes_to_exclude=list(nodes_to_exclude))
    except Exception as exc:  # noqa: BLE001
        raise BuildError(f"onnxruntime dynamic quantization failed: {type(exc).__name__}: {exc}", stage="quantize") from None
    onnx.checker.check_model(str(dst))


def default_quantize_static(src: Path, dst: Path, calibration: dict[str, np.ndarray]) -> None:
    """onnxruntime's `quantize_static` with its defaults (the bench's point of comparison)."""
    with quiet_quantizer():
        quantize_static(str(src), str(dst), ArrayReader(calibration))
