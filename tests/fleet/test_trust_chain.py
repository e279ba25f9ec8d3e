"""The root of trust on a real device agent (fleet/trust.py, device_trust.py): a 2-of-3 root
threshold, a signing key rotated and revoked by trust documents, a root rotation signed by the old
and the new root, a device that missed versions walking the chain, an expired document, and an
agent.yaml in today's format (legacy trust) that keeps working."""

from __future__ import annotations

import json

import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import config_for_root
from edgeship.fleet.trust import TrustDocument
from edgeship.fleet.trust_repo import TrustRepo
from tests.support.bundles import make_bundle, signing_keys


def _keys(tmp, *names):
    out = {}
    for name in names:
        priv = tmp / "keys" / f"{name}.key"
        artifact.generate_keypair(priv)
        out[name] = (priv, priv.with_suffix(".pub"))
    return out


def _cli(*argv):
    code = main([str(a) for a in argv])
    assert code == 0, argv
    return code


def _device(tmp, roots, threshold, name="dev", target="host-cpu"):
    root = tmp / "devices" / name
    args = ["agent", "init", "--root", root, "--root-threshold", threshold, "--target", target,
            "--trust", signing_keys(tmp)[1]]
    for pub in roots:
        args += ["--trust-root", pub]
    _cli(*args)
    return Agent(root, config_for_root(root), device_id=name)


def _chain(repo):
    return repo.chain_path.read_bytes()


def test_two_of_three_root_rotate_revoke_and_root_rotation(tmp_path, capsys):
    k = _keys(tmp_path, "root1", "root2", "root3", "ci2", "ci3", "newroot1", "newroot2")
    old_priv, old_pub = signing_keys(tmp_path)
    repo, r = TrustRepo(tmp_path / "trust"), tmp_path / "trust"
    roots = [k[n][1] for n in ("root1", "root2", "root3")]
    device = _device(tmp_path, roots, 2)

    # v1: the provisioned signing key, signed by 2 of the 3 roots (one signature is not enough)
    _cli("keys", "root", "init", "--repo", r, *sum((["--root", p] for p in roots), []), "--threshold", 2,
         "--artifact-key", old_pub, "--sign", k["root1"][0])
    assert not repo.chain_path.exists() and "needs 1 more of the new root" in capsys.readouterr().out
    _cli("keys", "trust", "sign", "--repo", r, "--key", k["root2"][0])
    assert "published version 1" in capsys.readouterr().out
    assert device.accept_trust(_chain(repo)).ok
    v1 = make_bundle(tmp_path, "kws", seed=1, release=1)
    assert device.activate(v1).ok

    # a forged document signed by one root key (under threshold) is refused and changes nothing
    forged = TrustDocument.from_json(json.loads(_chain(repo))[0])
    forged_signed = dict(forged.signed, version=9)
    forged = TrustDocument(forged_signed, ()).with_signature(k["root3"][0])
    refused = device.accept_trust(json.dumps([forged.to_json()]).encode())
    assert not refused.ok and refused.reason == "untrusted-root"
    assert device.trust().summary()["version"] == 1

    # v2: rotate the signing key to ci2, no device re-provisioned
    _cli("keys", "rotate", "--repo", r, "--new", k["ci2"][1], "--sign", k["root1"][0], "--sign", k["root3"][0])
    assert device.accept_trust(_chain(repo)).ok
    v2 = make_bundle(tmp_path, "kws", seed=2, release=2, key=k["ci2"][0])
    assert device.activate(v2).ok
    stale = make_bundle(tmp_path, "kws", seed=3, release=3)  # still signed by the retired key
    result = device.activate(stale)
    assert not result.ok and result.reason == "untrusted-key"

    # v3: ci3 joins, then v4 revokes ci2: the current release (signed by ci2) keeps running,
    # a new bundle signed by ci2 is refused as revoked
    _cli("keys", "rotate", "--repo", r, "--new", k["ci3"][1], "--keep-old", "--sign", k["root1"][0], "--sign", k["root2"][0])
    _cli("keys", "revoke", "--repo", r, k["ci2"][1], "--sign", k["root2"][0], "--sign", k["root3"][0])
    assert device.accept_trust(_chain(repo)).ok and device.trust().summary()["version"] == 4
    assert device.status()["current"] == artifact.bundle_digest(v2)
    leaked = make_bundle(tmp_path, "kws", seed=4, release=4, key=k["ci2"][0])
    result = device.activate(leaked)
    assert not result.ok and result.reason == "revoked-key", result
    assert device.activate(make_bundle(tmp_path, "kws", seed=5, release=5, key=k["ci3"][0])).ok
    rolled = device.rollback()  # back to the ci2-signed release: refused, not quarantined
    assert not rolled.ok and rolled.reason == "revoked-key"
    assert (device.releases / artifact.short(artifact.bundle_digest(v2), 64)).is_dir()

    # v5: root rotation to a 2-of-2 new root: signed by the old threshold alone it is not published
    _cli("keys", "root", "rotate", "--repo", r, "--root", k["newroot1"][1], "--root", k["newroot2"][1],
         "--threshold", 2, "--sign", k["root1"][0], "--sign", k["root2"][0])
    assert "needs 2 more of the new root" in capsys.readouterr().out
    _cli("keys", "trust", "sign", "--repo", r, "--key", k["newroot1"][0])
    _cli("keys", "trust", "sign", "--repo", r, "--key", k["newroot2"][0])
    # v6 is signed by the new root only
    _cli("keys", "trust", "renew", "--repo", r, "--sign", k["newroot1"][0], "--sign", k["newroot2"][0])
    assert repo.latest().version == 6

    # a device provisioned with the old root that missed v2..v6 walks the chain in one delivery
    late = _device(tmp_path, roots, 2, name="late")
    accepted = late.accept_trust(_chain(repo))
    assert accepted.ok and accepted.figures["trust_version"] == 6, accepted
    # old root keys can no longer sign for it
    old_root_only = TrustDocument(dict(repo.latest().signed, version=7), ())
    old_root_only = old_root_only.with_signature(k["root1"][0]).with_signature(k["root2"][0])
    refused = late.accept_trust(json.dumps([old_root_only.to_json()]).encode())
    assert not refused.ok and refused.reason == "untrusted-root"

    _cli("keys", "trust", "show", "--repo", r)
    shown = capsys.readouterr().out
    assert "trust document version 6" in shown and "revoked" in shown and artifact.key_id(
        artifact.load_public_key(k["ci2"][1])) in shown


