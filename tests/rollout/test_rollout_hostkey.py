"""A refused host key keeps its reason end to end (real sshd): apply, the gate, the history, plan,
`rollout status` and `fleet status` all say `host-key`, never `unreachable`, `offline` or `never`."""

from __future__ import annotations

import json
import subprocess

import pytest

from edgeship.cli import main
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import make_bundle, signing_keys, write_rollout
from tests.support.sshd import SshdFarm

pytestmark = pytest.mark.integration


def test_host_key_refusal_is_reported_as_host_key_everywhere(tmp_path, capsys):
    with SshdFarm(tmp_path / "sshd", count=2) as farm:
        impostor = tmp_path / "impostor_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
        kind, blob = (impostor.with_suffix(".pub")).read_text().split()[:2]
        lines = farm.known_hosts.read_text().splitlines()
        lines[1] = f"[127.0.0.1]:{farm.devices[1].port} {kind} {blob}"  # dev-01's key "changed"
        farm.known_hosts.write_text("\n".join(lines) + "\n")
        _, pub = signing_keys(tmp_path)
        fleet = farm.write_fleet(tmp_path / "fleet.yaml", trust=[pub])
        rollout = write_rollout(tmp_path, "hk", fleet, make_bundle(tmp_path, "kws", seed=1),
                                {"canary": {"count": 2}, "waves": [100], "max_unavailable": 2})

        assert main(["plan", str(rollout)]) == 2
        out = capsys.readouterr().out
        assert "dev-01" in out and "host-key: dev-01: host key for" in out

        assert main(["apply", str(rollout)]) == 1
        out, err = capsys.readouterr()
        assert "dev-01 host-key" in err and "failed: host-key" in out
        with Journal() as journal:
            ends = [json.loads(s["detail"]) for s in journal.steps("hk")
                    if s["device"] == "dev-01" and s["phase"] == "end" and s["action"] == "activate"]
            assert ends and all(e["reason"] == "host-key" for e in ends)
            gate = next(iter(journal.gates(journal.rollout("hk").run_id).values()))
            assert gate["figures"]["failed"] == {"dev-01": "host-key"}

        assert main(["rollout", "history", "hk", "--steps"]) == 0
        history = capsys.readouterr().out
        assert "host-key" in history and "unreachable" not in history
        assert main(["rollout", "status", "hk", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["live"]["unreachable"] == {"dev-01": "host-key"}

        assert main(["fleet", "status", str(fleet)]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("dev-01"))
        assert row.split()[2] == "host-key" and "offline" not in row and "never" not in row
