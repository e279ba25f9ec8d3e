"""`validate` refuses what `build` would choke on or must not read: duplicate pipeline names across
documents and files, model/data paths that are fifos or devices (or symlinks to them), and paths
that resolve outside the manifest's folder unless the operator allows that folder (--allow-path,
EDGESHIP_ALLOW_PATHS). A manifest from a git branch cannot make `reconcile` read /etc/passwd."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeship.cli import main

from .models import pipeline_doc, tiny_mlp, write_manifest


@pytest.fixture(autouse=True)
def _no_allowance(monkeypatch):
    monkeypatch.delenv("EDGESHIP_ALLOW_PATHS", raising=False)  # tests/conftest.py allows pytest's temp tree


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "error(s)" not in line and ": " in line]


def test_model_symlinked_outside_the_folder_is_refused_unless_allowed(tmp_path, capsys):
    elsewhere = tiny_mlp(tmp_path / "shared" / "mlp.onnx")
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "mlp.onnx").symlink_to(elsewhere)
    manifest = write_manifest(project / "p.yaml", pipeline_doc("models/mlp.onnx", {"x": [1, 8]}))
    assert main(["validate", str(manifest)]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "model.path: model file resolves outside the manifest's folder" in errors[0], errors
    assert "--allow-path" in errors[0] and "EDGESHIP_ALLOW_PATHS" in errors[0]
    assert main(["build", str(manifest), "-o", str(tmp_path / "out"), "-q"]) == 2  # build refuses the same

    assert main(["validate", "--allow-path", str(tmp_path / "shared"), str(manifest)]) == 0
    capsys.readouterr()
    assert "EDGESHIP_ALLOW_PATHS" not in os.environ  # the flag allowed it for that command only
    assert main(["validate", str(manifest)]) == 2
    capsys.readouterr()


def test_etc_passwd_is_not_a_model(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "p.yaml", pipeline_doc("../../../../../../../etc/passwd.onnx", {}))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.onnx").symlink_to("/etc/passwd")
    second = write_manifest(tmp_path / "q.yaml", pipeline_doc("models/m.onnx", {}, name="q"))
    assert main(["validate", str(manifest), str(second)]) == 2
    errors = _errors(capsys)
    assert len(errors) == 2 and all("resolves outside the manifest's folder" in e for e in errors), errors


def test_fifo_and_device_data_paths_are_refused(tmp_path, capsys):
    tiny_mlp(tmp_path / "models" / "mlp.onnx")
    os.mkfifo(tmp_path / "eval.npz")  # reading it would block the build forever
    (tmp_path / "calib.npz").symlink_to(tmp_path / "eval.npz")
    doc = pipeline_doc("models/mlp.onnx", {"x": [1, 8]}, validation={"data": "eval.npz"},
                       quantization={"mode": "static", "calibration": {"data": "calib.npz"}})
    manifest = write_manifest(tmp_path / "p.yaml", doc)
    assert main(["validate", str(manifest)]) == 2
    errors = _errors(capsys)
    assert len(errors) == 2 and all("is a fifo (named pipe), not a regular file" in e for e in errors), errors

    (tmp_path / "dev.npz").symlink_to("/dev/zero")  # endless bytes; allowed folder, still not a file
    doc["validation"]["data"] = "dev.npz"
    doc["quantization"] = {"mode": "none"}
    write_manifest(manifest, doc)
    assert main(["validate", "--allow-path", "/dev", str(manifest)]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "validation.data: validation data is a character device" in errors[0], errors


def test_duplicate_pipeline_names_across_documents_and_files(tmp_path, capsys):
    tiny_mlp(tmp_path / "models" / "mlp.onnx")
    doc = pipeline_doc("models/mlp.onnx", {"x": [1, 8]}, name="same")
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(doc) + "---\n" + yaml.safe_dump(doc))
    write_manifest(tmp_path / "other.yaml", doc)
    assert main(["validate", str(tmp_path / "two.yaml")]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "duplicate Pipeline name 'same'" in errors[0], errors
    assert main(["validate", str(tmp_path / "other.yaml")]) == 0
    capsys.readouterr()
    write_manifest(tmp_path / "another.yaml", doc)
    assert main(["validate", str(tmp_path / "other.yaml"), str(tmp_path / "another.yaml")]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "also the name of the Pipeline at" in errors[0], errors
    assert main(["build", str(tmp_path / "two.yaml"), "-o", str(tmp_path / "out")]) == 2
    assert "duplicate Pipeline name 'same'" in capsys.readouterr().err


def test_reconcile_from_a_git_branch_cannot_read_etc_passwd_as_a_model(tmp_path, capsys):
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "kws" / "models").mkdir(parents=True)
    (repo / "kws" / "models" / "kws.onnx").symlink_to("/etc/passwd")  # committed as a symlink
    write_manifest(repo / "kws" / "pipeline.yaml", pipeline_doc("models/kws.onnx", {}, name="kws"))
    (repo / "devices" / "d1").mkdir(parents=True)
    write_manifest(repo / "fleet.yaml", {"apiVersion": "edgeship/v1", "kind": "Fleet", "metadata": {"name": "lab"},
                                        "devices": [{"id": "d1", "target": "host-cpu", "transport": "local",
                                                     "address": "devices/d1"}]})
    write_manifest(repo / "rollout.yaml", {"apiVersion": "edgeship/v1", "kind": "Rollout", "metadata": {"name": "kws"},
                                          "fleet": "fleet.yaml", "artifact": {"pipeline": "kws/pipeline.yaml"}})
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "innocent"], check=True)
    assert main(["reconcile", str(repo), "--branch", "main", "--once"]) == 1
    err = capsys.readouterr().err
    assert "resolves outside the manifest's folder" in err and "/etc/passwd" in err
    assert not list(Path(os.environ["EDGESHIP_HOME"]).glob("artifacts/*"))  # nothing was built from it
