"""`artifact: {pipeline: ...}`: apply builds the Pipeline first (through the build runner), then rolls
the signed result out; a second apply reuses the build cache and pushes nothing."""

from __future__ import annotations

from pathlib import Path

import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.paths import default_signing_key
from rollout_kit import current_of, device_ids

KWS = Path(__file__).resolve().parents[2] / "examples" / "kws" / "pipeline.yaml"


def test_rollout_builds_its_pipeline(tmp_path, capsys):
    _, pub = artifact.generate_keypair(default_signing_key())
    ids = device_ids(3)
    fleet = {"apiVersion": "edgeship/v1", "kind": "Fleet", "metadata": {"name": "pipe"},
             "trust": {"public_keys": [str(pub)]},
             "devices": [{"id": d, "target": "host-cpu", "transport": "local", "address": f"devices/{d}"} for d in ids]}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    rollout = {"apiVersion": "edgeship/v1", "kind": "Rollout", "metadata": {"name": "kws-built"},
               "fleet": "fleet.yaml", "artifact": {"pipeline": str(KWS)}, "strategy": {"max_unavailable": 3}}
    (tmp_path / "rollout.yaml").write_text(yaml.safe_dump(rollout))
    assert main(["apply", str(tmp_path / "rollout.yaml")]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "build kws-host: [9/9] package" in err and "Rollout kws-built: done" in out
    digests = {current_of(tmp_path, d) for d in ids}
    assert len(digests) == 1 and None not in digests
    assert main(["apply", str(tmp_path / "rollout.yaml")]) == 0
    assert "unchanged; 0 bytes pushed" in capsys.readouterr().out
