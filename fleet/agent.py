"""The device agent: the one piece of code that changes what a device runs.

Every transport ends here (local in-process, SSH via `edgeship agent activate` on the device, MQTT
via the device service), so the guarantees live in one place:

* nothing is trusted before every file's sha256 and the ed25519 signature check out;
* a release is unpacked into a temp dir and renamed into `releases/<hex>/` only when complete;
* it is smoke-tested before anything points at it;
* a release older than one the device has run is refused unless it is an explicit `rollback`
  (release_floor.py);
* the signing keys come from the device's trust document, accepted only when its root signed it
  (device_trust.py); an expired one stops new activations; a release built for another target
  than the device's is refused (target_binding.py);
* `current` is a symlink replaced by `rename(2)`, so at every instant it names the old release or
  the new one, never neither; power loss anywhere leaves a working release;
* any failure leaves the running release untouched and says why (`Result.reason`).

Device root layout:

    agent.yaml           config (trust root or trusted keys, target, keep_releases, smoke, size limits)
    trust.json           the newest trust document accepted (root mode)
    current -> releases/<hex>
    releases/<hex>/      unpacked, verified releases (the newest `keep_releases` are kept)
    incoming/<hex>.tar   bundles pushed but not yet activated (removed once activated)
    incoming/trust-chain.json  a trust chain pushed with a bundle, taken by the next operation
    quarantine/<hex>-<n> kept releases that failed verification: never used again, removed by gc
    tmp/                 unpack area; leftovers from a crash are removed by the next operation
    state.json           previous release, activation history, last result
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path

from edgeship import artifact
from edgeship.errors import AgentError, ArtifactError
from edgeship.fleet import release_floor, target_binding
from edgeship.fleet.agent_config import AgentConfig, config_for_root
from edgeship.fleet.device_trust import INCOMING_FILE, TRUST_REASONS, DeviceTrust
from edgeship.fleet.smoke import smoke_test
from edgeship.fleet.types import Result
from edgeship.paths import tree_bytes as _tree_bytes

_HEX = re.compile(r"^[0-9a-f]{64}$")
MB = 1024 * 1024
# Test hook: kill this process with SIGKILL at a named point, to prove a crash there is harmless.
FAULT_ENV = "EDGESHIP_AGENT_FAULT"


def digest_hex(digest: str) -> str:
    """`sha256:<hex>` or `<hex>` -> `<hex>`; anything else is refused (it becomes a path)."""
    hexd = str(digest).split(":", 1)[-1].lower()
    if not _HEX.match(hexd):
        raise AgentError(f"{digest!r} is not a sha256 digest", "bad-digest")
    return hexd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


class Agent:
    """Activation, rollback, status and garbage collection for one device root."""

    def __init__(self, root: Path, config: AgentConfig | None = None, device_id: str = ""):
        self.root = Path(root)
        self.config = config if config is not None else config_for_root(self.root)
        self.device_id = device_id or self.root.name
        self.releases = self.root / "releases"
        self.incoming = self.root / "incoming"
        self.tmp = self.root / "tmp"
        self.quarantine = self.root / "quarantine"
        self.state_path = self.root / "state.json"
        self.current_link = self.root / "current"

    # --- layout and state -------------------------------------------------------------------

    def ensure_layout(self) -> None:
        for folder in (self.root, self.releases, self.incoming, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _locked(self):
        """One operation at a time per device root (an MQTT service and a manual CLI call may race)."""
        self.ensure_layout()
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def current_hex(self) -> str | None:
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        name = Path(target).name
        return name if _HEX.match(name) and (self.releases / name).is_dir() else None

    def _read_state(self) -> dict:
        try:
            state = json.loads(self.state_path.read_text())
            if not isinstance(state, dict):
                state = {}
        except (OSError, ValueError):
            state = {}
        # The symlink is the truth for `current`; state.json may lag it by one crash.
        link = self.current_hex()
        recorded = state.get("current")
        if recorded != link:
            if recorded and link and (self.releases / recorded).is_dir():
                state["previous"] = recorded
            state["current"] = link
        history = [h for h in state.get("history", []) if isinstance(h, str) and _HEX.match(h)]
        state["history"] = history
        prev = state.get("previous")
        if prev and not (isinstance(prev, str) and _HEX.match(prev) and (self.releases / prev).is_dir()):
            state["previous"] = None
        return state

    def _write_state(self, state: dict) -> None:
        state["updated"] = time.time()
        tmp = self.state_path.with_name(f"state.json.tmp-{os.getpid()}")
        with open(tmp, "w") as fh:
            json.dump(state, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)
        _fsync_dir(self.root)

    def _record(self, result: Result) -> Result:
        """Store the outcome as `last_result` (best effort: a full disk must not hide the real error).
        A switch already wrote it with the new state, fsynced: no second write (two fsyncs per
        activation, the agent's dearest step after unpacking on a busy disk)."""
        if not self.root.is_dir():
            return result  # never create a device root as a side effect of a refused call
        try:
            with self._locked():
                state = self._read_state()
                recorded = json.loads(json.dumps(result.to_dict()))
                if state.get("last_result") == recorded:
                    return result
                state["last_result"] = recorded
                self._write_state(state)
        except OSError:
            pass
        return result

    def _clean_tmp(self) -> None:
        if self.tmp.is_dir():
            for leftover in self.tmp.iterdir():
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        for stray in self.root.glob("current.tmp-*"):
            stray.unlink(missing_ok=True)
        for stray in self.root.glob("state.json.tmp-*"):
            stray.unlink(missing_ok=True)

    def _switch(self, hexd: str) -> None:
        """Point `current` at releases/<hex> with one rename: old or new, never neither."""
        tmp_link = self.root / f"current.tmp-{os.getpid()}"
        tmp_link.unlink(missing_ok=True)
        os.symlink(os.path.join("releases", hexd), tmp_link)
        os.replace(tmp_link, self.current_link)
        _fsync_dir(self.root)

    # --- trust ------------------------------------------------------------------------------

    def trust(self) -> DeviceTrust:
        return DeviceTrust(self.root, self.config)

    def accept_trust(self, data: bytes) -> Result:
        """Take a trust chain (JSON bytes) delivered by any transport; the Result says which
        version the device trusts now, or why the chain was refused."""
        try:
            with self._locked():
                doc, message = self.trust().accept(data)
            figures = {"trust_version": doc.version if doc else 0}
            return Result(True, self.device_id, "", "", message, figures)
        except AgentError as err:
            return Result(False, self.device_id, "", err.reason, f"trust: {err}", err.figures)
        except OSError as err:
            return Result(False, self.device_id, "", "disk-full" if _disk_full(err) else "error", f"trust: {err}")

    def accept_pending_trust(self) -> Result:
        """Take the chain waiting in incoming/ now (`edgeship agent trust`, after an SSH upload)."""
        pending = self.incoming / INCOMING_FILE
        if not pending.is_file():
            version = self.trust().summary().get("version")
            return Result(True, self.device_id, "", "", "no trust chain pending", {"trust_version": version})
        try:
            return self.accept_trust(pending.read_bytes())
        finally:
            pending.unlink(missing_ok=True)

    def _take_incoming_trust(self) -> None:
        """A chain pushed next to a bundle (SSH, local) counts before the bundle is looked at; a
        legacy device (no trust_root) ignores it, as it did before trust documents existed."""
        pending = self.incoming / INCOMING_FILE
        if not pending.is_file():
            return
        try:
            trust = self.trust()
            if not trust.legacy:
                trust.accept(pending.read_bytes())
        finally:
            pending.unlink(missing_ok=True)

    # --- queries ----------------------------------------------------------------------------

    def incoming_path(self, digest: str) -> Path:
        return self.incoming / f"{digest_hex(digest)}.tar"

    def has(self, digest: str) -> bool:
        """True when the device holds this release unpacked, or its bundle waiting in incoming/."""
        hexd = digest_hex(digest)
        return (self.releases / hexd / artifact.SUMS).is_file() or (self.incoming / f"{hexd}.tar").is_file()

    def _release_names(self) -> list[str]:
        return sorted(p.name for p in self.releases.iterdir() if _HEX.match(p.name)) if self.releases.is_dir() else []

    def _incoming_names(self) -> list[str]:
        return sorted(p.name for p in self.incoming.glob("*.tar")) if self.incoming.is_dir() else []

    def kept_digests(self) -> set[str]:
        """Releases unpacked here and bundles waiting in incoming/ (what a chunk store keeps the
        chunks of), without the rest of status() (its walk of the whole device root)."""
        return {f"sha256:{h}" for h in self._release_names()} | {f"sha256:{n[:-4]}" for n in self._incoming_names()}

    def status(self) -> dict:
        state = self._read_state() if self.root.exists() else {"history": []}
        as_digest = lambda h: f"sha256:{h}" if h else None  # noqa: E731
        releases = self._release_names()
        free = shutil.disk_usage(self.root).free if self.root.exists() else None
        return {
            "device_id": self.device_id,
            "root": str(self.root),
            "current": as_digest(state.get("current")),
            "previous": as_digest(state.get("previous")),
            "last_result": state.get("last_result"),
            "releases": [as_digest(h) for h in releases],
            "incoming": self._incoming_names(),
            "disk_bytes": _tree_bytes(self.root) if self.root.exists() else 0,
            "free_bytes": free,
            "updated": state.get("updated"),
            "trust": self.trust().summary(),
            "target": self.config.target,
            "warnings": self.config.warnings() if self.config.source else [],
        }

    # --- activation ---------------------------------------------------------------------------

    def activate(self, bundle: Path | str) -> Result:
        """Verify, unpack, smoke-test and switch to `bundle` (a .tar path, or `sha256:<hex>` of a
        bundle already in incoming/ or a release already unpacked). Never raises for a bad bundle:
        the Result says why, and the running release is untouched."""
        digest = ""
        try:
            bundle_path = self._resolve(bundle)
            digest = self._digest_of(bundle_path)
            with self._locked():
                self._take_incoming_trust()
                if bundle_path.parent == self.releases and digest_hex(digest) != bundle_path.name:
                    self._quarantine(bundle_path.name)  # its SHA256SUMS itself was damaged
                    raise AgentError(f"release {bundle_path.name[:12]} is damaged (its SHA256SUMS changed): "
                                     "quarantined; push it again", "tampered")
                figures = self._activate_locked(bundle_path, digest)
            result = Result(True, self.device_id, digest, "", figures.pop("_message", "activated"), figures)
        except AgentError as err:
            result = Result(False, self.device_id, digest, err.reason, str(err), err.figures)
        except ArtifactError as err:
            result = Result(False, self.device_id, digest, err.reason, str(err), {})
        except OSError as err:
            reason = "disk-full" if _disk_full(err) else "error"
            result = Result(False, self.device_id, digest, reason, f"{err.strerror or err}", {})
        return self._record(result)

    def _resolve(self, bundle: Path | str) -> Path:
        text = str(bundle)
        if text.startswith("sha256:") or _HEX.match(text):
            hexd = digest_hex(text)
            staged = self.incoming / f"{hexd}.tar"
            if staged.is_file():
                return staged
            if (self.releases / hexd).is_dir():
                return self.releases / hexd
            raise AgentError(f"{text}: no such bundle on this device (push it first)", "not-found")
        path = Path(bundle)
        if not path.exists():
            raise AgentError(f"{path}: no such bundle", "not-found")
        return path

    def _digest_of(self, bundle: Path) -> str:
        return artifact.bundle_digest(bundle, self.config.max_members)

    def _check_space(self, bundle: Path) -> None:
        """From the tar headers alone (what the bundle says it unpacks to), before a byte is written."""
        size = _tree_bytes(bundle) if bundle.is_dir() else artifact.declared_size(bundle, self.config.max_members)
        limit = self.config.max_bundle_mb
        if size > limit * MB:
            raise AgentError(f"disk full: bundle unpacks to {size / MB:.2f} MB, over max_bundle_mb {limit}", "disk-full",
                             {"bundle_mb": round(size / MB, 3), "max_bundle_mb": limit})
        min_free = self.config.min_free_mb or 0
        free = shutil.disk_usage(self.root).free
        if free - size < min_free * MB:
            raise AgentError(
                f"disk full: unpacking {size / MB:.2f} MB would leave {(free - size) / MB:.1f} MB free, under min_free_mb {min_free}",
                "disk-full", {"bundle_mb": round(size / MB, 3), "free_mb": round(free / MB, 1), "min_free_mb": min_free})

    def _activate_locked(self, bundle: Path, digest: str) -> dict:
        self._clean_tmp()
        hexd = digest_hex(digest)
        release = self.releases / hexd
        current = self.current_hex()
        if current == hexd:
            self._verify(release, digest)
            self._drop_incoming(bundle)
            return {"_message": "already current"}
        expired = self.trust().expiry_problem()
        if expired:
            raise AgentError(expired, "trust-expired")
        created = False
        if release.is_dir():
            try:
                self._verify(release, digest)
            except AgentError as err:
                if err.reason in TRUST_REASONS:  # signed by a key no longer trusted: refused, not damaged
                    raise
                self._quarantine(hexd)  # a damaged copy: never trusted again, nor counted as held
                if bundle == release:
                    raise AgentError(f"{err}; the release is quarantined: push it again", err.reason) from None
        if not release.is_dir():
            self._check_space(bundle)
            self._unpack(bundle, release, digest)
            created = True
        try:
            target_binding.check_release(release, self.config.target)
            pipeline, counter = release_floor.check(self._read_state(), release)
            figures = smoke_test(release, self.config.smoke)
        except AgentError:
            state = self._read_state()
            if created and hexd not in (state.get("current"), state.get("previous")):
                shutil.rmtree(release, ignore_errors=True)
            self._drop_incoming(bundle)
            raise
        _fault("kill-before-switch")
        state = self._read_state()
        self._switch(hexd)
        state["previous"] = current
        state["current"] = hexd
        state["history"] = [h for h in state["history"] if h != hexd] + [hexd]
        release_floor.raise_floor(state, pipeline, counter)
        state["last_result"] = Result(True, self.device_id, digest, "", "activated", figures).to_dict()
        self._write_state(state)
        self._drop_incoming(bundle)
        self._prune(state)
        return figures

    def _quarantine(self, hexd: str) -> None:
        """Move a kept release that fails verification out of releases/ in one rename: `has()` and
        the reported releases no longer count it, so the next push fetches it again; gc deletes it."""
        self.quarantine.mkdir(exist_ok=True)
        os.rename(self.releases / hexd, self.quarantine / f"{hexd}-{time.time_ns()}")
        _fsync_dir(self.releases)

    def _verify(self, folder: Path, digest: str) -> None:
        try:
            ring = self.trust().artifact_ring() if self.config.require_signature else None
            found = artifact.verify_dir(folder, self.config.trusted_keys, self.config.require_signature, keyring=ring)
        except ArtifactError as err:
            raise AgentError(str(err), err.reason) from None
        if found != digest:
            raise AgentError(f"{folder}: digest {found} does not match {digest}", "tampered")

    def _unpack(self, bundle: Path, release: Path, digest: str) -> None:
        """Unpack into tmp/, verify what was written, then rename into releases/ in one step."""
        staging = self.tmp / f"{digest_hex(digest)}-{os.getpid()}"
        limit = self.config.max_bundle_bytes
        try:
            if bundle.is_dir():
                raise AgentError(f"{bundle}: expected a bundle (.tar)", "not-a-bundle")
            artifact.safe_extract(bundle, staging, max_total_bytes=limit, max_members=self.config.max_members)
            self._verify(staging, digest)
            _fault("kill-after-unpack")
            os.rename(staging, release)
            _fsync_dir(self.releases)
        except ArtifactError as err:
            shutil.rmtree(staging, ignore_errors=True)
            self._drop_incoming(bundle)
            reason = "disk-full" if err.reason == "oversize" else err.reason
            raise AgentError(str(err), reason) from None
        except AgentError:
            shutil.rmtree(staging, ignore_errors=True)
            self._drop_incoming(bundle)
            raise
        except OSError as err:
            shutil.rmtree(staging, ignore_errors=True)
            if _disk_full(err):
                raise AgentError(f"disk full while unpacking: {err.strerror}", "disk-full") from None
            raise

    def _drop_incoming(self, bundle: Path) -> None:
        """A staged bundle is removed once used (activated, or refused: a bad copy must be re-sent)."""
        if bundle.parent == self.incoming and bundle.is_file():
            bundle.unlink(missing_ok=True)

    # --- rollback, gc ----------------------------------------------------------------------------

    def rollback(self) -> Result:
        """Switch back to the previous release (verified again first); the old current becomes previous."""
        digest = ""
        try:
            with self._locked():
                self._take_incoming_trust()
                state = self._read_state()
                previous, current = state.get("previous"), state.get("current")
                if not previous:
                    raise AgentError("no previous release to roll back to", "no-previous")
                digest = f"sha256:{previous}"
                try:
                    self._verify(self.releases / previous, digest)
                except AgentError as err:
                    if err.reason in TRUST_REASONS:
                        raise AgentError(f"{err}: the previous release is no longer trusted; not rolling back to it",
                                         err.reason) from None
                    self._quarantine(previous)
                    raise AgentError(f"{err}; the previous release is quarantined", err.reason) from None
                self._switch(previous)
                state["previous"], state["current"] = current, previous
                state["history"] = [h for h in state["history"] if h != previous] + [previous]
                result = Result(True, self.device_id, digest, "", "rolled back", {"from": f"sha256:{current}" if current else None})
                state["last_result"] = result.to_dict()
                self._write_state(state)
            return result
        except AgentError as err:
            return self._record(Result(False, self.device_id, digest, err.reason, str(err), err.figures))
        except OSError as err:
            return self._record(Result(False, self.device_id, digest, "disk-full" if _disk_full(err) else "error", str(err)))

    def _prune(self, state: dict) -> list[str]:
        keep = {h for h in (state.get("current"), state.get("previous")) if h}
        for hexd in reversed(state["history"]):
            if len(keep) >= self.config.keep_releases:
                break
            keep.add(hexd)
        removed = []
        for folder in self.releases.iterdir():
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        if removed:
            state["history"] = [h for h in state["history"] if h in keep]
            self._write_state(state)
        return removed

    def gc(self) -> dict:
        """Remove crash leftovers, partial uploads, bundles already unpacked, releases past
        keep_releases, and kept releases that no longer verify (quarantined, then deleted)."""
        with self._locked():
            before = _tree_bytes(self.root)
            self._clean_tmp()
            removed = []
            current = self.current_hex()
            for folder in sorted(self.releases.iterdir()):
                if folder.name != current and _HEX.match(folder.name):
                    try:
                        self._verify(folder, f"sha256:{folder.name}")
                    except AgentError as err:
                        if err.reason not in TRUST_REASONS:  # a rotated key is not damage: keep the release
                            self._quarantine(folder.name)
            if self.quarantine.is_dir():
                for bad in sorted(self.quarantine.iterdir()):
                    shutil.rmtree(bad, ignore_errors=True)
                    removed.append(f"quarantine/{bad.name}")
            for part in self.incoming.glob("*.part"):
                part.unlink(missing_ok=True)
                removed.append(f"incoming/{part.name}")
            for tar in self.incoming.glob("*.tar"):
                if (self.releases / tar.stem).is_dir():
                    tar.unlink(missing_ok=True)
                    removed.append(f"incoming/{tar.name}")
            state = self._read_state()
            removed += [f"releases/{h}" for h in self._prune(state)]
            return {"removed": removed, "freed_bytes": max(0, before - _tree_bytes(self.root))}


__all__ = ["Agent", "digest_hex", "FAULT_ENV"]
