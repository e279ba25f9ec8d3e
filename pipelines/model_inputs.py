"""A Pipeline's declared input shapes, checked against its ONNX model and its data files.

Why here and not only in the build: `edgeship validate` must refuse what `build` would refuse (an
input the model does not have, a wrong rank, a fixed dim pinned to another size, a dynamic dim left
unpinned, data files that do not fit), with the error at the manifest line and, for an unpinned dim,
a "pin it" hint whose shape really runs: dims come from the model where fixed, from the manifest
where pinned, from the data files where they say, shared symbols get one value, and the proposal is
run once in onnxruntime before it is suggested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.pipelines.schema_check import Problem, did_you_mean

Dim = int | str | None  # fixed size, symbolic name, or unknown


@dataclass(frozen=True)
class ModelInput:
    name: str
    dims: list[Dim] | None  # None: the model declares no shape at all
    dtype: str  # numpy dtype name


def read_model_inputs(path: Path) -> list[ModelInput]:
    """The model's real inputs (initializers listed as inputs by old exporters left out), weights not loaded."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        tensor = vi.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name if tensor.elem_type else "float32"
        dims: list[Dim] | None = None
        if tensor.HasField("shape"):
            dims = []
            for d in tensor.shape.dim:
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                else:
                    dims.append((d.dim_param or None) if d.HasField("dim_param") else None)
        out.append(ModelInput(vi.name, dims, dtype))
    return out


def _fixed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes in an .npz, read from the .npy headers (no data loaded); {} when unreadable."""
    import zipfile

    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shapes[member[:-4]] = tuple(reader(fh)[0])
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}
    return shapes


def _data_dims(model_input: ModelInput, data_shapes: list[dict[str, tuple[int, ...]]]) -> list[int] | None:
    """The per-sample shape the data files give this input: (N, *shape), or (N, *shape[1:]) when the
    batch dim is 1 or dynamic (the two layouts `data.load_npz` accepts)."""
    dims = model_input.dims or []
    for shapes in data_shapes:
        shape = shapes.get(model_input.name)
        if shape is None:
            continue
        if len(shape) == len(dims) + 1:
            return list(shape[1:])
        if dims and len(shape) == len(dims) and not (_fixed(dims[0]) and dims[0] != 1):
            return [1, *shape[1:]]
    return None


def _proposal(inputs: list[ModelInput], pins: dict, data_shapes: list[dict]) -> dict[str, list[int]]:
    """A full static shape per input: model's fixed dims, then pins, then data, shared symbols alike, else 1."""
    symbols: dict[str, int] = {}
    shapes: dict[str, list[Dim]] = {}
    for mi in inputs:
        pin = pins.get(mi.name) if isinstance(pins.get(mi.name), list) else None
        from_data = _data_dims(mi, data_shapes)
        dims = list(mi.dims) if mi.dims is not None else [None] * len(pin or from_data or [])
        for i, dim in enumerate(dims):
            if _fixed(dim):
                continue
            for source in (pin, from_data):
                if source is not None and len(source) == len(dims) and _fixed(source[i]):
                    dims[i] = int(source[i])
                    if isinstance(mi.dims[i] if mi.dims else None, str):
                        symbols.setdefault(mi.dims[i], int(source[i]))
                    break
        shapes[mi.name] = dims
    out: dict[str, list[int]] = {}
    for mi in inputs:
        model_dims = mi.dims or [None] * len(shapes[mi.name])
        out[mi.name] = [d if _fixed(d) else symbols.get(m, 1) if isinstance(m, str) else 1
                        for d, m in zip(shapes[mi.name], model_dims)]
    return out


def _runs(model_path: Path, inputs: list[ModelInput], shapes: dict[str, list[int]]) -> str | None:
    """None when the model runs once in onnxruntime at these shapes; else the first line of its error."""
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        feed = {mi.name: np.ones(shapes[mi.name], dtype=np.dtype(mi.dtype)) for mi in inputs}
        session.run(None, feed)
    except Exception as err:  # onnxruntime raises its own types; any failure means "did not run"
        return str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return None


def _flow(shape: list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def input_problems(model_path: Path, pins: Any, data_files: dict[tuple, Path]) -> list[Problem]:
    """Problems of `model.inputs` (`pins`) against the model at `model_path` and the data files
    (manifest field path -> resolved .npz path). An unreadable model is one problem at model.path."""
    from edgeship.pipelines.data import DataError, load_npz

    pins = pins if isinstance(pins, dict) else {}
    try:
        inputs = read_model_inputs(model_path)
    except Exception as err:  # onnx raises DecodeError, ValueError, OSError... for a file that is not a model
        return [Problem(("model", "path"), f"not a readable ONNX model ({type(err).__name__}: {str(err)[:120]})",
                        "export the model again")]
    names = [mi.name for mi in inputs]
    out: list[Problem] = []
    for name in pins:
        if name not in names:
            out.append(Problem(("model", "inputs", name), f"the model has no input '{name}'",
                               did_you_mean(name, names) or f"its inputs are {names}", at_key=True))
    unpinned: list[tuple[tuple, str]] = []
    for mi in inputs:
        pin = pins.get(mi.name)
        pin = pin if isinstance(pin, list) else None
        if mi.dims is not None and pin is not None and len(pin) != len(mi.dims):
            out.append(Problem(("model", "inputs", mi.name), f"{len(pin)} dims given but input '{mi.name}' has rank "
                               f"{len(mi.dims)} ({_flow(['?' if not _fixed(d) else d for d in mi.dims])})",
                               "give one size per dimension"))
            continue
        if mi.dims is None and pin is None:
            unpinned.append((("model", "inputs"), f"input '{mi.name}' has no shape in the model"))
            continue
        for i, dim in enumerate(mi.dims or []):
            want = pin[i] if pin is not None else None
            if _fixed(dim):
                if _fixed(want) and want != dim:
                    out.append(Problem(("model", "inputs", mi.name, i), f"input '{mi.name}' dim {i} is fixed at {dim} "
                                       f"in the model, the manifest says {want}", f"write {dim}"))
            elif not _fixed(want):
                label = f" ('{dim}')" if isinstance(dim, str) else ""
                unpinned.append((("model", "inputs", mi.name) if pin is not None else ("model", "inputs"),
                                 f"input '{mi.name}' dim {i}{label} is dynamic and not pinned"))
    if out:
        return out
    data_shapes = [_npz_shapes(path) for path in data_files.values() if path.is_file()]
    if unpinned:
        proposal = _proposal(inputs, pins, data_shapes)
        example = "{" + ", ".join(f"{n}: {_flow(s)}" for n, s in proposal.items()) + "}"
        failure = _runs(model_path, inputs, proposal)
        hint = (f"pin it: model.inputs: {example}, a shape that runs in onnxruntime" if failure is None else
                f"pin it, e.g. model.inputs: {example}, though that shape did not run in onnxruntime ({failure}): "
                "use the sizes your model is meant for")
        for path, message in unpinned:
            out.append(Problem(path, message, hint))
        return out
    declared = {mi.name: {"shape": list(pins.get(mi.name) or mi.dims or []), "dtype": mi.dtype} for mi in inputs}
    for field_path, path in data_files.items():
        if not path.is_file():
            continue  # reported by the file checks
        try:
            load_npz(path, declared)
        except DataError as err:
            first = err.diagnostics[0]
            out.append(Problem(field_path, f"{path.name}: {first.message}", first.hint))
    return out
