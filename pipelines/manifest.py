"""Manifests: read YAML files into validated `Document`s, or into every diagnostic at once.

Four kinds (Pipeline, Target, Fleet, Rollout), one envelope (`apiVersion: edgeship/v1`, `kind`,
`metadata.name`), one JSON Schema per kind shipped in `edgeship.pipelines/schemas`. Loading runs
three layers and keeps going after a failure so the user sees every problem in one pass:
  1. yaml_source: bounded, safe parsing that remembers the line/col of every field;
  2. schema_check: the kind's JSON Schema, in human words with "did you mean" hints;
  3. semantic: what a schema cannot say (files exist, targets exist, ids unique, secrets by ${ENV}).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edgeship.errors import Diagnostic, ManifestError, UsageError
from edgeship.pipelines.schema_check import KIND_SCHEMA_FILES, Problem, SchemaUnavailable, did_you_mean, load_schema, schema_problems
from edgeship.pipelines.yaml_source import SourceError, YamlDocument, load_yaml_file

API_VERSION = "edgeship/v1"
KINDS = tuple(KIND_SCHEMA_FILES)

__all__ = [
    "API_VERSION", "KINDS", "Document", "load_documents", "check_file", "validate_files",
    "resolve_path", "expand_env", "load_schema", "format_path", "ENV_REFERENCE", "duplicate_pipeline_names",
]

ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def format_path(path: Iterable) -> str:
    """('devices', 2, 'id') -> 'devices[2].id'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class Document:
    """One manifest document: plain data plus where it came from, so later errors can point back."""

    kind: str
    name: str
    data: Any
    source: Path  # absolute path of the file
    base_dir: Path  # the file's folder: relative paths in the document resolve against it
    index: int  # position of the document in its file (0-based, empty documents not counted)
    display: str = ""  # the file name as the user wrote it, for messages
    yaml: YamlDocument | None = field(default=None, repr=False)
    warnings: list[Diagnostic] = field(default_factory=list, repr=False)

    def where(self, path: Iterable = (), *, key: bool = False) -> tuple[int, int]:
        """(line, col) of a field (or its nearest written ancestor), 1-based."""
        if self.yaml is None:
            return (1, 1)
        return self.yaml.where(tuple(path), key=key)

    def diagnostic(self, path: Iterable, message: str, hint: str = "", severity: str = "error",
                   *, key: bool = False) -> Diagnostic:
        """A Diagnostic located at `path` in this document (for errors found after loading)."""
        path = tuple(path)
        line, col = self.where(path, key=key)
        return Diagnostic(self.display or str(self.source), line, col, format_path(path), message, hint, severity)

    def error(self, path: Iterable, message: str, hint: str = "") -> ManifestError:
        """A ManifestError for one located problem, ready to raise."""
        return ManifestError([self.diagnostic(path, message, hint)])

    def get(self, *path, default=None):
        """Nested lookup that tolerates absent parts: doc.get('budget', 'latency_ms', 'p95')."""
        node = self.data
        for part in path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
                node = node[part]
            else:
                return default
        return node

    @property
    def spec(self) -> dict:
        """The kind's own fields: the document without apiVersion/kind/metadata."""
        if not isinstance(self.data, dict):
            return {}
        return {k: v for k, v in self.data.items() if k not in ("apiVersion", "kind", "metadata")}

    @property
    def labels(self) -> dict:
        return dict(self.get("metadata", "labels", default={}) or {})


def resolve_path(doc: Document, relative: str | os.PathLike) -> Path:
    """A path written in a manifest: `~` expanded, relative ones against the manifest's own folder."""
    path = Path(os.path.expanduser(os.fspath(relative)))
    return path if path.is_absolute() else (doc.base_dir / path)


def expand_env(value: str) -> str:
    """Resolve a `${NAME}` secret reference from the environment; other values pass through.

    Only secret fields may hold references (the validator enforces it), so this is called at the
    moment a secret is needed, never at load time: secrets do not sit in parsed manifests or logs.
    """
    if not isinstance(value, str):
        return value
    match = ENV_REFERENCE.match(value.strip())
    if not match:
        return value
    name = match.group(1)
    if name not in os.environ:
        raise UsageError(f"environment variable {name} is not set (referenced as ${{{name}}} in a manifest)")
    return os.environ[name]


def _envelope_problems(data: Any) -> tuple[str | None, list[Problem]]:
    """Checks every kind shares; returns the kind when it is known (so its schema can run)."""
    if not isinstance(data, dict):
        from edgeship.pipelines.schema_check import type_name

        return None, [Problem((), f"a manifest document must be a mapping, got {type_name(data)}",
                              "start with apiVersion: edgeship/v1, kind: ..., metadata: {name: ...}")]
    problems: list[Problem] = []
    api = data.get("apiVersion")
    if "apiVersion" not in data:
        problems.append(Problem(("apiVersion",), "missing required field 'apiVersion'", f"add apiVersion: {API_VERSION}"))
    elif api != API_VERSION:
        problems.append(Problem(("apiVersion",), f"unsupported apiVersion {api!r}", f"use apiVersion: {API_VERSION}"))
    kind = data.get("kind")
    if "kind" not in data:
        problems.append(Problem(("kind",), "missing required field 'kind'", f"one of: {', '.join(KINDS)}"))
        return None, problems
    if not isinstance(kind, str) or kind not in KINDS:
        close = did_you_mean(str(kind), KINDS)
        problems.append(Problem(("kind",), f"unknown kind {kind!r}", close))
        return None, problems
    return kind, problems


