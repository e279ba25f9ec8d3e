"""Wave planning, gate evaluation, spec loading and the journal: the parts with no devices."""

from __future__ import annotations

import pytest

from edgeship.errors import ManifestError
from edgeship.fleet.rollout.gate import Outcome, evaluate
from edgeship.fleet.rollout.journal import Journal
from edgeship.fleet.rollout.spec import Canary, Gate, load_rollout
from edgeship.fleet.rollout.waves import plan_waves, resolve_max_unavailable

IDS = [f"d{i:04d}" for i in range(1000)]


def test_waves_canary_percent_then_cumulative():
    waves = plan_waves(IDS, Canary(percent=1), (10, 50, 100))
    assert [w.name for w in waves] == ["canary", "wave 1 (10%)", "wave 2 (50%)", "wave 3 (100%)"]
    assert [len(w.devices) for w in waves] == [10, 90, 400, 500]
    flat = [d for w in waves for d in w.devices]
    assert flat == sorted(IDS)  # every device exactly once, in a reproducible order


def test_waves_canary_count_and_small_fleets():
    waves = plan_waves(["c", "a", "b"], Canary(count=1), (10, 50, 100))
    assert [w.devices for w in waves] == [("a",), ("b",), ("c",)]  # 10% of 3 is covered by the canary: dropped
    assert [w.name for w in waves] == ["canary", "wave 2 (50%)", "wave 3 (100%)"]
    assert plan_waves(["a"], Canary(count=5), (100,))[0].devices == ("a",)
    assert plan_waves([], Canary(count=1), (100,)) == []
    assert [w.devices for w in plan_waves(["a", "b"], None, (100,))] == [("a", "b")]


def test_max_unavailable_counts_and_percents():
    assert resolve_max_unavailable(3, 100) == 3
    assert resolve_max_unavailable("10%", 1000) == 100
    assert resolve_max_unavailable("10%", 5) == 1
    with pytest.raises(ValueError):
        resolve_max_unavailable("ten", 5)


def test_gate_success_ratio_and_latency():
    gate = Gate(min_success_ratio=0.9, max_smoke_p95_ratio=1.5)
    ok = [Outcome(f"d{i}", True, p95_ms=5.0) for i in range(9)]
    verdict = evaluate(ok + [Outcome("bad", False, "smoke-failed")], gate, budget_p95_ms=10.0)
    assert verdict.ok and verdict.figures["success_ratio"] == 0.9
    verdict = evaluate(ok[:8] + [Outcome("b1", False, "smoke-failed"), Outcome("b2", False, "tampered")], gate, 10.0)
    assert not verdict.ok
    assert "success ratio 0.80 < 0.90" in verdict.reason and "b1 smoke-failed" in verdict.reason
    assert verdict.figures["failed"] == {"b1": "smoke-failed", "b2": "tampered"}
    slow = ok + [Outcome("slow", True, p95_ms=16.0)]
    verdict = evaluate(slow, gate, 10.0)
    assert not verdict.ok and verdict.figures["worst_device"] == "slow" and verdict.figures["worst_p95_ratio"] == 1.6
    assert evaluate([], gate, 10.0).ok  # nothing to do: nothing failed


def test_spec_defaults_and_errors(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("apiVersion: edgeship/v1\nkind: Fleet\nmetadata: {name: lab}\ndevices:\n"
                     "  - {id: a, target: host-cpu, transport: local, address: devices/a}\n")
    (tmp_path / "art.tar").write_bytes(b"")
    good = tmp_path / "good.yaml"
    good.write_text("apiVersion: edgeship/v1\nkind: Rollout\nmetadata: {name: r1}\nfleet: fleet.yaml\n"
                    "artifact: {path: art.tar}\n")
    spec = load_rollout(good)
    assert spec.strategy.canary == Canary(count=1) and spec.strategy.waves == (100.0,)
    assert spec.strategy.gate.max_smoke_p95_ratio == 1.5 and spec.strategy.on_failure == "rollback"
    assert spec.fleet_path == tmp_path / "fleet.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: edgeship/v1\nkind: Rollout\nmetadata: {name: r1}\nfleet: fleet.yaml\n"
                   "artifact: {path: art.tar}\nstrategy:\n  waves: [50, 20]\n  max_unavailable: 0\n")
    with pytest.raises(ManifestError) as err:
        load_rollout(bad)
    text = str(err.value)
    assert "bad.yaml:7:" in text and "strategy.waves" in text
    zero = tmp_path / "zero.yaml"
    zero.write_text("apiVersion: edgeship/v1\nkind: Rollout\nmetadata: {name: r1}\nfleet: fleet.yaml\n"
                    "artifact: {path: art.tar}\nstrategy:\n  max_unavailable: 0\n")
    with pytest.raises(ManifestError) as err:
        load_rollout(zero)
    assert "zero.yaml:7:20: strategy.max_unavailable: must be >= 1" in str(err.value)


def test_journal_begin_end_and_interrupted(state_store):
    with Journal() as j:
        run = j.new_run("r", "m.yaml", "lab", "sha256:s", "sha256:a", "b.tar")
        j.begin(run, "r", "d1", 0, "push", "sha256:a")
        assert j.interrupted(run, "d1", "push", "sha256:a")
        j.end(run, "r", "d1", 0, "push", "sha256:a", True, 100)
        assert not j.interrupted(run, "d1", "push", "sha256:a")
        assert j.last_end(run, "d1", "push", "sha256:a").bytes == 100
        j.record_gate(run, 0, False, "why", {"x": 1})
        assert j.gates(run)[0]["figures"] == {"x": 1}
        j.set_state("r", "paused", "by hand")
    with Journal() as j:  # survives reopening
        assert j.rollout("r").state == "paused" and j.push_counts() == {("d1", "sha256:a"): 1}
