"""The quantization policy: the manifest's `quantization` section held against the target's constraints.

One place decides what "int8, per-channel, symmetric" means for a given chip, so quantize never
builds a model the target cannot run: a value the manifest states explicitly and the target forbids
is an error pointing at the manifest line; a value left at its default adapts to the target
(e.g. per-tensor on the AMD DPU, symmetric on a symmetric-only chip).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from edgeship.errors import BuildError

QUANTIZER_DTYPES = ("int8", "uint8", "int16", "uint16")  # what onnxruntime's QDQ quantizer emits here
METHODS = ("minmax", "percentile", "entropy")
MODES = ("none", "dynamic", "static", "auto")
RECOVERY = ("calibration", "bias-correction", "equalize", "float-layers", "int16-layers")  # in order of cost
FLOAT_FORMATS = ("float32", "fp32", "float16", "fp16", "bf16", "bfloat16")
DEFAULT_SAMPLES = 200


@dataclass(frozen=True)
class QuantPolicy:
    mode: str = "auto"
    weight_dtype: str = "int8"
    activation_dtype: str = "int8"
    per_channel: bool = True
    weight_symmetric: bool = True
    activation_symmetric: bool = False
    method: str = "minmax"
    samples: int = DEFAULT_SAMPLES
    keep_float: tuple[str, ...] = ()
    power_of_two: bool = False
    per_channel_allowed: bool = True
    per_tensor_allowed: bool = True
    dynamic_allowed: bool = True
    integer_allowed: bool = True  # the target runs at least one integer format this quantizer emits
    alternative_activation_dtypes: tuple[str, ...] = ()  # auto may also try these (activation dtype not pinned)
    integer_only: bool = False  # no float layers: the target runs no float format, or its backend (integer
    # TFLite, Vela) needs every op quantized
    int16_activations_allowed: bool = False  # the target runs 16x8 (int16 activations, int8 weights)
    recovery: tuple[str, ...] = RECOVERY  # what auto may try when full int8 misses the accuracy goal
    notes: tuple[str, ...] = field(default_factory=tuple)

    def with_granularity(self, per_channel: bool) -> "QuantPolicy":
        return replace(self, per_channel=per_channel)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "weights": {"dtype": self.weight_dtype, "granularity": "per-channel" if self.per_channel else "per-tensor",
                                           "symmetric": self.weight_symmetric},
            "activations": {"dtype": self.activation_dtype, "symmetric": self.activation_symmetric},
            "calibration": {"method": self.method, "samples": self.samples},
            "keep_float": list(self.keep_float), "power_of_two_scales": self.power_of_two,
            "recovery": list(self.recovery), "integer_only_target": self.integer_only,
            "int16_activations": self.int16_activations_allowed,
        }


def _get(d: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


class _Errors:
    def __init__(self, where, target_name: str):
        self.where, self.target_name, self.messages = where, target_name, []

    def add(self, path: tuple[str, ...], message: str) -> None:
        file, line, col = self.where(*path)
        self.messages.append(f"{file}:{line}:{col}: {'.'.join(path)}: {message}")

    def raise_if_any(self) -> None:
        if self.messages:
            raise BuildError("; ".join(self.messages), stage="quantize")


def integer_only_target(target_data: dict) -> bool:
    """No float layer can ship: the backend takes only fully integer models (TFLite emitter, Vela), or
    the accelerator runs no float format and nothing else runs the rest - no host fallback, or a
    compiler that takes only fully quantized models (Arm Vela: int8 or 16x8)."""
    from edgeship.targets.backends import integer_only

    if integer_only(target_data):
        return True
    dtypes = [str(d) for d in _get(target_data, "quantization", "dtypes", default=[]) or []]
    if not dtypes or any(d in FLOAT_FORMATS for d in dtypes):
        return False
    command = str(_get(target_data, "runtime", "compile_command", default="") or "")
    fallback = bool(_get(target_data, "host_fallback", "enabled", default=False))
    return not fallback or command.split()[:1] == ["vela"]


def resolve_policy(spec: dict, target_data: dict, where=None) -> QuantPolicy:
    """The effective policy for `spec` (pipeline fields) on a target (profile dict).

    `where(*path) -> (file, line, col)` locates manifest fields for errors (BuildContext.where).
    """
    where = where or (lambda *p: ("<pipeline>", 1, 1))
    q = spec.get("quantization") or {}
    tq = target_data.get("quantization") or {}
    target_name = str(_get(target_data, "metadata", "name", default=spec.get("target", "target")))
    errors = _Errors(where, target_name)

    mode = q.get("mode", "auto")
    allowed = [str(d) for d in tq.get("dtypes") or QUANTIZER_DTYPES]
    weight_allowed = [str(d) for d in tq.get("weight_dtypes") or allowed]
    act_allowed = [str(d) for d in tq.get("activation_dtypes") or allowed]

    def pick_dtype(path: tuple[str, ...], explicit: str | None, allowed_here: list[str]) -> str:
        usable = [d for d in allowed_here if d in QUANTIZER_DTYPES]
        if explicit is not None:
            if explicit not in QUANTIZER_DTYPES:
                errors.add(path, f"{explicit} is not produced by edgeship's quantizer (supported: {', '.join(QUANTIZER_DTYPES)})")
            elif explicit not in allowed_here:
                errors.add(path, f"{explicit} is not supported by target {target_name} (allowed: {', '.join(allowed_here)})")
            return explicit
        return usable[0] if usable else "int8"

    weight_dtype = pick_dtype(("quantization", "weights", "dtype"), _get(q, "weights", "dtype"), weight_allowed)
    act_dtype = pick_dtype(("quantization", "activations", "dtype"), _get(q, "activations", "dtype"), act_allowed)
    if mode in ("static", "dynamic") and not any(d in QUANTIZER_DTYPES for d in allowed):
        errors.add(("quantization", "mode"), f"target {target_name} runs no integer format edgeship can quantize to (dtypes: {allowed})")

    granularity = [str(g) for g in tq.get("granularity") or ("per-tensor", "per-channel")]
    per_channel_ok, per_tensor_ok = "per-channel" in granularity, "per-tensor" in granularity
    explicit_gran = _get(q, "weights", "granularity")
    if explicit_gran is not None and explicit_gran not in granularity:
        errors.add(("quantization", "weights", "granularity"),
                   f"{explicit_gran} is not supported by target {target_name} (allowed: {', '.join(granularity)})")
    per_channel = (explicit_gran == "per-channel") if explicit_gran else per_channel_ok

    symmetric_only = bool(tq.get("symmetric_only", False))
    w_sym, a_sym = _get(q, "weights", "symmetric"), _get(q, "activations", "symmetric")
    for path, value in ((("quantization", "weights", "symmetric"), w_sym), (("quantization", "activations", "symmetric"), a_sym)):
        if symmetric_only and value is False:
            errors.add(path, f"target {target_name} is symmetric-only (zero point 0); remove this or set it true")
    weights_symmetric_only = symmetric_only or bool(tq.get("weights_symmetric_only", False))
    if weights_symmetric_only and w_sym is False and not symmetric_only:
        errors.add(("quantization", "weights", "symmetric"), f"target {target_name} needs symmetric weights (zero point 0)")
    weight_symmetric = True if weights_symmetric_only else (True if w_sym is None else bool(w_sym))
    act_symmetric = True if symmetric_only else bool(a_sym)

    power_of_two = bool(tq.get("power_of_two_scales", False))
    runtime_kind = _get(target_data, "runtime", "kind", default="onnxruntime")
    dynamic_ok = runtime_kind == "onnxruntime" and not power_of_two
    if mode == "dynamic" and not dynamic_ok:
        errors.add(("quantization", "mode"), f"dynamic quantization computes activation scales at run time; target "
                                             f"{target_name} needs them fixed at build time (use static or auto)")

    method = _get(q, "calibration", "method", default="minmax")
    samples = int(_get(q, "calibration", "samples", default=DEFAULT_SAMPLES))
    keep = tuple(str(g) for g in q.get("keep_float") or ())
    errors.raise_if_any()
    notes = []
    if symmetric_only and (w_sym is None or a_sym is None):
        notes.append(f"symmetric quantization forced by target {target_name}")
    if explicit_gran is None and not per_channel_ok:
        notes.append(f"per-tensor weights: target {target_name} has no per-channel scales")
    if power_of_two:
        notes.append(f"power-of-two scales required by target {target_name}")
    return QuantPolicy(mode=mode, weight_dtype=weight_dtype, activation_dtype=act_dtype, per_channel=per_channel,
                       weight_symmetric=weight_symmetric, activation_symmetric=act_symmetric, method=method,
                       samples=samples, keep_float=keep, power_of_two=power_of_two,
                       per_channel_allowed=per_channel_ok, per_tensor_allowed=per_tensor_ok,
                       dynamic_allowed=dynamic_ok, integer_allowed=any(d in QUANTIZER_DTYPES for d in allowed),
                       integer_only=integer_only_target(target_data),
                       int16_activations_allowed="int16" in act_allowed and "int8" in weight_allowed,
                       recovery=tuple(q.get("recovery", RECOVERY)),
                       alternative_activation_dtypes=tuple(
                           d for d in act_allowed if d in ("int8", "uint8") and d != act_dtype
                       ) if _get(q, "activations", "dtype") is None else (),
                       notes=tuple(notes))
