"""The manifest API other areas build on: load_documents, Document, resolve_path, expand_env."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeship.errors import ManifestError, UsageError
from edgeship.pipelines.manifest import (
    Document,
    expand_env,
    format_path,
    load_documents,
    resolve_path,
    validate_files,
)


def test_load_documents_returns_located_documents(cases_dir):
    (doc,) = load_documents(cases_dir / "good" / "pipeline.yaml")
    assert isinstance(doc, Document)
    assert (doc.kind, doc.name, doc.index) == ("Pipeline", "tiny", 0)
    assert doc.data["budget"]["latency_ms"]["p95"] == 5
    assert doc.source == cases_dir / "good" / "pipeline.yaml"
    assert doc.base_dir == cases_dir / "good"
    assert doc.where(("budget", "latency_ms", "p95")) == (9, 21)
    assert doc.where(("budget", "latency_ms"), key=True) == (9, 3)
    # a field that is not written points at its nearest written ancestor
    assert doc.where(("budget", "memory_kb", "peak")) == doc.where(("budget",))
    assert doc.get("model", "inputs", "x") == [1, 4]
    assert doc.get("validation", "samples", default=100) == 100
    assert set(doc.spec) == {"model", "target", "budget", "quantization"}


def test_resolve_path_is_relative_to_the_manifest(cases_dir, monkeypatch):
    monkeypatch.chdir("/")
    (doc,) = load_documents(cases_dir / "good" / "pipeline.yaml")
    model = resolve_path(doc, doc.data["model"]["path"])
    assert model.resolve() == (cases_dir / "models" / "tiny.onnx").resolve()
    assert model.is_file()
    assert resolve_path(doc, "/abs/x.onnx") == Path("/abs/x.onnx")
    monkeypatch.setenv("HOME", "/home/someone")
    assert resolve_path(doc, "~/k.pem") == Path("/home/someone/k.pem")


def test_multiple_documents_and_kind_filter(tmp_path):
    (tmp_path / "f.yaml").write_text(
        "apiVersion: edgeship/v1\nkind: Fleet\nmetadata: {name: a}\ndevices: [{id: d1, address: ./d1}]\n"
        "---\n"
        "# comment-only documents are skipped\n"
        "---\n"
        "apiVersion: edgeship/v1\nkind: Rollout\nmetadata: {name: r}\nfleet: f.yaml\nartifact: {digest: 'sha256:" + "a" * 64 + "'}\n"
    )
    docs = load_documents(tmp_path / "f.yaml")
    assert [(d.kind, d.name, d.index) for d in docs] == [("Fleet", "a", 0), ("Rollout", "r", 1)]
    assert docs[1].where(("fleet",)) == (11, 8)
    (rollout,) = load_documents(tmp_path / "f.yaml", kinds=["Rollout"])
    assert rollout.name == "r"
    with pytest.raises(ManifestError) as err:
        load_documents(tmp_path / "f.yaml", kinds=["Pipeline"])
    assert "no Pipeline document in this file (found: Fleet, Rollout)" in str(err.value)


def test_load_documents_raises_with_every_error(cases_dir):
    with pytest.raises(ManifestError) as err:
        load_documents(cases_dir / "broken" / "python-tag.yaml")
    assert [d.path for d in err.value.diagnostics] == ["model.path", "model.path"]
    assert err.value.exit_code == 2
    assert all(d.file.endswith("python-tag.yaml") and d.line == 5 for d in err.value.diagnostics)


def test_warnings_ride_on_the_document(cases_dir):
    (doc,) = load_documents(cases_dir / "broken" / "selector-no-match.yaml")
    assert [w.path for w in doc.warnings] == ["selector"]
    assert doc.warnings[0].severity == "warning"


def test_document_diagnostic_points_back_into_yaml(cases_dir):
    (doc,) = load_documents(cases_dir / "good" / "pipeline.yaml")
    diag = doc.diagnostic(("budget", "latency_ms", "p95"), "measured 7.1 ms over budget 5 ms", "raise it or optimize")
    assert str(diag).endswith("pipeline.yaml:9:21: budget.latency_ms.p95: measured 7.1 ms over budget 5 ms (raise it or optimize)")
    err = doc.error(("target",), "target not reachable")
    assert isinstance(err, ManifestError) and err.diagnostics[0].line == 7


def test_expand_env(monkeypatch):
    monkeypatch.setenv("EDGESHIP_TEST_SECRET", "s3cret")
    assert expand_env("${EDGESHIP_TEST_SECRET}") == "s3cret"
    assert expand_env("plain/path.pem") == "plain/path.pem"
    monkeypatch.delenv("EDGESHIP_TEST_SECRET")
    with pytest.raises(UsageError, match="EDGESHIP_TEST_SECRET is not set"):
        expand_env("${EDGESHIP_TEST_SECRET}")


def test_secret_references_are_accepted_in_secret_fields(tmp_path):
    (tmp_path / "f.yaml").write_text(
        "apiVersion: edgeship/v1\nkind: Fleet\nmetadata: {name: a}\n"
        "transports:\n"
        "  ssh: {user: edge, identity_file: '${EDGESHIP_SSH_KEY}', password: '${EDGESHIP_SSH_PASSWORD}'}\n"
        "  mqtt: {broker: 'mqtts://broker.lan:8883', username: m, password: '${EDGESHIP_MQTT_PASSWORD}'}\n"
        "devices: [{id: d1, transport: mqtt}, {id: d2, transport: ssh, address: '127.0.0.1:2222'}]\n"
    )
    assert [d for d in validate_files([tmp_path / "f.yaml"]) if d.severity == "error"] == []


def test_format_path():
    assert format_path(("devices", 2, "labels", "ring")) == "devices[2].labels.ring"
    assert format_path(()) == ""


def test_yaml_merge_keys_and_anchors_are_fine(tmp_path):
    (tmp_path / "f.yaml").write_text(
        "apiVersion: edgeship/v1\nkind: Fleet\nmetadata: {name: a}\n"
        "devices:\n"
        "  - &base {id: d1, target: host-cpu, address: ./d1, labels: {site: lab}}\n"
        "  - {<<: *base, id: d2, address: ./d2}\n"
    )
    (doc,) = load_documents(tmp_path / "f.yaml")
    assert doc.data["devices"][1] == {"id": "d2", "target": "host-cpu", "address": "./d2", "labels": {"site": "lab"}}


def test_local_target_documents_count_as_known_targets(tmp_path, cases_dir):
    board = (Path(__file__).parents[2] / "examples" / "targets" / "my-board.yaml").read_text()
    (tmp_path / "m.onnx").write_bytes((cases_dir / "models" / "tiny.onnx").read_bytes())
    (tmp_path / "both.yaml").write_text(
        "apiVersion: edgeship/v1\nkind: Pipeline\nmetadata: {name: p}\nmodel: {path: m.onnx}\ntarget: my-board\n---\n" + board
    )
    assert [d for d in validate_files([tmp_path / "both.yaml"]) if d.severity == "error"] == []


def test_a_large_fleet_sharing_defaults_through_aliases_is_not_a_bomb(tmp_path):
    lines = ["apiVersion: edgeship/v1", "kind: Fleet", "metadata: {name: big}",
             "x-defaults: &d {target: host-cpu, transport: mqtt, labels: {site: lab, ring: main}}"]
    (tmp_path / "f.yaml").write_text("\n".join(lines) + "\n")
    body = "transports: {mqtt: {broker: 'mqtt://127.0.0.1:1883'}}\ndevices:\n" + "".join(
        f"  - {{<<: *d, id: dev-{i:05d}}}\n" for i in range(10_000))
    (tmp_path / "f.yaml").write_text("\n".join(lines) + "\n" + body)
    from edgeship.pipelines.yaml_source import load_yaml_file

    (ydoc,) = load_yaml_file(tmp_path / "f.yaml")
    assert len(ydoc.data["devices"]) == 10_000
    assert ydoc.data["devices"][9_999] == {"target": "host-cpu", "transport": "mqtt",
                                            "labels": {"site": "lab", "ring": "main"}, "id": "dev-09999"}
    assert ydoc.issues == []
