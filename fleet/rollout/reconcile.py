"""GitOps: keep the fleet converged to the Rollout manifests in a folder or a git branch.

Each pass re-reads the manifests, applies each Rollout (the engine does nothing for a converged one
and re-converges drifted devices), and logs one line. A rollout that stopped (failed gate, paused,
aborted, rolled back) is not retried on every pass while its manifest is unchanged: a human changes
the manifest or resumes it; such a rollout counts as not converged (a `--once` pass exits non-zero,
so CI goes red) until its devices run what the manifest wants. Rollouts deleted from the source are
left alone (like Argo CD, no prune).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgeship.errors import EdgeshipError, ManifestError, RolloutError
from edgeship.fleet.rollout.journal import Journal, journal_for
from edgeship.fleet.rollout.spec import load_rollouts
from edgeship.fleet.state.lease import LeaseHeld
from edgeship.paths import state_dir
from edgeship.pipelines.containment import allowing

_ROLLOUT_KIND = re.compile(r"^kind:\s*['\"]?Rollout['\"]?\s*(#.*)?$", re.MULTILINE)
STOPPED = ("failed", "paused", "aborted", "rolled-back")


class DirSource:
    """A folder of manifests; its revision is a digest of the manifest files' names and bytes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def checkout(self) -> tuple[Path, str]:
        if not self.path.is_dir():
            raise RolloutError(f"{self.path}: not a folder of manifests")
        h = hashlib.sha256()
        for f in manifest_files(self.path):
            h.update(str(f.relative_to(self.path)).encode() + b"\0" + f.read_bytes() + b"\0")
        return self.path, h.hexdigest()[:12]


class GitSource:
    """A branch of a git repository (a path or URL), mirrored into the state dir and fetched every pass."""

    def __init__(self, repo: str, branch: str, subpath: str = "."):
        self.repo, self.branch, self.subpath = repo, branch, subpath
        key = hashlib.sha256(f"{repo}\0{branch}".encode()).hexdigest()[:16]
        self.workdir = state_dir() / "reconcile" / key

    def checkout(self) -> tuple[Path, str]:
        repo = str(Path(self.repo).resolve()) if Path(self.repo).exists() else self.repo
        if not (self.workdir / ".git").exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._git("init", "-q")
        self._git("fetch", "-q", "--depth", "1", repo, f"refs/heads/{self.branch}")
        self._git("checkout", "-q", "--force", "--detach", "FETCH_HEAD")
        revision = self._git("rev-parse", "--short=12", "HEAD").strip()
        folder = (self.workdir / self.subpath).resolve()
        if not folder.is_relative_to(self.workdir.resolve()) or not folder.is_dir():
            raise RolloutError(f"{self.repo}@{self.branch}: no folder {self.subpath!r} in the repository")
        return folder, revision

    def _git(self, *args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(self.workdir), *args], capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RolloutError(f"git {args[0]}: {err}") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise RolloutError(f"git {args[0]} {self.repo} {self.branch}: {last}")
        return done.stdout


def manifest_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                  and ".git" not in p.relative_to(folder).parts)


