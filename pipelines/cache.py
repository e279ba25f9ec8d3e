"""The content-addressed stage cache: stage key -> the stage's outputs.

An entry lives in `state_dir()/cache/<key[:2]>/<key>/`: `entry.json` (the stage, the context fields
the stage changed, its report section) and the files it wrote (model files, extra files). Entries are
written to a temp folder and renamed into place, so parallel builds (`-j N`) never see half an entry;
when two builds store the same key the first one wins (same key, same content).

A hit bumps `entry.json`'s mtime: `prune --older-than` removes what was not used recently.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeship.paths import state_dir

ENTRY = "entry.json"
FORMAT = 1


def cache_root() -> Path:
    root = state_dir() / "cache"
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class CacheEntry:
    key: str
    stage: str
    path: Path
    fields: dict[str, Any]  # changed context fields; Path fields hold a file name inside `path`
    section: Any  # the stage's report section (None when it wrote none)
    file_fields: list[str]  # which entries of `fields` (dotted: "model_path", "files.profile") are files here
    created: float
    size: int = 0

    def file(self, name: str) -> Path:
        return self.path / name


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _companions(path: Path) -> list[Path]:
    """A model file and its external-data file (`<name>.data`, the convention our stages write)."""
    extra = path.with_name(path.name + ".data")
    return [path] + ([extra] if extra.is_file() else [])


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


class StageCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_root()
        self.root.mkdir(parents=True, exist_ok=True)

    def _entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str) -> CacheEntry | None:
        """The entry for `key`, or None (also when it is incomplete: a file it names is gone)."""
        folder = self._entry_dir(key)
        try:
            doc = json.loads((folder / ENTRY).read_text())
        except (OSError, ValueError):
            return None
        if doc.get("format") != FORMAT or doc.get("key") != key:
            return None
        entry = CacheEntry(key, doc["stage"], folder, doc["fields"], doc.get("section"), doc.get("file_fields", []), doc.get("created", 0.0))
        for dotted in entry.file_fields:
            if not (folder / _field_value(entry.fields, dotted)).is_file():
                return None
        try:
            os.utime(folder / ENTRY)
        except OSError:
            pass
        return entry

    def store(self, key: str, stage: str, fields: dict[str, Any], section: Any, workdir: Path) -> CacheEntry:
        """Store a stage's changed fields. Path values inside `workdir` are copied into the entry and
        replaced by their file name; paths elsewhere (e.g. the source model) are kept as they are."""
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            stored: dict[str, Any] = json.loads(json.dumps(fields, default=str))
            file_fields: list[str] = []
            for dotted, value in _path_values(stored):
                src = Path(value)
                if not _inside(src, workdir) or not src.is_file():
                    continue
                for part in _companions(src):
                    if not (tmp / part.name).exists():
                        _link_or_copy(part, tmp / part.name)
                _set_field_value(stored, dotted, src.name)
                file_fields.append(dotted)
            doc = {"format": FORMAT, "key": key, "stage": stage, "created": time.time(), "fields": stored,
                   "section": section, "file_fields": file_fields}
            (tmp / ENTRY).write_text(json.dumps(doc, indent=1, default=str))
            final = self._entry_dir(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:  # an entry exists: keep it if complete (same key, same content), else replace it
                if self.lookup(key) is None:
                    trash = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
                    try:
                        os.rename(final, trash / "old")
                        os.rename(tmp, final)
                    except OSError:
                        pass
                    shutil.rmtree(trash, ignore_errors=True)
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        entry = self.lookup(key)
        if entry is None:
            raise OSError(f"cache entry {key[:12]} could not be stored in {self.root}")
        return entry

    def discard(self, key: str) -> None:
        """Remove one entry (moved aside first, so a reader never sees it half deleted)."""
        folder = self._entry_dir(key)
        if not folder.exists():
            return
        trash = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            os.rename(folder, trash / "old")
        except OSError:
            pass
        shutil.rmtree(trash, ignore_errors=True)

    def restore(self, entry: CacheEntry, ctx: Any) -> None:
        """Apply an entry to a BuildContext: set path fields to the entry's files, merge dict fields."""
        fields = json.loads(json.dumps(entry.fields))
        for dotted in entry.file_fields:
            _set_field_value(fields, dotted, str(entry.file(_field_value(fields, dotted))))
        for name, value in fields.items():
            if name in ("model_path", "float_model_path"):
                setattr(ctx, name, Path(value) if value else None)
            elif name == "files":
                ctx.files.update({k: Path(v) for k, v in value.items()})
            elif isinstance(getattr(ctx, name, None), dict) and isinstance(value, dict):
                getattr(ctx, name).update(value)
            elif isinstance(getattr(ctx, name, None), list) and isinstance(value, list):
                getattr(ctx, name).extend(v for v in value if v not in getattr(ctx, name))
            else:
                setattr(ctx, name, value)
        if entry.section is not None:
            ctx.report[entry.stage] = entry.section

    # --- housekeeping ---------------------------------------------------------------------------
    def entries(self) -> list[CacheEntry]:
        out = []
        for folder in sorted(self.root.glob("??/*")):
            try:
                doc = json.loads((folder / ENTRY).read_text())
                used = (folder / ENTRY).stat().st_mtime
            except (OSError, ValueError):
                continue
            entry = CacheEntry(doc.get("key", folder.name), doc.get("stage", "?"), folder, doc.get("fields", {}),
                               None, doc.get("file_fields", []), used, _dir_size(folder))
            out.append(entry)
        out.sort(key=lambda e: e.created, reverse=True)
        return out

    def prune(self, older_than_s: float | None = None, max_bytes: int | None = None) -> tuple[int, int]:
        """Remove entries unused for `older_than_s`, then the least recently used ones until the cache
        fits in `max_bytes`. Neither given: remove everything. Returns (entries removed, bytes freed)."""
        entries = self.entries()  # most recently used first
        doomed: list[CacheEntry] = []
        if older_than_s is None and max_bytes is None:
            doomed = entries
        else:
            now = time.time()
            keep = []
            for e in entries:
                (doomed if older_than_s is not None and now - e.created > older_than_s else keep).append(e)
            if max_bytes is not None:
                total = 0
                for e in keep:
                    total += e.size
                    if total > max_bytes:
                        doomed.append(e)
        freed = 0
        for e in doomed:
            freed += e.size
            shutil.rmtree(e.path, ignore_errors=True)
        for tmp in self.root.glob(".tmp-*"):  # leftovers of interrupted builds
            if time.time() - tmp.stat().st_mtime > 3600:
                shutil.rmtree(tmp, ignore_errors=True)
        return len(doomed), freed


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def _path_values(fields: dict[str, Any]):
    for name in ("model_path", "float_model_path"):
        if fields.get(name):
            yield name, fields[name]
    for k, v in (fields.get("files") or {}).items():
        yield f"files.{k}", v


def _field_value(fields: dict[str, Any], dotted: str) -> Any:
    head, _, rest = dotted.partition(".")
    return fields[head][rest] if rest else fields[head]


def _set_field_value(fields: dict[str, Any], dotted: str, value: Any) -> None:
    head, _, rest = dotted.partition(".")
    if rest:
        fields[head][rest] = value
    else:
        fields[head] = value


__all__ = ["StageCache", "CacheEntry", "cache_root"]
