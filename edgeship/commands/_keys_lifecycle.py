"""`edgeship keys root init | rotate | revoke | root rotate | trust sign | show | renew | push`, and
`keys cosign`: the key lifecycle of fleet/trust.py, added under the `keys` command of build.py.

Every change writes a draft in the trust folder (`--repo`, default ./trust); root key holders sign it
with `keys trust sign` (or `--sign ROOT.key` right away); once signed by the roots a device asks for,
it joins trust.json, the chain transports deliver. See docs/security.md, "Key lifecycle".
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeship.errors import UsageError

ROLES = ("artifacts", "desired_state")


def _repo(args):
    from edgeship.fleet.trust_repo import TrustRepo

    return TrustRepo(Path(args.repo))


def _finish_draft(args, repo, draft) -> int:
    """Apply --sign keys, then say what happened and what is still needed."""
    from edgeship.fleet.trust_repo import describe

    published = False
    for key in args.sign or []:
        draft, published = repo.sign(Path(key))
        if published:
            break
    for line in describe(draft):
        print(line)
    if published:
        print(f"published version {draft.version} in {repo.chain_path} (deliver it: every push carries it, "
              f"or `edgeship keys trust push FLEET.yaml`)")
    else:
        print(f"draft version {draft.version} in {repo.draft_path}: needs {repo.missing_signatures(draft)} "
              f"(`edgeship keys trust sign --repo {repo.folder} --key ROOT.key` on the offline machine)")
    return 0


def _pubs(paths) -> list[Path]:
    out = []
    for p in paths or []:
        if not Path(p).is_file():
            raise UsageError(f"{p}: no such public key file")
        out.append(Path(p))
    return out


def cmd_root_init(args) -> int:
    from edgeship.fleet.trust_repo import public_role

    repo = _repo(args)
    root = public_role(_pubs(args.root), args.threshold)
    artifacts = public_role(_pubs(args.artifact_key), args.artifact_threshold)
    desired = public_role(_pubs(args.desired_key)) if args.desired_key else None
    return _finish_draft(args, repo, repo.init(root, artifacts, desired, args.expires_days))


def cmd_rotate(args) -> int:
    from edgeship.fleet import trust_repo as tr

    repo = _repo(args)
    new = tr.public_role(_pubs(args.new))
    old = tr.key_reference(args.old) if args.old else None
    roles = [args.role] if args.role else list(ROLES)

    def change(signed: dict) -> None:
        touched = 0
        for role in roles:
            keys = signed[role]["keys"]
            if old is not None and old not in keys and not args.role:
                continue
            if args.keep_old:
                tr.add(signed, role, new)
            else:
                tr.rotate(signed, role, new, old)
            touched += 1
        if not touched:
            raise UsageError(f"key {old} is not an artifact or desired-state key of this trust chain")

    return _finish_draft(args, repo, repo.change(change, args.expires_days))


def cmd_revoke(args) -> int:
    from edgeship.fleet import trust_repo as tr

    repo = _repo(args)
    kid = tr.key_reference(args.key)
    return _finish_draft(args, repo, repo.change(lambda signed: tr.revoke(signed, kid), args.expires_days))


def cmd_root_rotate(args) -> int:
    from edgeship.fleet import trust_repo as tr

    repo = _repo(args)
    root = tr.public_role(_pubs(args.root), args.threshold)
    return _finish_draft(args, repo, repo.change(lambda signed: tr.set_root(signed, root), args.expires_days))


def cmd_renew(args) -> int:
    repo = _repo(args)
    return _finish_draft(args, repo, repo.change(lambda signed: None, args.expires_days))


def cmd_sign(args) -> int:
    args.sign = [args.key]
    repo = _repo(args)
    if repo.draft() is None:
        raise UsageError(f"{repo.draft_path}: no draft to sign")
    return _finish_draft(args, repo, repo.draft())


def cmd_show(args) -> int:
    from edgeship.fleet.trust import load_chain
    from edgeship.fleet.trust_repo import describe

    if args.fleet:
        return _show_fleet(Path(args.fleet))
    if args.file:
        chain = load_chain(Path(args.file))
        draft = None
    else:
        repo = _repo(args)
        chain, draft = repo.chain(), repo.draft()
        if not chain and draft is None:
            raise UsageError(f"{repo.folder}: no trust chain (start one with `edgeship keys root init`)")
    for doc in sorted(chain, key=lambda d: d.version)[-1:]:
        for line in describe(doc):
            print(line)
        print(f"  chain          {len(chain)} document(s), versions {', '.join(str(d.version) for d in chain)}")
    if draft is not None:
        print(f"pending draft version {draft.version}: needs {repo.missing_signatures(draft)}")
    return 0


def _show_fleet(path: Path) -> int:
    """Per device: the trust document it holds, against the Fleet's newest (exit 1 when any lags)."""
    from edgeship.fleet.inventory import load_fleet
    from edgeship.fleet.rollout.devices import Transports, fetch_statuses
    from edgeship.fleet.rollout.plan import render_table
    from edgeship.fleet.trust_delivery import fleet_document

    fleet = load_fleet(path)
    newest = fleet_document(fleet)
    transports = Transports(fleet)
    try:
        statuses = fetch_statuses(fleet.devices, transports)
    finally:
        transports.close()
    rows, behind = [], 0
    for device in fleet.devices:
        state = statuses.get(device.id)
        trust = getattr(state, "trust", None) or {}
        if isinstance(state, Exception) or not trust:
            note = str(state) if isinstance(state, Exception) else "unknown (device did not say)"
            rows.append((device.id, device.transport, "-", "-", "-", note))
            behind += 1
            continue
        version = trust.get("version")
        note = "EXPIRED" if trust.get("expired") else ""
        if trust.get("mode") == "legacy":
            note = "legacy: trusted_keys only"
        elif newest is not None and (version or 0) < newest.version:
            note = f"behind version {newest.version} (`edgeship keys trust push {path}`)"
        behind += bool(note)
        rows.append((device.id, device.transport, str(trust.get("mode")), str(version), str(trust.get("expires") or "-"),
                     note))
    print(f"fleet {fleet.name}: trust document version {newest.version if newest else '-'}")
    print(render_table(("DEVICE", "TRANSPORT", "MODE", "VERSION", "EXPIRES", "NOTE"), rows))
    return 1 if behind else 0


