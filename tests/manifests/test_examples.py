"""Every manifest under examples/ validates clean, as it would in a fresh clone (but broken.yaml,
whose errors the README shows: that output is checked against the README itself).

Example models and data are generated files (examples/<workload>/make_model.py), so the examples
are copied to a temp dir and each copied make_model.py is run there (every --variant it offers)
before validating: a pipeline whose model is not produced that way fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeship.artifact import generate_keypair
from edgeship.cli import main
from edgeship.pipelines.manifest import check_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
README = EXAMPLES.parent / "README.md"
MANIFESTS = sorted(p.relative_to(EXAMPLES) for p in EXAMPLES.rglob("*.yaml")
                   if "devices" not in p.parts and p.name != "broken.yaml")


def _variants(script: Path) -> list[list[str]]:
    match = re.search(r'"--variant".*?choices=\[([^\]]*)\]', script.read_text(), re.S)
    if not match:
        return [[]]
    return [["--variant", v.strip().strip("'\"")] for v in match.group(1).split(",") if v.strip()]


@pytest.fixture(scope="module")
def examples_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("examples") / "examples"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns("__pycache__", "devices", "keys"))
    for script in sorted(root.glob("*/make_model.py")):
        for args in _variants(script):
            run = subprocess.run([sys.executable, str(script), *args], cwd=script.parent,
                                 capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, f"{script.parent.name}/make_model.py {' '.join(args)}: {run.stderr[-2000:]}"
    if not (root / "keys" / "signing.pub").exists():  # made by the quickstart, git-ignored
        generate_keypair(root / "keys" / "signing.key")
    return root


def test_there_is_one_example_of_each_kind(examples_copy):
    kinds = set()
    for rel in MANIFESTS:
        docs, _ = check_file(examples_copy / rel)
        kinds |= {d.kind for d in docs}
    assert kinds >= {"Pipeline", "Target", "Fleet", "Rollout"}


@pytest.mark.parametrize("rel", MANIFESTS, ids=str)
def test_example_validates_clean(rel, examples_copy, monkeypatch, capsys):
    monkeypatch.chdir(examples_copy.parent)
    code = main(["validate", f"examples/{rel}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert ": error" not in out.err and "Traceback" not in out.err
    assert out.out.startswith(f"examples/{rel}: ok (")


def _readme_session(command: str) -> list[str]:
    """The lines the README shows after `$ COMMAND` in a code block, up to the block's end."""
    lines = README.read_text().splitlines()
    start = lines.index(f"$ {command}") + 1
    end = lines.index("```", start)
    return lines[start:end]


def test_readme_broken_example_prints_what_the_readme_shows(examples_copy):
    command = "edgeship validate examples/kws/broken.yaml; echo $?"
    shown = _readme_session(command)
    run = subprocess.run([sys.executable, "-m", "edgeship", "validate", "examples/kws/broken.yaml"], cwd=examples_copy.parent,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert run.stdout.splitlines() + [str(run.returncode)] == shown
