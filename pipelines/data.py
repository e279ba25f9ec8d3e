"""Sample data for calibration and validation: `.npz` files, or synthetic inputs from declared shapes.

Both stages that need data (quantize, validate) go through here so a bad data file gets the same
one-line error everywhere, and synthetic data is the same bytes for the same seed on every machine
(a build's cache key may depend on it).

`.npz` layout (docs/CONTRACTS.md): keys are the model's input names, each array holds N samples
stacked on a new leading axis, shape `(N, *input_shape)`. Keys starting with `_` are metadata
(e.g. `_labels`) and are ignored; any other unknown key is an error, to catch typos.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgeship.errors import Diagnostic, ManifestError

Dim = int | str | None
InputSpec = Mapping[str, Any]  # {"shape": [..], "dtype": "float32", optional "range": [low, high]}

DEFAULT_INT_RANGE = (0, 10)


class DataError(ManifestError):
    """A calibration/validation data file is missing, unreadable or does not fit the model's inputs.

    `origin` is where the data file was named (manifest file, line, col, field) when known, so the
    line points at the manifest; otherwise it points at the data file itself.
    """

    def __init__(self, path: Path | str, message: str, hint: str = "", origin: tuple | None = None):
        if origin:
            file, line, col, field = origin
            diag = Diagnostic(str(file), int(line), int(col), field, f"{Path(path).name}: {message}", hint)
        else:
            diag = Diagnostic(str(path), 1, 1, "", message, hint)
        super().__init__([diag])


def _is_fixed(dim: Dim) -> bool:
    return isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and int(dim) > 0


def _shape_str(shape) -> str:
    return "[" + ", ".join("?" if not _is_fixed(d) else str(int(d)) for d in shape) + "]"


def _matches(actual: tuple[int, ...], declared) -> bool:
    if len(actual) != len(declared):
        return False
    return all((not _is_fixed(d)) or int(d) == a for a, d in zip(actual, declared))


def _cast(name: str, arr: np.ndarray, dtype: np.dtype, path, origin) -> np.ndarray:
    """Cast to the model's dtype when that loses nothing that matters (float64->float32, int32->int64)."""
    if arr.dtype == dtype:
        return arr
    if arr.dtype == object:
        raise DataError(path, f"key '{name}' holds Python objects, not numbers", origin=origin)
    if np.issubdtype(dtype, np.integer) and np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(path, f"key '{name}' is {arr.dtype} with fractional values but input '{name}' is {dtype}",
                            "store integer ids as an integer array", origin)
    return arr.astype(dtype)


def _fit_shape(name: str, arr: np.ndarray, shape, path, origin) -> np.ndarray:
    """Accept `(N, *shape)`; also `(N, *shape[1:])` when the model's batch dim is 1 (a common way to save)."""
    if _matches(arr.shape[1:], shape):
        return arr
    if len(shape) >= 1 and shape[0] == 1 and _matches(arr.shape[1:], shape[1:]):
        return arr.reshape((arr.shape[0], 1, *arr.shape[1:]))
    raise DataError(
        path,
        f"key '{name}' has shape {list(arr.shape)}; expected (N, *{_shape_str(shape)}) for input '{name}'",
        "stack N samples on a new leading axis",
        origin,
    )


