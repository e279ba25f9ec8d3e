"""The Rollout manifest as a typed, validated spec.

Manifests are parsed by `edgeship.pipelines.manifest.load_documents` (schema, line numbers, unknown
keys); this module adds the rollout's own semantics (canary, cumulative waves, gate figures) and
turns the plain dict into frozen dataclasses the engine can trust.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeship.errors import Diagnostic, ManifestError
from edgeship.pipelines.manifest import load_documents

ON_FAILURE = ("rollback", "pause")
DEFAULT_MAX_SMOKE_P95_RATIO = 1.5  # the schema's default: smoke p95 may reach 1.5x the budget p95


@dataclass(frozen=True)
class Canary:
    count: int | None = None
    percent: float | None = None


@dataclass(frozen=True)
class Gate:
    min_success_ratio: float = 1.0
    max_smoke_p95_ratio: float | None = None  # measured smoke p95 / budget p95, worst device
    soak_s: float = 0.0


@dataclass(frozen=True)
class Strategy:
    canary: Canary | None = None
    waves: tuple[float, ...] = (100.0,)
    max_unavailable: int | str = 1
    gate: Gate = field(default_factory=Gate)
    on_failure: str = "rollback"


@dataclass(frozen=True)
class ArtifactRef:
    """Exactly one of: a built artifact (folder or .tar), a digest in the artifact store, a Pipeline to build."""

    path: Path | None = None
    digest: str | None = None
    pipeline: Path | None = None


@dataclass(frozen=True)
class RolloutSpec:
    name: str
    source: Path
    fleet_path: Path
    artifact: ArtifactRef
    selector: dict
    strategy: Strategy
    data: dict  # the document as written, for the spec digest and reports
    warnings: tuple[str, ...] = ()  # the manifest loader's warnings (e.g. a selector matching nothing)

    @property
    def spec_digest(self) -> str:
        """Digest of what the user declared: a changed manifest starts a new run, an unchanged one resumes."""
        canon = json.dumps(self.data, sort_keys=True, separators=(",", ":"), default=str)
        return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


def load_rollouts(path: Path) -> list[RolloutSpec]:
    """Every Rollout document in a manifest file, validated. Raises ManifestError with all problems."""
    path = Path(path)
    specs, diags = [], []
    for doc in load_documents(path, kinds={"Rollout"}):
        spec, problems = _to_spec(doc)
        diags += problems
        if spec is not None:
            specs.append(spec)
    if diags:
        raise ManifestError(diags)
    return specs


def load_rollout(path: Path, name: str | None = None) -> RolloutSpec:
    """The one Rollout in a file (or the one called `name`)."""
    specs = load_rollouts(path)
    if name is not None:
        specs = [s for s in specs if s.name == name]
    if len(specs) != 1:
        what = f"a Rollout named {name!r}" if name else "exactly one Rollout document"
        raise ManifestError([Diagnostic(str(path), 1, 1, "", f"expected {what}, found {len(specs)}")])
    return specs[0]


# --- loading -----------------------------------------------------------------------------------

def _to_spec(doc) -> tuple[RolloutSpec | None, list[Diagnostic]]:
    data = doc.data
    diags: list[Diagnostic] = []

    def bad(field_path: tuple, message: str, hint: str = "") -> None:
        line, col = doc.where(field_path)
        diags.append(Diagnostic(doc.display or str(doc.source), line, col, ".".join(str(p) for p in field_path), message, hint))

    name = (data.get("metadata") or {}).get("name") or doc.name
    fleet = data.get("fleet")
    if not isinstance(fleet, str) or not fleet:
        bad(("fleet",), "a Fleet manifest path is required")
    art = data.get("artifact") or {}
    given = [k for k in ("path", "digest", "pipeline") if art.get(k)]
    if len(given) != 1:
        bad(("artifact",), f"give exactly one of path, digest, pipeline (got {', '.join(given) or 'none'})")
    digest = art.get("digest")
    if digest and not (isinstance(digest, str) and digest.startswith("sha256:") and len(digest) == 71):
        bad(("artifact", "digest"), "not a digest", "expected sha256: followed by 64 hex characters")
    strategy = _strategy(data.get("strategy") or {}, bad)
    if diags:
        return None, diags
    base = Path(doc.base_dir)
    ref = ArtifactRef(
        path=(base / art["path"]) if art.get("path") else None,
        digest=digest,
        pipeline=(base / art["pipeline"]) if art.get("pipeline") else None,
    )
    warnings = tuple(str(w) for w in doc.warnings)
    return RolloutSpec(name, Path(doc.source), base / fleet, ref, data.get("selector") or {}, strategy, data, warnings), []


def _strategy(raw: dict, bad) -> Strategy:
    canary = None
    c = raw.get("canary", {"count": 1})  # the schema's default: one canary device
    if c is not None and c != {"count": 0}:
        if not isinstance(c, dict) or len([k for k in ("count", "percent") if c.get(k) is not None]) != 1:
            bad(("strategy", "canary"), "give exactly one of count or percent")
        elif c.get("count") is not None and (not isinstance(c["count"], int) or c["count"] < 1):
            bad(("strategy", "canary", "count"), "must be a whole number >= 1")
        elif c.get("percent") is not None and not (isinstance(c["percent"], (int, float)) and 0 < c["percent"] <= 100):
            bad(("strategy", "canary", "percent"), "must be in (0, 100]")
        else:
            canary = Canary(count=c.get("count"), percent=c.get("percent"))
    waves = raw.get("waves", [100])
    if not isinstance(waves, list) or not waves or not all(isinstance(w, (int, float)) and 0 < w <= 100 for w in waves):
        bad(("strategy", "waves"), "must be a list of cumulative percents in (0, 100]", "e.g. [10, 50, 100]")
        waves = [100]
    elif any(b <= a for a, b in zip(waves, waves[1:])):
        bad(("strategy", "waves"), "percents must increase (they are cumulative)", "e.g. [10, 50, 100]")
    elif waves[-1] != 100:
        bad(("strategy", "waves"), f"the last wave must be 100 (got {waves[-1]})", "waves are cumulative percents of the selected devices")
    max_unavailable = raw.get("max_unavailable", 1)
    try:
        parse_max_unavailable(max_unavailable)
    except ValueError as err:
        bad(("strategy", "max_unavailable"), str(err), 'an integer >= 1 or a percent such as "10%"')
    g = raw.get("gate") or {}
    ratio = g.get("min_success_ratio", 1.0)
    if not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        bad(("strategy", "gate", "min_success_ratio"), "must be between 0 and 1")
    p95 = g.get("max_smoke_p95_ratio", DEFAULT_MAX_SMOKE_P95_RATIO)
    if p95 is not None and (not isinstance(p95, (int, float)) or p95 <= 0):
        bad(("strategy", "gate", "max_smoke_p95_ratio"), "must be a positive number")
    soak = g.get("soak_s", 0)
    if not isinstance(soak, (int, float)) or soak < 0:
        bad(("strategy", "gate", "soak_s"), "must be >= 0 seconds")
    on_failure = raw.get("on_failure", "rollback")
    if on_failure not in ON_FAILURE:
        bad(("strategy", "on_failure"), f"unknown value {on_failure!r}", "rollback | pause")
    return Strategy(
        canary=canary,
        waves=tuple(float(w) for w in waves),
        max_unavailable=max_unavailable,
        gate=Gate(float(ratio) if isinstance(ratio, (int, float)) else 1.0,
                  float(p95) if isinstance(p95, (int, float)) else None,
                  float(soak) if isinstance(soak, (int, float)) else 0.0),
        on_failure=on_failure,
    )


def parse_max_unavailable(value) -> tuple[str, float]:
    """`3` -> ("count", 3); `"10%"` -> ("percent", 10). Raises ValueError with the reason."""
    if isinstance(value, bool):
        raise ValueError("must be an integer or a percent")
    if isinstance(value, int):
        if value < 1:
            raise ValueError("must be >= 1")
        return ("count", float(value))
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = float(value[:-1])
        except ValueError:
            raise ValueError(f"not a percent: {value!r}") from None
        if not 0 < pct <= 100:
            raise ValueError("percent must be in (0, 100]")
        return ("percent", pct)
    raise ValueError(f"not an integer or a percent: {value!r}")