def _to_diagnostic(doc: Document, problem: Problem) -> Diagnostic:
    if problem.at is not None:
        return Diagnostic(doc.display, problem.at[0], problem.at[1], format_path(problem.path),
                          problem.message, problem.hint, problem.severity)
    return doc.diagnostic(problem.path, problem.message, problem.hint, problem.severity, key=problem.at_key)


def _document(ydoc: YamlDocument, source: Path, display: str) -> Document:
    data = ydoc.data
    kind = data.get("kind") if isinstance(data, dict) else None
    meta = data.get("metadata") if isinstance(data, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return Document(
        kind=kind if isinstance(kind, str) else "",
        name=name if isinstance(name, str) else "",
        data=data, source=source, base_dir=source.parent, index=ydoc.index, display=display, yaml=ydoc,
    )


def check_file(path: str | os.PathLike, kinds: Iterable[str] | None = None, *,
               cross_refs: bool = True) -> tuple[list[Document], list[Diagnostic]]:
    """Load one file and check it fully. Never raises for bad input: returns (documents, diagnostics).

    `cross_refs=False` skips checks that open other manifests (used when one manifest loads another).
    """
    from edgeship.pipelines import semantic

    display = os.fspath(path)
    source = Path(os.path.abspath(display))
    try:
        ydocs = load_yaml_file(source)
    except SourceError as err:
        return [], [Diagnostic(display, err.line or 1, err.col or 1, "", err.message, err.hint)]

    documents: list[Document] = []
    diagnostics: list[Diagnostic] = []
    local_targets = {_document(y, source, display).name for y in ydocs
                     if isinstance(y.data, dict) and y.data.get("kind") == "Target"} - {""}
    for ydoc in ydocs:
        doc = _document(ydoc, source, display)
        problems: list[Problem] = [Problem(i.path, i.message, i.hint, at=(i.line, i.col)) for i in ydoc.issues]
        kind, envelope = _envelope_problems(ydoc.data)
        problems += envelope
        if kind:
            try:
                problems += [p for p in schema_problems(kind, ydoc.data)
                             if not (p.path[:1] in (("apiVersion",), ("kind",)))]
            except SchemaUnavailable as err:
                problems.append(Problem(("kind",), str(err), "reinstall edgeship", severity="warning"))
            try:
                problems += semantic.check(doc, cross_refs=cross_refs, local_targets=local_targets)
            except Exception as err:  # a bug in a check must not hide the other files' diagnostics
                if os.environ.get("EDGESHIP_DEBUG"):
                    raise
                problems.append(Problem((), f"internal error while checking: {type(err).__name__}: {err}",
                                        "a bug in edgeship; set EDGESHIP_DEBUG=1 for a traceback"))
        doc_diagnostics = [_to_diagnostic(doc, p) for p in problems]
        doc.warnings = [d for d in doc_diagnostics if d.severity == "warning"]
        diagnostics += doc_diagnostics
        documents.append(doc)

    if kinds is not None:
        wanted = (kinds,) if isinstance(kinds, str) else tuple(sorted(kinds))
        selected = [d for d in documents if d.kind in wanted]
        if not selected and not any(d.severity == "error" for d in diagnostics):
            found = ", ".join(sorted({d.kind for d in documents if d.kind})) or "nothing"
            diagnostics.append(Diagnostic(display, 1, 1, "kind", f"no {' or '.join(wanted)} document in this file (found: {found})",
                                          f"this needs a manifest of kind {' or '.join(wanted)}"))
        documents = selected
    diagnostics.sort(key=lambda d: (d.line, d.col))
    return documents, diagnostics


def duplicate_pipeline_names(documents: Iterable[Document]) -> list[Diagnostic]:
    """One error per Pipeline whose name an earlier one (in any file, any document) already has:
    their builds would overwrite each other's output folder, stored record and artifact name."""
    first: dict[str, Document] = {}
    out = []
    for doc in documents:
        if doc.kind != "Pipeline" or not doc.name:
            continue
        if doc.name not in first:
            first[doc.name] = doc
            continue
        other = first[doc.name]
        line, _ = other.where(("metadata", "name"))
        out.append(doc.diagnostic(("metadata", "name"), f"duplicate Pipeline name '{doc.name}'",
                                  f"also the name of the Pipeline at {other.display}:{line}; builds would overwrite "
                                  "each other's output: rename one"))
    return out


def load_documents(path: str | os.PathLike, kinds: Iterable[str] | None = None) -> list[Document]:
    """Parse, schema-check and semantically check a manifest file.

    Returns its documents (only those of `kinds` when given). Raises ManifestError holding every
    error diagnostic; warnings ride along on each Document's `.warnings`.
    """
    documents, diagnostics = check_file(path, kinds)
    diagnostics += duplicate_pipeline_names(documents)
    if any(d.severity == "error" for d in diagnostics):
        raise ManifestError(diagnostics)
    return documents


def validate_files(paths: Iterable[str | os.PathLike]) -> list[Diagnostic]:
    """Every diagnostic (errors and warnings) of every file, in file order then line order."""
    out: list[Diagnostic] = []
    for path in paths:
        out += check_file(path)[1]
    return out
