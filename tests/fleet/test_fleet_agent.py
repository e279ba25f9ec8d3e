"""The device agent against real signed bundles and real onnxruntime: every refusal leaves the
running release untouched; crashes (real SIGKILL of the agent process) are harmless."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgeship import artifact
from edgeship.cli import main
from edgeship.fleet.agent import FAULT_ENV, Agent
from edgeship.fleet.agent_config import SmokeConfig, write_config
from tests.fleet.fleet_helpers import agent_for, bad_signature_bundle, tampered_copy, unsafe_bundle
from tests.support.bundles import make_bundle, signing_keys


@pytest.fixture
def agent(tmp_path) -> Agent:
    return agent_for(tmp_path)


@pytest.fixture
def good(tmp_path) -> Path:
    return make_bundle(tmp_path, "kws", seed=1)


def test_activate_switches_current_and_reports_figures(agent, good):
    result = agent.activate(good)
    assert result.ok, result
    digest = artifact.bundle_digest(good)
    assert result.digest == digest
    assert result.figures["p95_ms"] > 0 and result.figures["limit_ms"] == pytest.approx(1500.0)
    link = os.readlink(agent.root / "current")
    assert link == os.path.join("releases", digest.split(":")[1])
    status = agent.status()
    assert status["current"] == digest and status["previous"] is None
    assert status["last_result"]["ok"] is True and status["disk_bytes"] > 0


def test_second_activation_records_previous_and_rollback_toggles(tmp_path, agent, good):
    second = make_bundle(tmp_path, "kws", seed=2)
    assert agent.activate(good).ok and agent.activate(second).ok
    status = agent.status()
    assert status["current"] == artifact.bundle_digest(second)
    assert status["previous"] == artifact.bundle_digest(good)
    back = agent.rollback()
    assert back.ok and back.digest == artifact.bundle_digest(good)
    assert agent.status()["current"] == artifact.bundle_digest(good)
    assert agent.status()["previous"] == artifact.bundle_digest(second)


def test_rollback_without_previous_is_refused(agent, good):
    assert agent.activate(good).ok
    result = agent.rollback()
    assert not result.ok and result.reason == "no-previous"
    assert agent.status()["current"] == artifact.bundle_digest(good)


def test_reactivating_current_is_a_no_op(agent, good):
    assert agent.activate(good).ok
    again = agent.activate(good)
    assert again.ok and again.message == "already current"


def _refused(agent: Agent, bundle: Path, reason: str, running: str | None):
    result = agent.activate(bundle)
    assert not result.ok
    assert result.reason == reason, result
    assert agent.status()["current"] == running
    assert agent.status()["last_result"]["reason"] == reason
    assert not any((agent.root / "tmp").iterdir())
    return result


def test_tampered_bundle_is_rejected(tmp_path, agent, good):
    assert agent.activate(good).ok
    evil = tampered_copy(make_bundle(tmp_path, "kws", seed=3), tmp_path / "evil.tar")
    result = _refused(agent, evil, "tampered", artifact.bundle_digest(good))
    assert "model.onnx" in result.message
    assert len(list((agent.root / "releases").iterdir())) == 1


def test_bad_signature_is_rejected(tmp_path, agent, good):
    assert agent.activate(good).ok
    _refused(agent, bad_signature_bundle(tmp_path), "bad-signature", artifact.bundle_digest(good))


def test_unsigned_bundle_is_rejected(tmp_path, agent, good):
    assert agent.activate(good).ok
    _refused(agent, make_bundle(tmp_path, "kws", seed=4, sign=False), "unsigned", artifact.bundle_digest(good))


def test_untrusted_key_is_rejected(tmp_path, agent, good):
    other = tmp_path / "other"
    foreign = make_bundle(other, "kws", seed=5)  # signed by other/keys/signing.key
    _refused(agent, foreign, "untrusted-key", None)


def test_unsafe_member_is_rejected_and_nothing_escapes(tmp_path, agent, good):
    assert agent.activate(good).ok
    _refused(agent, unsafe_bundle(tmp_path, make_bundle(tmp_path, "kws", seed=6)), "unsafe-member", artifact.bundle_digest(good))
    assert not (agent.root / "escaped.txt").exists() and not (agent.root / "tmp" / "escaped.txt").exists()


def test_smoke_failure_with_nan_outputs_does_not_switch(tmp_path, agent, good):
    assert agent.activate(good).ok
    bad = make_bundle(tmp_path, "kws", seed=8, variant="nan")
    result = _refused(agent, bad, "smoke-failed", artifact.bundle_digest(good))
    assert "non-finite" in result.message
    assert not (agent.root / "releases" / artifact.bundle_digest(bad).split(":")[1]).exists()


def test_smoke_failure_on_latency_reports_figures(tmp_path, good):
    agent = agent_for(tmp_path, "slowdev", smoke=SmokeConfig(max_latency_ms=0.000001))
    result = agent.activate(good)
    assert not result.ok and result.reason == "smoke-failed"
    assert result.figures["max_latency_ms"] == 0.000001
    assert result.figures["p95_ms"] > result.figures["max_latency_ms"]
    assert agent.status()["current"] is None


def test_latency_budget_times_tolerance_is_enforced(tmp_path):
    agent = agent_for(tmp_path, "budget")
    bundle = make_bundle(tmp_path, "kws", seed=9, budget_p95_ms=0.0000001)
    result = agent.activate(bundle)
    assert not result.ok and result.reason == "smoke-failed"
    assert result.figures["budget_p95_ms"] == 0.0000001 and "budget" in result.message


def test_disk_full_by_max_bundle_mb(tmp_path, good):
    agent = agent_for(tmp_path, "small", max_bundle_mb=0.001)
    result = agent.activate(good)
    assert not result.ok and result.reason == "disk-full"
    assert result.figures["max_bundle_mb"] == 0.001
    assert agent.status()["current"] is None and not any((agent.root / "releases").iterdir())


def test_disk_full_by_min_free_mb(tmp_path, good):
    agent = agent_for(tmp_path, "nofree", min_free_mb=10**12)
    result = agent.activate(good)
    assert not result.ok and result.reason == "disk-full" and "min_free_mb" in result.message


def test_keeps_only_the_last_releases(tmp_path):
    agent = agent_for(tmp_path, "prune", keep_releases=3)
    bundles = [make_bundle(tmp_path, "kws", seed=s) for s in range(10, 15)]
    for b in bundles:
        assert agent.activate(b).ok
    kept = sorted(p.name for p in (agent.root / "releases").iterdir())
    expected = sorted(artifact.bundle_digest(b).split(":")[1] for b in bundles[-3:])
    assert kept == expected
    assert agent.status()["previous"] == artifact.bundle_digest(bundles[-2])


def _cli_activate(root: Path, bundle: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "edgeship", "agent", "activate", str(bundle), "--root", str(root), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)


def _provision(tmp_path: Path, name: str) -> Path:
    root = tmp_path / "devices" / name
    agent = agent_for(tmp_path, name)
    write_config(root, agent.config)
    return root


@pytest.mark.parametrize("fault", ["kill-before-switch", "kill-after-unpack"])
def test_agent_killed_between_unpack_and_switch_keeps_previous(tmp_path, good, fault):
    root = _provision(tmp_path, "crash")
    first = _cli_activate(root, good)
    assert first.returncode == 0, first.stderr
    second = make_bundle(tmp_path, "kws", seed=20)
    killed = _cli_activate(root, second, {FAULT_ENV: fault})
    assert killed.returncode == -9  # really SIGKILLed mid-activation
    agent = Agent(root)
    assert agent.status()["current"] == artifact.bundle_digest(good)
    assert (root / "current" / "model.onnx").is_file()  # the running release is whole
    retry = _cli_activate(root, second)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert json.loads(retry.stdout)["ok"] is True
    assert agent.status()["current"] == artifact.bundle_digest(second)
    assert agent.status()["previous"] == artifact.bundle_digest(good)
    assert not any((root / "tmp").iterdir())


def test_gc_removes_leftovers(tmp_path, agent, good):
    assert agent.activate(good).ok
    (agent.root / "tmp" / "stale-123").mkdir()
    (agent.root / "incoming" / ("0" * 64 + ".tar.part")).write_bytes(b"x" * 100)
    report = agent.gc()
    assert report["freed_bytes"] >= 100
    assert not any((agent.root / "tmp").iterdir()) and not any((agent.root / "incoming").iterdir())
    assert agent.status()["current"] == artifact.bundle_digest(good)


def test_cli_status_rollback_and_one_line_errors(tmp_path, good, capsys):
    root = _provision(tmp_path, "cli")
    assert main(["agent", "activate", str(good), "--root", str(root)]) == 0
    capsys.readouterr()
    assert main(["agent", "status", "--root", str(root)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["current"] == artifact.bundle_digest(good)
    evil = tampered_copy(make_bundle(tmp_path, "kws", seed=30), tmp_path / "evil.tar")
    assert main(["agent", "activate", str(evil), "--root", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[tampered]" in err[0] and "Traceback" not in err[0]
    assert main(["agent", "rollback", "--root", str(root)]) == 1
    assert "no-previous" in capsys.readouterr().err


def test_cli_bad_config_is_one_clear_line(tmp_path, good, capsys):
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"trusted_keys": [], "keep_relases": 3}))
    assert main(["agent", "activate", str(good), "--root", str(tmp_path / "d"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "keep_relases: unknown key" in err and err.count("\n") == 1


def test_cli_init_provisions_trust(tmp_path, good, capsys):
    root = tmp_path / "fresh"
    assert main(["agent", "init", "--root", str(root), "--trust", str(signing_keys(tmp_path)[1])]) == 0
    assert main(["agent", "activate", str(good), "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["ok"] is True


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 512 KiB tmpfs (needs root and mount permission; skipped where unavailable)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_enospc_while_unpacking_is_disk_full(tmp_path, tiny_tmpfs, good):
    agent = Agent(tiny_tmpfs / "dev", agent_for(tmp_path).config, device_id="tiny")
    assert agent.activate(good).ok  # a small release fits
    big = make_bundle(tmp_path, "kws", seed=40, pad_kb=1024)  # unpacks to ~1 MiB: cannot fit
    result = agent.activate(big)
    assert not result.ok and result.reason == "disk-full", result
    assert agent.status()["current"] == artifact.bundle_digest(good)
    assert (agent.root / "current" / "model.onnx").is_file()
    assert not any((agent.root / "tmp").iterdir())


def test_reactivate_an_unpacked_release_by_digest(tmp_path, agent, good):
    second = make_bundle(tmp_path, "kws", seed=50)
    staged = agent.incoming_path(artifact.bundle_digest(second))
    agent.ensure_layout()
    staged.write_bytes(second.read_bytes())
    assert agent.has(artifact.bundle_digest(second)) and not agent.has(artifact.bundle_digest(good))
    assert agent.activate(good).ok
    assert agent.activate(artifact.bundle_digest(second)).ok  # from incoming/, which is then removed
    assert not staged.exists() and agent.has(artifact.bundle_digest(second))
    assert agent.rollback().ok
    forward = agent.activate(artifact.bundle_digest(second))  # no bundle left: the unpacked release
    assert forward.ok and agent.status()["current"] == artifact.bundle_digest(second)
    missing = agent.activate("sha256:" + "ab" * 32)
    assert not missing.ok and missing.reason == "not-found"
