"""Releases by name: a digest is exact but says nothing to a person, so each known artifact is named
by its pipeline and a version: the n-th build of that pipeline, in creation order, among the
artifacts this manager knows (the artifact store and the bundles rollouts shipped).

    kws-host v3 (sha256:3f2a9c1b7e04)

A digest no known artifact has (a device updated by another manager) keeps its short digest only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from edgeship import artifact
from edgeship.errors import ArtifactError


@dataclass(frozen=True)
class Release:
    digest: str
    pipeline: str | None = None
    version: int | None = None  # 1 = the first build of this pipeline known here
    created: str | None = None

    @property
    def name(self) -> str:
        """`pipeline vN`, or the short digest of an artifact this manager never saw."""
        if self.pipeline is None:
            return artifact.short(self.digest)
        return f"{self.pipeline} v{self.version}"

    def label(self) -> str:
        """What tables show: the name beside the short digest."""
        if self.pipeline is None:
            return artifact.short(self.digest)
        return f"{self.name} ({artifact.short(self.digest)})"

    def to_dict(self) -> dict:
        return {"digest": self.digest, "name": self.name, "pipeline": self.pipeline, "version": self.version,
                "created": self.created}


class Catalog:
    """Digest -> Release over the artifact store and any extra bundles (rollouts' shipped tars)."""

    def __init__(self, extra_bundles: Iterable[str | Path] = ()):
        found: dict[str, tuple[str, str, int]] = {}  # digest -> (pipeline, created, mtime in ns)
        for path in [*_store_entries(), *(Path(p) for p in extra_bundles if p)]:
            meta = _read_meta(path)
            if meta is not None and meta[0] not in found:
                found[meta[0]] = meta[1:]
        by_pipeline: dict[str, list[tuple[str, int, str]]] = {}
        for digest, (pipeline, created, mtime) in found.items():
            by_pipeline.setdefault(pipeline, []).append((created, mtime, digest))
        self._releases: dict[str, Release] = {}
        for pipeline, builds in by_pipeline.items():
            # `created` has one-second steps (and SOURCE_DATE_EPOCH may pin it): the store's file time orders ties
            for version, (created, _, digest) in enumerate(sorted(builds), 1):
                self._releases[digest] = Release(digest, pipeline, version, created or None)

    def get(self, digest: str) -> Release:
        return self._releases.get(digest) or Release(digest)

    def label(self, digest: str | None) -> str:
        return self.get(digest).label() if digest else "-"

    def counts(self, currents: Iterable[str | None]) -> list[tuple[Release | None, int]]:
        """How many devices run each release (None: devices running nothing), most devices first."""
        tally = Counter(currents)
        return [(self.get(d) if d else None, n) for d, n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))]


def counts_to_dicts(counts: list[tuple[Release | None, int]]) -> list[dict]:
    return [{**(r.to_dict() if r else {"digest": None, "name": None, "pipeline": None, "version": None, "created": None}),
             "devices": n} for r, n in counts]


def format_counts(counts: list[tuple[Release | None, int]]) -> str:
    """One line: `kws v2 (sha256:ab..) 3 devices, kws v1 (sha256:cd..) 1 device`."""
    parts = [f"{r.label() if r else 'nothing'}: {n} device{'s' if n != 1 else ''}" for r, n in counts]
    return ", ".join(parts) or "no devices"


def _store_entries() -> list[Path]:
    from edgeship.fleet.rollout.artifacts import store_dir

    root = store_dir()
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p.suffix == ".tar" or p.is_dir()))


def _read_meta(path: Path) -> tuple[str, str, str, int] | None:
    """(digest, pipeline name, created, file mtime in ns) of an artifact folder or tar; None when unreadable."""
    try:
        if path.is_dir():
            import json

            meta = json.loads((path / "bundle.json").read_text())
            digest = artifact.bundle_digest(path)
        elif path.is_file():
            meta = artifact.read_json_member(path, "bundle.json")
            digest = artifact.bundle_digest(path)
        else:
            return None
    except (ArtifactError, OSError, ValueError):
        return None
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        return None
    return digest, name, str(meta.get("created") or ""), path.stat().st_mtime_ns