def load_npz(path: str | Path, inputs: Mapping[str, InputSpec], samples: int | None = None,
             origin: tuple | None = None) -> dict[str, np.ndarray]:
    """Load `path` and check it against `inputs` ({name: {shape, dtype}}). Returns {name: (N, *shape)} arrays.

    `samples` keeps only the first N samples. Raises DataError (one clear line) on a missing file,
    a corrupt archive, missing/unknown keys, wrong shapes, lossy dtypes, or differing sample counts.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "data file not found", "paths are relative to the manifest", origin)
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise DataError(path, "not a readable .npz archive (no zip header)", "save with numpy.savez", origin)
    try:
        with np.load(path, allow_pickle=False) as archive:
            raw = {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(path, f"not a readable .npz archive ({exc})", "save with numpy.savez", origin) from None
    except ValueError as exc:  # pickled object arrays
        raise DataError(path, f"cannot load without pickle ({exc})", "save plain numeric arrays", origin) from None

    missing = [name for name in inputs if name not in raw]
    unknown = sorted(k for k in raw if k not in inputs and not k.startswith("_"))
    if missing:
        hint = f"the file has keys {sorted(raw)}" if raw else "the archive is empty"
        raise DataError(path, f"missing key(s) {missing} for the model's inputs", hint, origin)
    if unknown:
        raise DataError(path, f"unknown key(s) {unknown}; the model's inputs are {sorted(inputs)}",
                        "prefix metadata keys with '_'", origin)

    out: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for name, spec in inputs.items():
        arr = raw[name]
        shape = list(spec["shape"])
        if arr.ndim == 0:
            raise DataError(path, f"key '{name}' is a scalar; expected (N, *{_shape_str(shape)})", origin=origin)
        arr = _fit_shape(name, arr, shape, path, origin)
        arr = _cast(name, arr, np.dtype(spec.get("dtype", "float32")), path, origin)
        counts[name] = arr.shape[0]
        out[name] = arr
    if len(set(counts.values())) > 1:
        raise DataError(path, f"inputs hold different sample counts {counts}", "every key needs the same N", origin)
    n = next(iter(counts.values()), 0)
    if n == 0:
        raise DataError(path, "no samples (N = 0)", origin=origin)
    if samples is not None and samples < n:
        out = {k: np.ascontiguousarray(v[:samples]) for k, v in out.items()}
    return out


def _rng_for(name: str, seed: int) -> np.random.Generator:
    """One generator per input name, so adding an input never changes another input's samples."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def concrete_shape(shape, name: str = "") -> list[int]:
    """A shape with every dim fixed; unpinned dims are an error (normalize pins them from the manifest)."""
    dims = list(shape)
    if not all(_is_fixed(d) for d in dims):
        raise ValueError(f"input '{name}' has unpinned dims {_shape_str(dims)}; pin them in model.inputs")
    return [int(d) for d in dims]


def synthetic_inputs(inputs: Mapping[str, InputSpec], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic stand-in data shaped `(n, *shape)` per input: a weaker guarantee than real samples.

    floats: standard normal; integers: uniform in `spec["range"]` (default [0, 10)) so token-id inputs
    stay inside small vocabularies; bool: fair coin. Same (inputs, n, seed) -> same bytes.
    """
    out: dict[str, np.ndarray] = {}
    for name, spec in inputs.items():
        shape = concrete_shape(spec["shape"], name)
        dtype = np.dtype(spec.get("dtype", "float32"))
        rng = _rng_for(name, seed)
        full = (int(n), *shape)
        if dtype == np.bool_:
            arr = rng.random(full) < 0.5
        elif np.issubdtype(dtype, np.integer):
            low, high = spec.get("range", DEFAULT_INT_RANGE)
            arr = rng.integers(int(low), int(high), size=full).astype(dtype)
        else:
            arr = rng.standard_normal(full).astype(dtype)
        out[name] = arr
    return out


def sample_count(data: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(data.values())).shape[0]) if data else 0


def sample_at(data: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """Sample i as an onnxruntime feed: {name: ndarray shaped like the model input}.

    `v[i, ...]` keeps a 0-d *array* for a scalar input stored as shape (N,): plain `v[i]` gives a numpy
    scalar, which onnxruntime refuses ("Unable to handle object of type numpy.int64"), and
    `np.ascontiguousarray` would make it 1-d (a rank error)."""
    feed = {}
    for name, values in data.items():
        one = values[i, ...]
        feed[name] = one if one.flags.c_contiguous else np.ascontiguousarray(one)
    return feed


def iter_samples(data: Mapping[str, np.ndarray]):
    """Yield one feed dict per sample ({name: array shaped like the model input})."""
    for i in range(sample_count(data)):
        yield sample_at(data, i)


def strided(data: Mapping[str, np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """At most `limit` samples, evenly spread over the set (bounds calibration memory, keeps coverage)."""
    n = sample_count(data)
    if limit <= 0 or n <= limit:
        return dict(data)
    idx = np.linspace(0, n - 1, num=limit).round().astype(int)
    return {k: np.ascontiguousarray(v[idx]) for k, v in data.items()}