def cmd_push(args) -> int:
    from edgeship.fleet.inventory import load_fleet
    from edgeship.fleet.rollout.devices import Transports
    from edgeship.fleet.trust_delivery import deliver

    fleet = load_fleet(Path(args.fleet))
    transports = Transports(fleet)
    try:
        results = deliver(fleet, fleet.devices, transports)
    finally:
        transports.close()
    for result in results:
        state = "ok" if result.ok else f"REFUSED {result.reason}"
        print(f"{result.device_id}: {state}: {result.message}")
    return 0 if all(r.ok for r in results) else 1


def cmd_cosign(args) -> int:
    """Add a signature to an artifact folder or .tar (artifact threshold > 1); the digest stays."""
    from edgeship import artifact

    target = Path(args.artifact)
    if target.is_dir():
        kids = artifact.add_signature(target, Path(args.key))
    elif target.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "artifact"
            artifact.safe_extract(target, folder)
            artifact.verify_dir(folder, None, require_signature=False)
            kids = artifact.add_signature(folder, Path(args.key))
            artifact.pack(folder, target)
    else:
        raise UsageError(f"{target}: no such artifact folder or bundle")
    print(f"{target}: signed by {len(kids)} key(s): {', '.join(kids)}")
    return 0


def _draft_options(p, expires: bool = True) -> None:
    p.add_argument("--repo", default="trust", metavar="DIR", help="the trust folder (trust.json, draft.json; default ./trust)")
    p.add_argument("--sign", action="append", metavar="ROOT.key", help="sign the draft with this root key now (repeatable)")
    if expires:
        p.add_argument("--expires-days", type=float, default=365, metavar="DAYS",
                       help="the new document expires this many days from now (default 365)")


