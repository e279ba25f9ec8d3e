"""A device belongs to one rollout at a time: plan shows an overlap, apply and deploy refuse it
unless told to take the devices over (real local devices, real agent)."""

from __future__ import annotations

import pytest

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.rollout.journal import Journal
from rollout_kit import current_of, device_ids, make_bundle, write_local_fleet, write_rollout

STRATEGY = {"canary": {"count": 1}, "waves": [100], "max_unavailable": 3}

pytestmark = pytest.mark.usefixtures("state_store")  # the same tests on SQLite and on PostgreSQL


def test_overlapping_rollouts_and_deploy_need_take_over(tmp_path, capsys):
    ids = device_ids(3)
    fleet = write_local_fleet(tmp_path, ids)
    v1, v2, v3 = (make_bundle(tmp_path, "kws", seed=s) for s in (1, 2, 3))
    d1, d2, d3 = (artifact.bundle_digest(b) for b in (v1, v2, v3))
    first = write_rollout(tmp_path, "cams", fleet, v1, STRATEGY)
    second = write_rollout(tmp_path, "cams-beta", fleet, v2, STRATEGY, selector={"matchLabels": {"site": "lab"}})
    import shutil

    shutil.rmtree(tmp_path / "devices" / ids[2])  # never deployed: its folder does not exist yet
    assert main(["plan", str(first)]) == 1
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("dev-")]
    assert all(row.endswith("empty") for row in rows) and "offline" not in "".join(rows), rows
    assert main(["apply", str(first)]) == 0
    capsys.readouterr()

    assert main(["plan", str(second)]) == 1
    out = capsys.readouterr().out
    assert out.count("owned by rollout cams") == 3
    assert "Owned elsewhere: 3 device(s) of rollout cams" in out and "--take-over" in out

    assert main(["apply", str(second)]) == 1
    assert "3 device(s) of rollout cams (dev-000, dev-001, dev-002) belong to another rollout" in capsys.readouterr().err
    assert all(current_of(tmp_path, d) == d1 for d in ids)  # refused before touching anything
    with Journal() as j:
        assert j.rollout("cams-beta") is None

    assert main(["apply", str(second), "--take-over"]) == 0
    assert all(current_of(tmp_path, d) == d2 for d in ids)
    capsys.readouterr()
    assert main(["plan", str(first)]) == 1  # now the first one would have to take them back
    assert "owned by rollout cams-beta" in capsys.readouterr().out
    assert main(["apply", str(first)]) == 1
    assert all(current_of(tmp_path, d) == d2 for d in ids)

    # deploy refuses devices that belong to a rollout too; --take-over detaches them
    assert main(["deploy", str(v3), "--fleet", str(fleet), "--no-progress"]) == 1
    assert "belong to a rollout" in capsys.readouterr().err
    assert all(current_of(tmp_path, d) == d2 for d in ids)
    assert main(["deploy", str(v3), "--fleet", str(fleet), "--no-progress", "--take-over"]) == 0
    assert "takes over 3 device(s) of rollout cams-beta" in capsys.readouterr().err
    assert all(current_of(tmp_path, d) == d3 for d in ids)
    with Journal() as j:
        assert {a["rollout"] for a in j.applied("lab").values()} == {""}
    assert main(["apply", str(first)]) == 0  # devices that belong to nobody may be taken without a flag
    assert all(current_of(tmp_path, d) == d1 for d in ids)
