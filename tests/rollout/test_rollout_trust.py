"""A fleet that does not trust the artifact's signing key: `plan` warns before anything moves, and
`apply`'s untrusted-key failure says which key signed and how to trust it."""

from __future__ import annotations

from edgeship import artifact
from edgeship.cli import main
from rollout_kit import device_ids, make_bundle, write_local_fleet, write_rollout


def test_plan_warns_and_apply_prints_the_fix_for_an_untrusted_key(tmp_path, capsys):
    ids = device_ids(2)
    fleet = write_local_fleet(tmp_path, ids)  # trusts the test key of tmp_path/keys
    stranger, stranger_pub = artifact.generate_keypair(tmp_path / "other" / "release.key")
    kid = artifact.key_id(artifact.load_public_key(stranger_pub))
    bundle = make_bundle(tmp_path, "kws", seed=1, key=stranger)
    rollout = write_rollout(tmp_path, "kws", fleet, bundle, {"waves": [100]})

    assert main(["plan", str(rollout)]) == 1
    err = capsys.readouterr().err
    assert f"signed by key {kid}" in err and "does not trust" in err and "trust.public_keys" in err

    assert main(["apply", str(rollout)]) == 1
    out, err = capsys.readouterr()
    assert "untrusted-key" in out + err
    hint = [line for line in err.splitlines() if line.startswith("edgeship: hint: ")]
    assert len(hint) == 1 and kid in hint[0] and "--key / EDGESHIP_SIGNING_KEY" in hint[0]


def test_plan_is_quiet_when_the_fleet_trusts_the_signer(tmp_path, capsys):
    fleet = write_local_fleet(tmp_path, device_ids(1))
    rollout = write_rollout(tmp_path, "kws", fleet, make_bundle(tmp_path, "kws", seed=1), {"waves": [100]})
    assert main(["plan", str(rollout)]) == 1
    assert "does not trust" not in capsys.readouterr().err