@dataclass
class PassReport:
    number: int
    revision: str = ""
    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # stopped and not retried: not converged
    elsewhere: list[str] = field(default_factory=list)  # driven by another manager now (leased): its business
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every rollout of the source is converged: nothing failed, nothing left stopped."""
        return not self.failed and not self.errors and not self.skipped


class Reconciler:
    def __init__(self, source, engine_for: Callable, report: Callable | None = None,
                 log: Callable[[str], None] | None = None, journal_path: Path | None = None):
        self.source, self.engine_for, self.report = source, engine_for, report
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.journal_path = journal_path
        self.passes = 0

    def run_pass(self) -> PassReport:
        self.passes += 1
        result = PassReport(self.passes)
        started = time.monotonic()
        try:
            folder, result.revision = self.source.checkout()
        except EdgeshipError as err:
            result.errors.append(str(err))
            self._log_pass(result, started)
            return result
        claimed: dict[tuple[str, str], tuple[str, str]] = {}  # (fleet, device) -> (rollout, digest)
        # manifests may read models and data anywhere in the checkout, not outside it
        with allowing([str(folder)]):
            specs = self._specs(folder, result)
            try:
                journal = Journal(self.journal_path) if self.journal_path else \
                    journal_for(*(spec.fleet_path for spec in specs))
            except EdgeshipError as err:  # the state store of these fleets: unreachable, or not one store
                result.errors.append(str(err))
                self._log_pass(result, started)
                return result
            with journal:
                for spec in specs:
                    self._one(spec, journal, result, claimed)
        self._log_pass(result, started)
        return result

    def _specs(self, folder: Path, result: PassReport) -> list:
        """Every Rollout of the checkout (manifest errors go to the pass report)."""
        found = []
        for path in manifest_files(folder):
            try:
                if not _ROLLOUT_KIND.search(path.read_text(errors="replace")):
                    continue
                specs = load_rollouts(path)
            except ManifestError as err:
                result.errors += [str(d) for d in err.diagnostics]
                continue
            except OSError as err:
                result.errors.append(f"{path}: {err}")
                continue
            for spec in specs:
                for warning in spec.warnings:
                    self.log(f"reconcile: {warning}")
            found += specs
        return found

    def _one(self, spec, journal: Journal, result: PassReport, claimed: dict) -> None:
        try:
            engine = self.engine_for(spec, journal, self.log)
            clash = self._conflict(spec.name, engine, claimed)
            if clash:
                result.errors.append(clash)
                return
            row = journal.rollout(spec.name)
            if (row is not None and row.state in STOPPED and row.spec_digest == spec.spec_digest
                    and row.artifact_digest == engine.ship.digest):
                if engine.converged_now():  # fixed by other means since: say so, and count it converged
                    result.unchanged.append(spec.name)
                    self.log(f"reconcile: {spec.name}: was {row.state}; its devices now run the artifact")
                    return
                result.skipped.append(spec.name)
                self.log(f"reconcile: {spec.name}: {row.state} ({row.reason}); unchanged manifest, not retried; "
                         "not converged")
                return
            report = engine.apply()
        except LeaseHeld as err:  # another replica drives it this pass; it is taken over if that one dies
            result.elsewhere.append(spec.name)
            self.log(f"reconcile: {err}")
            return
        except (EdgeshipError, OSError) as err:
            result.failed.append(spec.name)
            self.log(f"reconcile: {spec.name}: error: {err}")
            return
        if self.report is not None and report.state != "unchanged":
            self.report(report, journal)
        bucket = result.unchanged if report.state == "unchanged" else result.applied if report.ok else result.failed
        bucket.append(spec.name)

    @staticmethod
    def _conflict(name: str, engine, claimed: dict) -> str:
        """Two rollouts wanting different releases on one device would flip it every pass: the first
        (in file order) keeps it, the second is refused until a human resolves it."""
        digest = engine.ship.digest
        for device in engine.devices:
            owner = claimed.get((engine.fleet.name, device.id))
            if owner and owner[1] != digest:
                return (f"{name}: device {device.id} is also selected by rollout {owner[0]} with a different "
                        f"artifact; not applied (narrow one of the selectors)")
        for device in engine.devices:
            claimed.setdefault((engine.fleet.name, device.id), (name, digest))
        return ""

    def _log_pass(self, r: PassReport, started: float) -> None:
        took = time.monotonic() - started
        line = (f"reconcile pass {r.number} @ {r.revision or '?'}: {len(r.applied)} applied, {len(r.unchanged)} unchanged, "
                f"{len(r.failed)} failed, {len(r.skipped)} stopped (not converged), {len(r.errors)} error(s)"
                + (f", {len(r.elsewhere)} driven by another manager" if r.elsewhere else "") + f" ({took:.1f}s)")
        self.log(line)
        for err in r.errors:
            self.log(f"reconcile: {err}")