def test_expired_trust_document_stops_new_activations_only(tmp_path, capsys):
    k = _keys(tmp_path, "root1")
    _, pub = signing_keys(tmp_path)
    r = tmp_path / "trust"
    device = _device(tmp_path, [k["root1"][1]], 1)
    _cli("keys", "root", "init", "--repo", r, "--root", k["root1"][1], "--artifact-key", pub,
         "--sign", k["root1"][0])
    assert device.accept_trust(TrustRepo(r).chain_path.read_bytes()).ok
    v1 = make_bundle(tmp_path, "kws", seed=1, release=1)
    assert device.activate(v1).ok
    # a new version that is already expired (a device frozen past its expiry sees the same)
    _cli("keys", "trust", "renew", "--repo", r, "--expires-days", -1, "--sign", k["root1"][0])
    assert device.accept_trust(TrustRepo(r).chain_path.read_bytes()).ok
    result = device.activate(make_bundle(tmp_path, "kws", seed=2, release=2))
    assert not result.ok and result.reason == "trust-expired"
    assert "expired at" in result.message and "current release keeps running" in result.message
    assert device.status()["current"] == artifact.bundle_digest(v1)
    assert device.status()["trust"]["expired"] is True
    # a renewed document lets it move again
    _cli("keys", "trust", "renew", "--repo", r, "--sign", k["root1"][0])
    assert device.accept_trust(TrustRepo(r).chain_path.read_bytes()).ok
    assert device.activate(make_bundle(tmp_path, "kws", seed=2, release=2)).ok


def test_legacy_agent_yaml_keeps_working_and_refuses_trust_documents(tmp_path, capsys):
    _, pub = signing_keys(tmp_path)
    root = tmp_path / "devices" / "old"
    root.mkdir(parents=True)
    (root / "agent.yaml").write_text(yaml.safe_dump({"trusted_keys": [str(pub)]}))  # today's format
    device = Agent(root, config_for_root(root), device_id="old")
    assert device.activate(make_bundle(tmp_path, "kws", seed=1)).ok
    assert device.status()["trust"]["mode"] == "legacy"
    assert any("legacy single-level trust" in w for w in device.status()["warnings"])
    k = _keys(tmp_path, "root1")
    _cli("keys", "root", "init", "--repo", tmp_path / "trust", "--root", k["root1"][1], "--artifact-key", pub,
         "--sign", k["root1"][0])
    refused = device.accept_trust((tmp_path / "trust" / "trust.json").read_bytes())
    assert not refused.ok and refused.reason == "no-trust-root"
    # a chain pushed next to a bundle (a fleet with trust.document) is ignored, the push still activates
    (root / "incoming" / "trust-chain.json").write_bytes((tmp_path / "trust" / "trust.json").read_bytes())
    assert device.activate(make_bundle(tmp_path, "kws", seed=2)).ok
    assert not (root / "incoming" / "trust-chain.json").exists()


def test_artifact_threshold_needs_two_signatures(tmp_path, capsys):
    k = _keys(tmp_path, "root1", "ci", "release")
    r = tmp_path / "trust"
    device = _device(tmp_path, [k["root1"][1]], 1)
    _cli("keys", "root", "init", "--repo", r, "--root", k["root1"][1], "--artifact-key", k["ci"][1],
         "--artifact-key", k["release"][1], "--artifact-threshold", 2, "--sign", k["root1"][0])
    assert device.accept_trust(TrustRepo(r).chain_path.read_bytes()).ok
    bundle = make_bundle(tmp_path, "kws", seed=1, key=k["ci"][0])
    result = device.activate(bundle)
    assert not result.ok and result.reason == "threshold" and "1 of the 2" in result.message
    _cli("keys", "cosign", bundle, "--key", k["release"][0])
    assert device.activate(bundle).ok


def test_malformed_chains_are_refused_with_a_reason_never_an_exception(tmp_path):
    k = _keys(tmp_path, "root1")
    device = _device(tmp_path, [k["root1"][1]], 1)
    good = {"type": "edgeship-trust", "version": 2, "expires": "2099-01-01T00:00:00Z",
            "root": {"keys": {}, "threshold": 1}, "artifacts": {"keys": {}, "threshold": 1}}
    bad_key = dict(good, artifacts={"keys": {"abcd": "not base64!"}, "threshold": 1})
    for payload in (b"\xff\xfe", b"[]", b"{}", b'{"signed": 3}', json.dumps({"signed": dict(good, expires="soon")}).encode(),
                    json.dumps({"signed": bad_key, "signatures": []}).encode(),
                    json.dumps({"signed": dict(good, version=True), "signatures": []}).encode(),
                    json.dumps([{"signed": good, "signatures": [{"key_id": "x", "signature": "!!"}]}]).encode()):
        result = device.accept_trust(payload)
        assert not result.ok and result.reason in ("bad-trust", "untrusted-root"), (payload, result)
    assert device.trust().summary()["version"] == 0
