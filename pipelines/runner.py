"""The stage runner: runs a pipeline's stages in order, taking each from the cache when its key is there.

For each stage: compute its key (inputs' digests + config + version), restore the cached outputs on
a hit, else run it and store what it changed. Every listed stage must load before the first one runs:
a built-in stage that cannot be imported fails the build (fail closed, never a silently skipped
budget check). One progress line per stage (with its time), a record of each stage (status,
time, key, outputs) in the result and in `state_dir()/builds/<name>.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from edgeship import events
from edgeship.artifact import sha256_file
from edgeship.errors import BuildError, EdgeshipError
from edgeship.paths import state_dir
from edgeship.pipelines.cache import StageCache
from edgeship.pipelines.context import BuildContext
from edgeship.stages import registry


@dataclass
class StageRecord:
    name: str
    status: str  # ran | cached | failed
    seconds: float = 0.0
    key: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass
class BuildResult:
    name: str
    records: list[StageRecord]
    seconds: float
    ctx: BuildContext
    error: EdgeshipError | None = None

    @property
    def artifact(self) -> dict:
        """{"digest", "dir", "tar"} when the package stage ran (or came from the cache)."""
        return dict(self.ctx.extra.get("artifact") or {})

    @property
    def ok(self) -> bool:
        return self.error is None


def stage_list(spec: dict) -> list[str]:
    """The pipeline's stages (its `stages:` or the default order), checked: each loads, import first."""
    names = list(spec.get("stages") or registry.DEFAULT_ORDER)
    for n in names:
        registry.get(n)  # raises for an unknown name (with the nearest ones) or a stage that failed to load
    if not names or names[0] != "import":
        raise BuildError("stages: the list must start with `import` (every later stage needs the model it loads)")
    if len(set(names)) != len(names):
        raise BuildError("stages: a stage is listed twice")
    return names


def _load_target(name: str | None):
    if not name:
        return None
    try:
        from edgeship.targets import load_target  # type: ignore[attr-defined]
    except ImportError:
        return None  # the catalog is not installed: stages see ctx.target None
    return load_target(name)


def _diff(before: dict, after: dict) -> dict[str, Any]:
    """The context fields a stage changed; dict fields reduced to the keys whose values changed."""
    changed: dict[str, Any] = {}
    for name, value in after.items():
        old = before.get(name)
        if value == old:
            continue
        if isinstance(value, dict) and isinstance(old, dict):
            changed[name] = {k: v for k, v in value.items() if old.get(k) != v}
        elif isinstance(value, list) and isinstance(old, list) and value[:len(old)] == old:
            changed[name] = value[len(old):]  # appended items (warnings): restored by extending
        else:
            changed[name] = value
    return changed