def add_lifecycle_commands(keys_sub) -> None:
    """Called by build.py's `keys` parser."""
    root = keys_sub.add_parser("root", help="the fleet's root of trust: init, rotate")
    root_sub = root.add_subparsers(dest="root_command", metavar="ACTION", required=True)
    p = root_sub.add_parser("init", help="start a trust chain: root keys + threshold, artifact (and desired-state) keys")
    p.add_argument("--root", action="append", required=True, metavar="ROOT.pub", help="root public key (repeatable)")
    p.add_argument("--threshold", type=int, default=1, help="root signatures a trust document needs (default 1)")
    p.add_argument("--artifact-key", action="append", required=True, metavar="PUB", help="artifact signing key (repeatable)")
    p.add_argument("--artifact-threshold", type=int, default=1, help="signatures an artifact needs (default 1)")
    p.add_argument("--desired-key", action="append", metavar="PUB",
                   help="desired-state (MQTT intent) signing key (repeatable; default: the artifact keys)")
    _draft_options(p)
    p.set_defaults(func=cmd_root_init)
    p = root_sub.add_parser("rotate", help="replace the root keys (signed by the old and the new root)")
    p.add_argument("--root", action="append", required=True, metavar="ROOT.pub", help="new root public key (repeatable)")
    p.add_argument("--threshold", type=int, default=1, help="the new root's threshold (default 1)")
    _draft_options(p)
    p.set_defaults(func=cmd_root_rotate)

    p = keys_sub.add_parser("rotate", help="replace a signing key in the trust chain (devices are not re-provisioned)")
    p.add_argument("--new", action="append", required=True, metavar="PUB", help="the new public key (repeatable)")
    p.add_argument("--old", metavar="KEY", help="the key it replaces: key id or key file (default: the only key)")
    p.add_argument("--role", choices=ROLES, help="only this role (default: artifacts and desired_state)")
    p.add_argument("--keep-old", action="store_true", help="add the new key, keep the old one valid (a transition)")
    _draft_options(p)
    p.set_defaults(func=cmd_rotate)

    p = keys_sub.add_parser("revoke", help="revoke a signing key: devices refuse what it signed (revoked-key)")
    p.add_argument("key", help="key id or key file")
    _draft_options(p)
    p.set_defaults(func=cmd_revoke)

    p = keys_sub.add_parser("cosign", help="add a signature to an artifact (folder or .tar) for an artifact threshold")
    p.add_argument("artifact")
    p.add_argument("--key", required=True, metavar="PRIV", help="ed25519 private key")
    p.set_defaults(func=cmd_cosign)

    trust = keys_sub.add_parser("trust", help="the trust chain: show, sign, renew, push")
    trust_sub = trust.add_subparsers(dest="trust_command", metavar="ACTION", required=True)
    p = trust_sub.add_parser("show", help="the newest trust document (and a pending draft)")
    p.add_argument("file", nargs="?", help="a trust chain file (default: --repo's trust.json)")
    p.add_argument("--repo", default="trust", metavar="DIR")
    p.add_argument("--fleet", metavar="FLEET.yaml",
                   help="instead: the trust document each device of the fleet holds (exit 1 if any lags or expired)")
    p.set_defaults(func=cmd_show)
    p = trust_sub.add_parser("sign", help="sign the pending draft with a root key (offline)")
    p.add_argument("--key", required=True, metavar="ROOT.key")
    p.add_argument("--repo", default="trust", metavar="DIR")
    p.set_defaults(func=cmd_sign)
    p = trust_sub.add_parser("renew", help="a new version with a later expiry, nothing else changed")
    _draft_options(p)
    p.set_defaults(func=cmd_renew)
    p = trust_sub.add_parser("push", help="deliver the Fleet's trust.document to every device now")
    p.add_argument("fleet", help="Fleet manifest (YAML)")
    p.set_defaults(func=cmd_push)


__all__ = ["add_lifecycle_commands"]
