"""`-o json` of every command that reports state validates against its shipped JSON Schema, and the
`-o ndjson` streams of apply, build and reconcile are events (event.schema.json) ending in a result
document. Real local devices (the device agent in-process), a real build of a tiny model."""

from __future__ import annotations

import json

import pytest
import yaml
from jsonschema import Draft202012Validator

from edgeship.cli import main
from edgeship.output import schema_for, schema_kinds
from tests.buildflow.models import tiny_mlp
from tests.rollout.rollout_kit import device_ids, make_bundle, make_failing, write_local_fleet, write_rollout


def check(doc: dict, kind: str) -> dict:
    assert doc["apiVersion"] == "edgeship/v1" and doc["kind"] == kind, doc
    Draft202012Validator(schema_for(kind)).validate(doc)
    return doc


def run_json(capsys, argv: list[str], kind: str, exit_code: int = 0) -> dict:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == exit_code, (argv, code, err)
    return check(json.loads(out), kind)


def run_ndjson(capsys, argv: list[str], final_kind: str, exit_code: int = 0) -> tuple[list[dict], dict]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == exit_code, (argv, code, err)
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines, err
    for line in lines:  # events, and result documents (reconcile: one ApplyResult per applied rollout)
        check(line, line["kind"])
    return [line for line in lines[:-1] if line["kind"] == "Event"], check(lines[-1], final_kind)


def test_every_schema_is_a_valid_draft_2020_12_schema():
    kinds = schema_kinds()
    assert {"Plan", "ApplyResult", "BuildResult", "RolloutStatus", "RolloutList", "RolloutHistory", "FleetStatus",
            "TargetList", "Comparison", "ValidationReport", "event"} <= set(kinds)
    for kind in kinds:
        Draft202012Validator.check_schema(schema_for("Event" if kind == "event" else kind))


def test_event_schema_knows_every_event_type():
    from edgeship.events import EVENT_TYPES

    assert set(schema_for("Event")["$defs"]) == set(EVENT_TYPES)


@pytest.fixture()
def lab(tmp_path):
    ids = device_ids(4)
    fleet = write_local_fleet(tmp_path, ids)
    bundle = make_bundle(tmp_path, "kws", seed=1)
    rollout = write_rollout(tmp_path, "kws", fleet, bundle, {"canary": {"count": 1}, "max_unavailable": 2})
    return tmp_path, ids, fleet, rollout


def test_rollout_commands_json(lab, capsys):
    tmp, ids, fleet, rollout = lab
    plan = run_json(capsys, ["plan", str(rollout), "-o", "json"], "Plan", exit_code=1)  # kubectl-diff: 1 = changes
    assert plan["changes"] and [d["action"] for d in plan["rollouts"][0]["devices"]] == ["push+activate"] * 4
    assert plan["rollouts"][0]["release"]["name"] == "kws v1"

    applied = run_json(capsys, ["apply", str(rollout), "-o", "json"], "ApplyResult")
    result = applied["rollouts"][0]
    assert applied["ok"] and result["state"] == "done" and result["run_number"] == 1
    assert {d["after"]["name"] for d in result["devices"]} == {"kws v1"}

    assert run_json(capsys, ["plan", str(rollout), "-o", "json"], "Plan")["changes"] is False
    status = run_json(capsys, ["rollout", "status", "kws", "-o", "json"], "RolloutStatus")
    assert status["sync"] == "Synced" and [d["state"] for d in status["devices"]] == ["on-target"] * 4
    assert status["releases"] == [{"release": status["release"], "devices": 4}]
    listed = run_json(capsys, ["rollout", "list", "-o", "json"], "RolloutList")
    assert [r["name"] for r in listed["rollouts"]] == ["kws"]
    history = run_json(capsys, ["rollout", "history", "kws", "--steps", "-o", "json"], "RolloutHistory")
    assert [r["number"] for r in history["runs"]] == [1] and history["steps"]
    fleet_doc = run_json(capsys, ["fleet", "status", str(fleet), "-o", "json"], "FleetStatus")
    assert [c["devices"] for c in fleet_doc["releases"]] == [4]
    back = run_json(capsys, ["rollout", "rollback", "kws", "-o", "json"], "RollbackResult", exit_code=1)
    assert not back["ok"] and all("no-previous" in d["note"] for d in back["devices"])  # nothing before v1


def test_apply_ndjson_stream(lab, capsys):
    tmp, ids, fleet, rollout = lab
    make_failing(tmp, ids[1:2])  # the second device fails its smoke test for real
    events, result = run_ndjson(capsys, ["apply", str(rollout), "-o", "ndjson"], "ApplyResult", exit_code=1)
    types = [e["type"] for e in events]
    assert types[0] == "RolloutStarted" and types[-1] == "RolloutFinished"
    assert "DevicePushed" in types and "DeviceActivated" in types and "GatePassed" in types
    failed = [e for e in events if e["type"] == "DeviceFailed"]
    assert failed and failed[0]["device"] == ids[1] and failed[0]["reason"] == "smoke-failed" and failed[0]["message"]
    assert "GateFailed" in types and not result["ok"]
    row = next(d for d in result["rollouts"][0]["devices"] if d["device"] == ids[1])
    assert row["message"] == failed[0]["message"]  # the full message, not only the reason


