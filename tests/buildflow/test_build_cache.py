"""The content-addressed stage cache: an unchanged rebuild runs no stage; a budget-only change re-runs
only the stages whose inputs it changes (validate, package), never quantize or the compile stages.

(An earlier version of this test sat in tests/build/, which .gitignore's `build/` rule hid from git.)"""

from __future__ import annotations

from pathlib import Path

import yaml

from edgeship.pipelines.manifest import load_documents
from edgeship.pipelines.runner import build

from tests.buildflow.models import tiny_mlp


def _manifest(folder: Path, p95_ms: float) -> Path:
    tiny_mlp(folder / "mlp.onnx", batch=1)
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": "cache-mlp"},
           "model": {"path": "mlp.onnx", "inputs": {"x": [1, 8]}},
           "target": "host-cpu",
           "budget": {"latency_ms": {"p95": p95_ms}},
           "quantization": {"mode": "static"}}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _statuses(path: Path) -> dict[str, str]:
    result = build(load_documents(path)[0])
    assert result.ok, result.error
    return {r.name: r.status for r in result.records}


def test_unchanged_rebuild_runs_no_stage(tmp_path):
    path = _manifest(tmp_path, p95_ms=50)
    first = _statuses(path)
    assert set(first.values()) == {"ran"}
    again = _statuses(path)
    assert set(again.values()) == {"cached"}, again


def test_budget_only_change_reruns_only_validate_and_package(tmp_path):
    path = _manifest(tmp_path, p95_ms=50)
    _statuses(path)
    _manifest(tmp_path, p95_ms=40)
    after = _statuses(path)
    reran = {name for name, status in after.items() if status == "ran"}
    assert reran == {"validate", "package"}, after
