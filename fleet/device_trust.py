"""What one device trusts right now, and how it takes a newer trust document.

Two modes, chosen by the device's own agent.yaml:

* **root** (`trust_root` set): the newest trust document the device accepted, kept in
  `<root>/trust.json`, names the artifact and desired-state keys (fleet/trust.py). Until the first
  one arrives, the provisioned `trusted_keys` stand in for it.
* **legacy** (no `trust_root`, today's format): `trusted_keys` are the keys, one level, no threshold,
  no revocation; trust documents are refused (`no-trust-root`).

A trust chain reaches the agent as bytes (MQTT) or as `incoming/trust-chain.json` (pushed over SSH or
locally next to a bundle, taken by the next agent operation). Accepting one is a file rename: a
device that loses power keeps the old document or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgeship import artifact
from edgeship.errors import AgentError, ArtifactError
from edgeship.fleet.agent_config import AgentConfig
from edgeship.fleet.trust import Role, TrustDocument, TrustError, format_time, parse_chain, utc_now, walk_chain

STATE_FILE = "trust.json"
INCOMING_FILE = "trust-chain.json"
# Refusals that say "this key is not trusted (any more)", not "these bytes are damaged": a release
# refused for one of these is kept (a newer trust document may trust it again), never quarantined.
TRUST_REASONS = ("untrusted-key", "revoked-key", "threshold", "bad-trust")


class DeviceTrust:
    def __init__(self, root: Path, config: AgentConfig):
        self.root = Path(root)
        self.config = config
        self.path = self.root / STATE_FILE

    @property
    def legacy(self) -> bool:
        return not self.config.trust_root

    def provisioned_root(self) -> Role:
        try:
            return Role.from_public_files(self.config.trust_root, self.config.root_threshold)
        except ArtifactError as err:
            raise AgentError(f"trust_root: {err}", "bad-key") from None

    def document(self) -> TrustDocument | None:
        """The accepted document (None before the first, or in legacy mode). An unreadable one fails
        closed: nothing verifies until a valid chain is delivered again."""
        if self.legacy or not self.path.is_file():
            return None
        try:
            return TrustDocument.from_json(json.loads(self.path.read_text()))
        except (OSError, ValueError, TrustError) as err:
            raise AgentError(f"{self.path}: unreadable trust document ({err}); deliver the trust chain again",
                             "bad-trust") from None

    # --- the keys -------------------------------------------------------------------------------

    def artifact_ring(self) -> artifact.KeyRing:
        doc = self.document()
        return doc.ring("artifacts") if doc else self._legacy_ring()

    def desired_ring(self) -> artifact.KeyRing:
        doc = self.document()
        return doc.ring("desired_state") if doc else self._legacy_ring()

    def _legacy_ring(self) -> artifact.KeyRing:
        try:
            return artifact.KeyRing.from_files(list(self.config.trusted_keys))
        except ArtifactError as err:
            raise AgentError(str(err), err.reason) from None

    def expiry_problem(self, now=None) -> str | None:
        """Why new activations are refused because the trust document is stale; None when it is fresh."""
        doc = self.document()
        if doc is None or not doc.expired(now):
            return None
        return (f"trust document version {doc.version} expired at {doc.expires} (now {format_time(now or utc_now())}): "
                "refusing new activations, the current release keeps running; deliver a newer trust document")

    # --- updates --------------------------------------------------------------------------------

    def accept(self, data: bytes) -> tuple[TrustDocument | None, str]:
        """Take a chain (JSON bytes); return (the document now trusted, what happened)."""
        if self.legacy:
            raise AgentError(f"{self.config.source or 'agent.yaml'}: no trust_root configured (legacy trust): "
                             "trust documents are not accepted; provision trust_root to use them", "no-trust-root")
        try:
            chain = parse_chain(json.loads(data))
            current = self.document()
            newest = walk_chain(self.provisioned_root(), current, chain)
        except ValueError as err:
            raise AgentError(f"trust chain is not JSON: {err}", "bad-trust") from None
        except TrustError as err:
            raise AgentError(str(err), err.reason) from None
        if newest is None:
            return current, f"trust document version {current.version if current else 0} is already the newest"
        tmp = self.path.with_name(f"{STATE_FILE}.tmp-{os.getpid()}")
        with open(tmp, "w") as fh:
            json.dump(newest.to_json(), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        return newest, f"trust document version {newest.version} accepted (expires {newest.expires})"

    def summary(self) -> dict:
        if self.legacy:
            return {"mode": "legacy", "version": None, "expires": None, "expired": False}
        try:
            doc = self.document()
        except AgentError as err:
            return {"mode": "root", "version": None, "expires": None, "expired": False, "error": str(err)}
        return {"mode": "root", "version": doc.version if doc else 0, "expires": doc.expires if doc else None,
                "expired": bool(doc and doc.expired())}


__all__ = ["DeviceTrust", "STATE_FILE", "INCOMING_FILE", "TRUST_REASONS"]
