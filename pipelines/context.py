"""BuildContext: what one build carries from stage to stage.

Each stage reads the context, writes a new model file into `workdir` (never edits a previous one),
points `model_path` at it, and records its findings in `report[<stage name>]`. The runner hashes the
model after every stage into `digests["model"]`, which is what the next stage's cache key is made of.

The fields listed in `CACHED_FIELDS` are what a stage's cache entry restores: keep anything a later
stage needs in one of them (free-form values go in `extra`, extra files in `files`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.artifact import sha256_file

# fields a cache hit restores (besides report[stage]); Path-valued ones are stored as files
CACHED_FIELDS = ("model_path", "float_model_path", "inputs", "outputs", "digests", "extra", "files", "warnings")
PATH_FIELDS = ("model_path", "float_model_path")


def _get(mapping: Any, *path: str, default: Any = None) -> Any:
    for part in path:
        if not isinstance(mapping, dict) or part not in mapping:
            return default
        mapping = mapping[part]
    return mapping


@dataclass
class BuildContext:
    pipeline: Any  # the Document (kind Pipeline): .name, .data, .source, .base_dir, .where(path)
    spec: dict  # the pipeline's fields (Document.data)
    target: Any  # TargetProfile (attribute access + .data) or None when the profile is unavailable
    workdir: Path
    model_path: Path | None = None  # the current model; each stage writes a new one
    float_model_path: Path | None = None  # normalized + optimized float reference
    inputs: dict[str, dict] = field(default_factory=dict)  # name -> {"shape": [...], "dtype": "float32"}
    outputs: dict[str, dict] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # one JSON-serialisable section per stage
    digests: dict[str, str] = field(default_factory=dict)  # "model", "source_model", "manifest", data files ...
    stage_keys: dict[str, str] = field(default_factory=dict)  # filled by the runner, recorded in the lock
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable values later stages need
    files: dict[str, Path] = field(default_factory=dict)  # extra files a stage produced (cached with it)
    warnings: list[str] = field(default_factory=list)
    records: list = field(default_factory=list)  # the runner's StageRecords so far (for the report; not cached)
    _calibration: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _validation: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _file_digests: dict[str, str] = field(default_factory=dict, repr=False)  # memo, never cached

    # --- naming ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(getattr(self.pipeline, "name", None) or _get(self.spec, "metadata", "name", default="pipeline"))

    @property
    def target_name(self) -> str:
        if self.target is not None:
            return str(getattr(self.target, "name", None) or _get(self.target_data, "metadata", "name", default=""))
        return str(self.spec.get("target", ""))

    @property
    def target_data(self) -> dict:
        data = getattr(self.target, "data", self.target)
        return data if isinstance(data, dict) else {}

    def setting(self, *path: str, default: Any = None) -> Any:
        """A manifest field by path, e.g. ctx.setting("quantization", "mode", default="none")."""
        return _get(self.spec, *path, default=default)

    def new_model_path(self, stage: str) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir / f"{stage}.onnx"

    def resolve(self, relative: str | Path) -> Path:
        """A path from the manifest, relative to the manifest's own folder."""
        path = Path(relative).expanduser()
        if path.is_absolute():
            return path
        base = getattr(self.pipeline, "base_dir", None) or Path(getattr(self.pipeline, "source", ".")).parent
        return Path(base) / path

    def where(self, *path: str | int) -> tuple[str, int, int]:
        """(file, line, col) of a manifest field, for errors that point back into the YAML."""
        source = str(getattr(self.pipeline, "display", "") or getattr(self.pipeline, "source", "<pipeline>"))
        finder = getattr(self.pipeline, "where", None)
        if finder is not None:
            try:
                line, col = finder(tuple(path))
                return source, int(line), int(col)
            except Exception:
                pass
        return source, 1, 1

    # --- digests --------------------------------------------------------------------------------
    def target_digest(self) -> str:
        data = self.target_data
        if not data:
            return "target:" + str(self.spec.get("target", ""))
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()

    def file_digest(self, label: str, path: Path | None) -> str:
        """sha256 of a file, memoised per build under `label` (missing file -> "missing")."""
        if label not in self._file_digests:
            ok = path is not None and Path(path).is_file()
            self._file_digests[label] = sha256_file(Path(path)) if ok else "missing"
        return self._file_digests[label]

    def data_digest(self, kind: str) -> str:
        """Digest of `calibration` or `validation` data named in the manifest ("synthetic" when none)."""
        rel = self.setting("quantization", "calibration", "data") if kind == "calibration" else self.setting("validation", "data")
        if not rel:
            return "synthetic"
        return self.file_digest(f"{kind}_data", self.resolve(rel))

    # --- data (loaded on first use) -------------------------------------------------------------
    def _load_data(self, kind: str) -> dict[str, np.ndarray] | None:
        if kind == "calibration":
            rel, samples, where = self.setting("quantization", "calibration", "data"), self.setting("quantization", "calibration", "samples"), ("quantization", "calibration", "data")
        else:
            rel, samples, where = self.setting("validation", "data"), self.setting("validation", "samples"), ("validation", "data")
        if not rel:
            return None
        from edgeship.pipelines.data import load_npz

        file, line, col = self.where(*where)
        return load_npz(self.resolve(rel), self.inputs, samples=samples, origin=(file, line, col, ".".join(where)))

    @property
    def calibration(self) -> dict[str, np.ndarray] | None:
        """Calibration arrays from the manifest's `.npz` (None when the manifest names none)."""
        if self._calibration is None:
            self._calibration = self._load_data("calibration")
        return self._calibration

    @calibration.setter
    def calibration(self, value: dict[str, np.ndarray] | None) -> None:
        self._calibration = value

    @property
    def validation(self) -> dict[str, np.ndarray] | None:
        """Validation arrays from the manifest's `.npz` (None when the manifest names none)."""
        if self._validation is None:
            self._validation = self._load_data("validation")
        return self._validation

    @validation.setter
    def validation(self, value: dict[str, np.ndarray] | None) -> None:
        self._validation = value

    def sample_inputs(self, n: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
        """A few inputs for equivalence checks: the first validation samples, else synthetic ones."""
        data = None
        try:
            data = self.validation
        except Exception:
            data = None
        if data:
            return {k: np.ascontiguousarray(v[:n]) for k, v in data.items()}
        from edgeship.pipelines.data import synthetic_inputs

        return synthetic_inputs(self.inputs, n, seed=seed)

    # --- cache snapshot -------------------------------------------------------------------------
    def load_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Put the cached fields back as `snapshot()` saw them."""
        for name in CACHED_FIELDS:
            value = json.loads(json.dumps(snapshot.get(name)))
            if name in PATH_FIELDS:
                value = Path(value) if value else None
            elif name == "files":
                value = {k: Path(v) for k, v in (value or {}).items()}
            setattr(self, name, value)

    def snapshot(self) -> dict[str, Any]:
        """The cached fields as they are now (copied, so a later stage's edits do not leak back)."""
        return json.loads(json.dumps({f: getattr(self, f) for f in CACHED_FIELDS}, default=str))


__all__ = ["BuildContext", "CACHED_FIELDS", "PATH_FIELDS"]