class Progress:
    """Where a build's typed events go: to `on_event` (edgeship.api callers, NDJSON output), and as
    progress lines on a stream (stderr by default; a prefix names the pipeline in -j builds)."""

    def __init__(self, stream: TextIO | None = None, prefix: str = "", quiet: bool = False,
                 on_event: events.EventCallback | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        self.quiet = quiet
        self.on_event = on_event
        self.width = 8  # stage names are padded to the longest of the build (set by BuildStarted)

    def line(self, text: str) -> None:
        if not self.quiet:
            print(f"{self.prefix}{text}", file=self.stream, flush=True)

    def emit(self, event: events.Event) -> None:
        if isinstance(event, events.BuildStarted):
            self.width = max((len(n) for n in event.stages), default=8)
        if self.on_event is not None:
            self.on_event(event)
        text = event.line(self.width) if isinstance(event, events.StageFinished) else event.text()
        if text:
            self.line(text)


def _rehash(ctx: BuildContext, before: dict) -> None:
    """After a stage ran: digest the model files it wrote (what the next stage's key is made of)."""
    for field_name, label in (("model_path", "model"), ("float_model_path", "float_model")):
        path = getattr(ctx, field_name)
        if path and (str(path) != str(before.get(field_name)) or label not in ctx.digests):
            ctx.digests[label] = _model_digest(Path(path))


def _model_digest(path: Path) -> str:
    digest = sha256_file(path)
    data = path.with_name(path.name + ".data")
    if data.is_file():
        digest = sha256_file(data)[:32] + digest[:32]
    return digest


def run_stages(ctx: BuildContext, names: list[str], cache: StageCache | None, progress: Progress,
               use_cache: bool = True, records: list[StageRecord] | None = None) -> BuildContext:
    """Run `names` in order on ctx, appending one StageRecord per stage to `records` (also on failure)."""
    records = records if records is not None else []
    total = len(names)
    progress.emit(events.BuildStarted(ctx.name, list(names), ctx.target_name))

    def finished(rec: StageRecord, index: int) -> None:
        progress.emit(events.StageFinished(ctx.name, rec.name, index, total, rec.status, rec.seconds, rec.key, rec.reason))

    for i, name in enumerate(names, 1):
        stage = registry.get(name)()
        progress.emit(events.StageStarted(ctx.name, name, i, total))
        t0 = time.perf_counter()
        try:
            key = stage.key(ctx)
            ctx.stage_keys[name] = key
            before = ctx.snapshot()
            entry = cache.lookup(key) if (cache is not None and use_cache) else None
            if entry is not None:
                cache.restore(entry, ctx)
                if getattr(stage, "cache_ok", lambda c: True)(ctx):
                    rec = StageRecord(name, "cached", time.perf_counter() - t0, key,
                                      outputs={"model": ctx.digests.get("model", "")[:16], "changed": sorted(entry.fields)})
                    records.append(rec)
                    finished(rec, i)
                    continue
                # stale (e.g. its artifact was deleted): undo the restore, run the stage, replace the entry
                ctx.load_snapshot(before)
                ctx.report.pop(name, None)
                cache.discard(key)
            if not use_cache and cache is not None:
                cache.discard(key)  # --no-cache: this run's outputs replace the entry
            ctx = stage.run(ctx) or ctx
            _rehash(ctx, before)
            changed = _diff(before, ctx.snapshot())
            if cache is not None:
                try:
                    stored = cache.store(key, name, changed, ctx.report.get(name), ctx.workdir)
                    # continue from what the cache holds: when a parallel build stored this key first, its
                    # (equivalent) outputs win, so every later key matches what a rebuild will compute
                    cache.restore(stored, ctx)
                except OSError as err:  # a full disk must not fail a build that succeeded
                    ctx.warnings.append(f"{name}: not cached: {err}")
            rec = StageRecord(name, "ran", time.perf_counter() - t0, key,
                              outputs={"model": ctx.digests.get("model", "")[:16], "changed": sorted(changed)})
            records.append(rec)
            finished(rec, i)
        except EdgeshipError as err:
            if isinstance(err, BuildError) and err.stage is None:
                err.stage = name
            records.append(StageRecord(name, "failed", time.perf_counter() - t0, ctx.stage_keys.get(name, ""), reason=str(err)))
            finished(records[-1], i)
            raise
        except Exception as err:
            records.append(StageRecord(name, "failed", time.perf_counter() - t0, reason=f"{type(err).__name__}: {err}"))
            finished(records[-1], i)
            if os.environ.get("EDGESHIP_DEBUG"):
                raise
            raise BuildError(f"{type(err).__name__}: {err} (set EDGESHIP_DEBUG=1 for a traceback)", stage=name) from err
    return ctx


def build(doc: Any, target: str | None = None, progress: Progress | None = None, use_cache: bool = True,
          stages: list[str] | None = None, keep_workdir: bool = False) -> BuildResult:
    """Build one Pipeline document. Raises nothing for stage failures: the error is in the result."""
    progress = progress or Progress()
    spec = dict(doc.data)
    if target:
        spec["target"] = target
    plugin_warnings = registry.load_warnings()  # module imports are start-up cost, not build time
    t0 = time.perf_counter()
    work_root = state_dir() / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{doc.name}-", dir=work_root))
    ctx = BuildContext(pipeline=doc, spec=spec, target=None, workdir=workdir)
    ctx.warnings.extend(plugin_warnings)  # a broken plugin no pipeline lists: said with the build's warnings
    records: list[StageRecord] = []
    error: EdgeshipError | None = None
    try:
        ctx.target = _load_target(spec.get("target"))
        source = Path(getattr(doc, "source", ""))
        if source.is_file():
            ctx.digests["manifest"] = sha256_file(source)
        names = stage_list({"stages": stages} if stages else spec)
        ctx.records = records
        ctx = run_stages(ctx, names, StageCache(), progress, use_cache=use_cache, records=records)
    except EdgeshipError as err:
        error = err
    finally:
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    result = BuildResult(doc.name, records, time.perf_counter() - t0, ctx, error)
    _save_record(result)
    progress.emit(events.BuildFinished(doc.name, result.ok, result.seconds, result.artifact.get("digest"),
                                       str(error) if error else None))
    return result


def clean_stale_workdirs(max_age_s: float = 86400) -> int:
    """Remove work folders left by builds that were killed (a finished build removes its own)."""
    root = state_dir() / "work"
    removed = 0
    for folder in root.glob("*") if root.is_dir() else []:
        try:
            if time.time() - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


def _save_record(result: BuildResult) -> None:
    folder = state_dir() / "builds"
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"name": result.name, "ok": result.ok, "seconds": round(result.seconds, 3),
           "error": str(result.error) if result.error else None, "artifact": result.artifact,
           "stages": [asdict(r) for r in result.records], "finished": time.time()}
    tmp = folder / f".{result.name}.{os.getpid()}.json"
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, folder / f"{result.name}.json")


def summary_table(result: BuildResult) -> str:
    """The table printed after a build: stage, status, seconds, key."""
    rows = [("stage", "status", "time", "key")]
    for r in result.records:
        rows.append((r.name, r.status, f"{r.seconds:.2f} s", r.key[:12] or "-"))
    rows.append(("total", "ok" if result.ok else "failed", f"{result.seconds:.2f} s", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


__all__ = ["build", "run_stages", "stage_list", "summary_table", "BuildResult", "StageRecord", "Progress"]