def test_failure_message_and_device_table_in_human_output(lab, capsys):
    tmp, ids, fleet, rollout = lab
    make_failing(tmp, ids[1:2])
    assert main(["apply", str(rollout)]) == 1
    out = capsys.readouterr().out
    assert f"  {ids[1]}: " in out and "latency" in out.split(f"  {ids[1]}: ", 1)[1].splitlines()[0]
    assert "(run 1)" in out
    assert main(["rollout", "status", "kws"]) == 0
    out = capsys.readouterr().out
    assert "DEVICE" in out and "PROBLEM" in out and "releases: " in out
    line = next(line for line in out.splitlines() if line.startswith(f"  {ids[1]} "))  # the table sits indented
    assert "smoke-failed: " in line  # reason and full message
    assert main(["rollout", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["NAME", "STATE", "RELEASE"] and "kws v1 (" in out


def test_reconcile_ndjson_pass(lab, capsys):
    tmp, ids, fleet, rollout = lab
    folder = tmp / "gitops"
    folder.mkdir()
    (folder / "rollout.yaml").write_text(rollout.read_text())
    doc = yaml.safe_load(rollout.read_text())
    doc["fleet"] = str(fleet)
    (folder / "rollout.yaml").write_text(yaml.safe_dump(doc))
    events, done = run_ndjson(capsys, ["reconcile", str(folder), "--once", "-o", "ndjson"], "ReconcilePass")
    assert done["ok"] and done["applied"] == ["kws"]
    assert "DeviceActivated" in {e["type"] for e in events}
    assert any(e["type"] == "Notice" and e["message"].startswith("reconcile pass 1") for e in events)


def _pipeline(tmp_path):
    tiny_mlp(tmp_path / "mlp.onnx", batch=1)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": "mlp"},
                                    "model": {"path": "mlp.onnx", "inputs": {"x": [1, 8]}}, "target": "host-cpu",
                                    "budget": {"latency_ms": {"p95": 50}}}))
    return path


def test_build_json_and_ndjson(tmp_path, capsys):
    path = _pipeline(tmp_path)
    doc = run_json(capsys, ["build", str(path), "-o", str(tmp_path / "out"), "--format", "json"], "BuildResult")
    build = doc["builds"][0]
    assert doc["ok"] and build["digest"].startswith("sha256:") and build["exported_tar"].endswith("mlp.tar")
    events, again = run_ndjson(capsys, ["build", str(path), "-o", str(tmp_path / "out"), "--format", "ndjson"],
                               "BuildResult")
    assert [e["type"] for e in events][:2] == ["BuildStarted", "StageStarted"]
    assert {e["status"] for e in events if e["type"] == "StageFinished"} == {"cached"}
    assert events[-1]["type"] == "BuildFinished" and again["builds"][0]["digest"] == build["digest"]


def test_build_budget_failure_json_keeps_exit_code(tmp_path, capsys):
    path = _pipeline(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["budget"] = {"latency_ms": {"p95": 0.000001}}
    path.write_text(yaml.safe_dump(doc))
    out = run_json(capsys, ["build", str(path), "-o", str(tmp_path / "out"), "--format", "json"], "BuildResult",
                   exit_code=1)
    assert not out["ok"] and out["builds"][0]["budget"][0]["metric"].startswith("latency")


def test_compare_targets_validate_json(tmp_path, capsys):
    path = _pipeline(tmp_path)
    doc = run_json(capsys, ["compare", str(path), "--targets", "host-cpu", "-o", "json"], "Comparison")
    assert doc["targets"][0]["target"] == "host-cpu"
    doc = run_json(capsys, ["targets", "-o", "json"], "TargetList")
    assert "host-cpu" in {t["name"] for t in doc["targets"]}
    assert run_json(capsys, ["targets", "show", "host-cpu", "-o", "json"], "TargetProfile")["name"] == "host-cpu"
    doc = run_json(capsys, ["validate", str(path), "-o", "json"], "ValidationReport")
    assert doc["ok"] and doc["problems"] == []
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: edgeship/v1\nkind: Pipeline\nmetadata: {name: b}\nmodle: {}\n")
    doc = run_json(capsys, ["validate", str(broken), "-o", "json"], "ValidationReport", exit_code=2)
    assert not doc["ok"] and doc["errors"] >= 1
    assert main(["validate", str(broken), "--format", "json"]) == 2  # the legacy form stays a plain list
    assert isinstance(json.loads(capsys.readouterr().out), list)


def test_schemas_and_py_typed_ship_as_package_data():
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["edgeship"]
    assert "py.typed" in data and "schemas/*.json" in data
    assert (root / "edgeship" / "py.typed").is_file()


def test_deploy_json(lab, capsys):
    tmp, ids, fleet, rollout = lab
    bundle = make_bundle(tmp, "kws", seed=2)
    doc = run_json(capsys, ["deploy", str(bundle), "--fleet", str(fleet), "--no-progress", "-o", "json"], "DeployResult")
    assert doc["ok"] and sorted(d["device_id"] for d in doc["devices"]) == ids


def test_compare_rows_keep_columns_the_api_does_not_name(monkeypatch):
    """A backend's extra compare columns (vendor figures) survive the typed result and its JSON."""
    from edgeship import api
    from edgeship.commands import compile as compile_cmd

    row = {"target": "x", "accelerator_pct": 100.0, "partitions": 1, "host_round_trips": 0, "latency_ms": 1.0,
           "peak_memory_kb": 2.0, "budget": {}, "meets_budget": None, "error": None, "vendor": "12 cycles"}
    monkeypatch.setattr(compile_cmd, "compare_targets", lambda *a, **k: [dict(row)])
    got = api.compare(__file__, ["x"])[0]
    assert got.extra == {"vendor": "12 cycles"} and got.to_dict() == row
