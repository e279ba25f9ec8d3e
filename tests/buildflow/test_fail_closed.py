"""A built-in stage that cannot be imported fails the build (it used to be skipped, shipping no budget check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .models import pipeline_doc, tiny_mlp, write_manifest

# Runs the CLI with one built-in stage module made unimportable, as a broken install would leave it.
BROKEN_STAGE = """
import sys
sys.modules["edgeship.stages." + sys.argv[1]] = None  # `import` now raises ModuleNotFoundError
from edgeship.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _run(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BROKEN_STAGE, module, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def _manifest(tmp_path: Path) -> Path:
    tiny_mlp(tmp_path / "models" / "mlp.onnx")
    return write_manifest(tmp_path / "p.yaml", pipeline_doc("models/mlp.onnx", {"x": [1, 8]}))


def test_missing_builtin_validate_stage_fails_the_build(tmp_path):
    manifest = _manifest(tmp_path)
    proc = _run(tmp_path, "validate", "build", str(manifest), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "validate" in errors[0] and "cannot be loaded" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "p.tar").exists()  # nothing signed, nothing shipped


def test_stages_command_reports_the_broken_builtin(tmp_path):
    proc = _run(tmp_path, "validate", "stages")
    assert proc.returncode == 1
    assert "validate" in proc.stdout and "BROKEN" in proc.stdout


def test_failed_plugin_only_warns_until_a_pipeline_lists_it(monkeypatch):
    from edgeship.errors import BuildError
    from edgeship.stages import registry

    class BrokenEntryPoint:
        name, value = "my-plugin", "nowhere.module:Stage"

        def load(self):
            raise ImportError("No module named 'nowhere'")

    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [BrokenEntryPoint()])
    try:
        registry.reload()
        assert any("my-plugin" in w for w in registry.load_warnings())
        assert registry.get("validate")  # the built-ins still load
        try:
            registry.get("my-plugin")
        except BuildError as err:
            assert "failed to load" in str(err)
        else:
            raise AssertionError("a pipeline listing the broken plugin must fail")
    finally:
        monkeypatch.undo()
        registry.reload()
