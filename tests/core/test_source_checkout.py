"""A source checkout runs without installing: `python -m edgeship` from the repo finds the subpackages
that pyproject maps from pipelines/, stages/, targets/ and fleet/ (and pytest's `pythonpath = ["."]`
relies on the same thing when the installed copy is not an editable one)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Drop whatever install of edgeship this interpreter has (an editable finder or a site-packages copy),
# so only the checkout on sys.path can answer.
WITHOUT_INSTALL = f"""
import sys, runpy
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path[:] = [p for p in sys.path if not __import__("os").path.isdir(p + "/edgeship")]
sys.path.insert(0, {str(ROOT)!r})
sys.argv = ["edgeship", "targets"]
runpy.run_module("edgeship", run_name="__main__")
"""


def test_python_m_edgeship_runs_from_a_source_checkout(tmp_path):
    run = subprocess.run([sys.executable, "-c", WITHOUT_INSTALL], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "host-cpu" in run.stdout


def test_checkout_subpackages_resolve_to_the_mapped_folders():
    code = WITHOUT_INSTALL.replace('sys.argv = ["edgeship", "targets"]\nrunpy.run_module("edgeship", run_name="__main__")',
                                   "import edgeship.fleet.agent as a, edgeship.stages.registry as r; print(a.__file__); print(r.__file__)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    agent, registry = run.stdout.split()
    assert Path(agent) == ROOT / "fleet" / "agent.py"
    assert Path(registry) == ROOT / "stages" / "registry.py"
