"""The trust chain as a folder the release team keeps (in git, next to the Fleet manifest):

    trust.json   the chain of signed trust documents, oldest first: what devices receive
    draft.json   the next version, waiting for root signatures (absent when none is pending)

Every change (`edgeship keys root init | rotate | revoke | trust renew | root rotate`) writes a draft
one version above the newest document; root key holders sign it (`edgeship keys trust sign`, on
the offline machine that holds their key); once it carries the signatures a device will ask for
(the current root's threshold and, for a root rotation, the new root's too) it is appended to
trust.json and the draft is removed. No private key is ever stored here.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Callable

from edgeship import artifact
from edgeship.errors import ArtifactError, UsageError
from edgeship.fleet.trust import (DOC_TYPE, Role, TrustDocument, TrustError, check_successor, chain_bytes,
                                  format_time, load_chain, utc_now)

CHAIN = "trust.json"
DRAFT = "draft.json"
DEFAULT_EXPIRES_DAYS = 365


def key_reference(text: str) -> str:
    """A key named on the command line: a key id, or a public/private key file -> its key id."""
    path = Path(text)
    if path.is_file():
        try:
            return artifact.key_id(artifact.load_public_key(path))
        except ArtifactError:
            return artifact.key_id(artifact.load_private_key(path).public_key())
    return text


def public_role(paths: list[Path], threshold: int = 1) -> Role:
    if not paths:
        raise UsageError("name at least one public key")
    role = Role.from_public_files(paths, threshold)
    if threshold > len(role.keys):
        raise UsageError(f"threshold {threshold} is more than the {len(role.keys)} key(s) given")
    return role


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class TrustRepo:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.chain_path = self.folder / CHAIN
        self.draft_path = self.folder / DRAFT

    # --- reading --------------------------------------------------------------------------------

    def chain(self) -> list[TrustDocument]:
        return load_chain(self.chain_path) if self.chain_path.is_file() else []

    def latest(self) -> TrustDocument | None:
        chain = self.chain()
        return max(chain, key=lambda d: d.version) if chain else None

    def draft(self) -> TrustDocument | None:
        if not self.draft_path.is_file():
            return None
        return load_chain(self.draft_path)[0]

    # --- drafts ---------------------------------------------------------------------------------

    def init(self, root: Role, artifacts: Role, desired: Role | None, expires_days: float) -> TrustDocument:
        if self.chain_path.exists():
            raise UsageError(f"{self.chain_path}: a trust chain already exists (change it with rotate/revoke)")
        signed = {"type": DOC_TYPE, "version": 1, "root": root.to_json(), "artifacts": artifacts.to_json(),
                  "revoked": []}
        if desired is not None:
            signed["desired_state"] = desired.to_json()
        return self._save_draft(signed, expires_days)

    def change(self, mutate: Callable[[dict], None], expires_days: float | None = None) -> TrustDocument:
        """A draft one version above the newest document, changed by `mutate(signed)`."""
        latest = self.latest()
        if latest is None:
            raise UsageError(f"{self.chain_path}: no trust chain yet (start one with `edgeship keys root init`)")
        signed = copy.deepcopy(latest.signed)
        signed["version"] = latest.version + 1
        if "desired_state" not in signed:
            signed["desired_state"] = copy.deepcopy(signed["artifacts"])
        mutate(signed)
        return self._save_draft(signed, expires_days if expires_days is not None else DEFAULT_EXPIRES_DAYS)

    def _save_draft(self, signed: dict, expires_days: float) -> TrustDocument:
        signed["expires"] = format_time(utc_now() + _dt.timedelta(days=float(expires_days)))
        signed["revoked"] = sorted(set(signed.get("revoked", [])))
        try:
            doc = TrustDocument.from_json({"signed": signed, "signatures": []})
        except TrustError as err:
            raise UsageError(str(err)) from None
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(self.draft_path, doc.to_json())
        return doc

    def sign(self, private_key: Path) -> tuple[TrustDocument, bool]:
        """Add a root key holder's signature to the draft; publish it into the chain once complete.
        Returns (the draft or published document, published?)."""
        draft = self.draft()
        if draft is None:
            raise UsageError(f"{self.draft_path}: no draft to sign")
        kid = artifact.key_id(artifact.load_private_key(private_key).public_key())
        latest = self.latest()
        roots = [draft.role("root")] + ([latest.role("root")] if latest else [])
        if not any(kid in r.keys for r in roots):
            raise UsageError(f"{private_key}: key {kid} is not a root key of this trust chain (the current or the new root)")
        draft = draft.with_signature(private_key)
        if self.complete(draft):
            _write_json(self.chain_path, json.loads(chain_bytes(self.chain() + [draft])))
            self.draft_path.unlink()
            return draft, True
        _write_json(self.draft_path, draft.to_json())
        return draft, False

    def complete(self, draft: TrustDocument) -> bool:
        latest = self.latest()
        try:
            if latest is None:
                return draft.signed_by_threshold(draft.role("root"))
            check_successor(latest.role("root"), latest.version, draft)
            return True
        except TrustError:
            return False

    def missing_signatures(self, draft: TrustDocument) -> str:
        """What the draft still needs, in words."""
        latest = self.latest()
        needs = []
        for label, role in (("current root", latest.role("root") if latest else None), ("new root", draft.role("root"))):
            if role is None or (label == "new root" and latest is not None and role == latest.role("root")):
                continue
            have = _count_valid(draft, role)
            if have < role.threshold:
                needs.append(f"{role.threshold - have} more of the {label} ({', '.join(sorted(role.keys))})")
        return "; ".join(needs) or "nothing"


def _count_valid(doc: TrustDocument, role: Role) -> int:
    """Valid signatures by keys of `role` on `doc`, below threshold too (for 'n more needed')."""
    return sum(1 for kid in role.keys if doc.signers(Role({kid: role.keys[kid]}, 1)))


# --- the changes -----------------------------------------------------------------------------------

def rotate(signed: dict, role: str, new: Role, old: str | None) -> None:
    """Replace `old` (a key id; default: the role's only key) by the new key(s) in one role."""
    keys = dict(signed[role]["keys"])
    if old is None:
        if len(keys) != 1:
            raise UsageError(f"{role} has {len(keys)} keys: name the one to replace with --old")
        old = next(iter(keys))
    if old not in keys:
        raise UsageError(f"key {old} is not a {role} key (keys: {', '.join(sorted(keys)) or 'none'})")
    del keys[old]
    keys.update(new.keys)
    signed[role]["keys"] = keys


def add(signed: dict, role: str, new: Role) -> None:
    signed[role]["keys"] = {**signed[role]["keys"], **new.keys}


def revoke(signed: dict, kid: str) -> None:
    """Remove a key from the artifact and desired-state roles and list it as revoked (a key rotated
    out earlier may be revoked too: it leaked after it was retired)."""
    for role in ("artifacts", "desired_state"):
        if kid in signed[role]["keys"]:
            del signed[role]["keys"][kid]
            if not signed[role]["keys"]:
                raise UsageError(f"revoking {kid} leaves no {role} key: rotate a new key in first "
                                 f"(`edgeship keys rotate --role {role} --new NEW.pub`)")
    signed["revoked"] = sorted(set(signed.get("revoked", [])) | {kid})


def set_root(signed: dict, root: Role) -> None:
    signed["root"] = root.to_json()


def set_threshold(signed: dict, role: str, threshold: int) -> None:
    signed[role]["threshold"] = int(threshold)


def describe(doc: TrustDocument, now=None) -> list[str]:
    """Lines for `edgeship keys trust show`."""
    state = "EXPIRED" if doc.expired(now) else "valid"
    lines = [f"trust document version {doc.version}: expires {doc.expires} ({state})"]
    for name in ("root", "artifacts", "desired_state"):
        role = doc.role(name)
        lines.append(f"  {name:<14} threshold {role.threshold} of {len(role.keys)}: {', '.join(sorted(role.keys))}")
    lines.append(f"  {'revoked':<14} {', '.join(sorted(doc.revoked)) or '-'}")
    return lines


__all__ = ["TrustRepo", "key_reference", "public_role", "rotate", "add", "revoke", "set_root", "set_threshold",
           "describe", "CHAIN", "DRAFT"]
