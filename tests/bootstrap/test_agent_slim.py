"""The device install is slim: the agent's entry points never import the build side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgeship.cli import _missing_extra

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
BUILD_SIDE = ("onnx", "fabric", "paramiko", "invoke", "jsonschema")

IMPORT_AGENT = r"""
import json, sys
import edgeship.fleet.agent, edgeship.fleet.mqtt.service, edgeship.fleet.mqtt.serve_cli, edgeship.fleet.device_info
from edgeship.cli import main
codes = [main(["agent", "status", "--root", sys.argv[1], "--compact"]),
         main(["agent", "selftest", "--root", sys.argv[1]])]
print(json.dumps({"codes": codes, "modules": sorted(m.split(".")[0] for m in sys.modules)}))
"""


def test_agent_entry_points_import_no_build_side_module(tmp_path):
    proc = subprocess.run([sys.executable, "-c", IMPORT_AGENT, str(tmp_path / "root")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0, 0]
    loaded = set(report["modules"])
    assert not loaded & set(BUILD_SIDE), f"the agent imported {sorted(loaded & set(BUILD_SIDE))}"
    assert "yaml" in loaded  # agent.yaml is YAML: pyyaml stays in the core (about 2 MB)


def test_pyproject_core_is_the_agent_and_full_is_the_rest():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for heavy in ("onnx>", "fabric", "jsonschema", "onnxruntime"):
        assert heavy not in core
    assert any(d.startswith("onnxruntime") for d in extras["agent"])
    assert {d.split(">")[0] for d in extras["full"]} >= {"onnx", "onnxruntime", "jsonschema", "fabric"}
    assert "edgeship[full]" in extras["test"]


def test_a_build_command_on_a_device_install_says_what_to_install():
    err = ModuleNotFoundError("No module named 'onnx'", name="onnx")
    assert "pip install 'edgeship[full]'" in _missing_extra(err)
    assert "edgeship[agent]" in _missing_extra(ModuleNotFoundError("x", name="onnxruntime"))
    assert _missing_extra(ModuleNotFoundError("x", name="not_ours")) == ""


def test_cli_without_the_full_install_prints_one_line(tmp_path):
    """A slim install running `edgeship targets` (the catalog needs jsonschema): one line naming the
    extra, exit 2, no traceback."""
    code = "import sys; sys.modules['jsonschema'] = None\nfrom edgeship.cli import main; sys.exit(main(['targets']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "pip install 'edgeship[full]'" in proc.stderr
