"""The signing key is an explicit part of the build: the summary says which key signed (id and
file) and why that one; `--key` and EDGESHIP_SIGNING_KEY choose it."""

from __future__ import annotations

import os

from edgeship import artifact
from edgeship.cli import main

from .models import pipeline_doc, tiny_mlp, write_manifest


def _manifest(tmp_path):
    tiny_mlp(tmp_path / "models" / "mlp.onnx")
    return write_manifest(tmp_path / "p.yaml", pipeline_doc("models/mlp.onnx", {"x": [1, 8]}))


def _signer(bundle) -> str:
    return artifact.read_json_member(bundle, artifact.SIGNATURE)["key_id"]


def test_build_summary_names_the_default_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGESHIP_SIGNING_KEY", raising=False)
    assert main(["build", str(_manifest(tmp_path)), "-o", str(tmp_path / "out"), "-q"]) == 0
    out = capsys.readouterr().out
    home_key = os.path.join(os.environ["EDGESHIP_HOME"], "keys", "signing.key")
    kid = artifact.key_id(artifact.load_private_key(home_key).public_key())
    assert _signer(tmp_path / "out" / "p.tar") == kid
    assert f"signed with key {kid}: {home_key} (the default key in the state folder" in out
    assert "--key or EDGESHIP_SIGNING_KEY" in out


def test_build_key_flag_signs_with_that_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGESHIP_SIGNING_KEY", raising=False)
    key, pub = artifact.generate_keypair(tmp_path / "keys" / "release.key")
    kid = artifact.key_id(artifact.load_public_key(pub))
    assert main(["build", str(_manifest(tmp_path)), "-o", str(tmp_path / "out"), "-q", "--key", str(key)]) == 0
    assert _signer(tmp_path / "out" / "p.tar") == kid
    assert f"signed with key {kid}: {key} (from --key); devices must trust {pub}" in capsys.readouterr().out
    assert "EDGESHIP_SIGNING_KEY" not in os.environ  # --key chose the key for that build only


def test_build_key_flag_naming_a_missing_file_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGESHIP_SIGNING_KEY", raising=False)
    assert main(["build", str(_manifest(tmp_path)), "--key", str(tmp_path / "nope.key")]) == 2
    assert "no such private key file" in capsys.readouterr().err
