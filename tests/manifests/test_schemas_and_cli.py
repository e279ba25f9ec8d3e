"""The shipped JSON Schemas, `edgeship schema`, `edgeship validate` as a real process, and packaging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from edgeship.cli import main
from edgeship.pipelines.manifest import KINDS, load_schema

MINE = ("Pipeline", "Fleet", "Rollout")


def _objects(schema, path=""):
    """Every sub-schema that declares `properties`, with a readable location."""
    if isinstance(schema, dict):
        if "properties" in schema:
            yield path or "/", schema
        for key, value in schema.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from _objects(value, f"{path}[{i}]")


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft_2020_12(kind):
    schema = load_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("kind", MINE)
def test_every_object_is_closed_and_every_field_described(kind):
    for where, obj in _objects(load_schema(kind)):
        assert obj.get("additionalProperties") is False, f"{kind} {where}: additionalProperties must be false"
        for name, prop in obj["properties"].items():
            assert prop.get("description"), f"{kind} {where}/{name}: no description"


@pytest.mark.parametrize("kind", MINE)
def test_declared_defaults_are_valid_values(kind):
    count = 0
    for where, obj in _objects(load_schema(kind)):
        for name, prop in obj["properties"].items():
            if "default" in prop:
                count += 1
                check = {k: v for k, v in prop.items() if k != "default"}
                jsonschema.Draft202012Validator(check).validate(prop["default"])
    assert count >= 3


def test_schema_command_prints_json(capsys):
    assert main(["schema", "pipeline"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == load_schema("Pipeline")
    assert main(["schema", "--list"]) == 0
    assert capsys.readouterr().out.split() == list(KINDS)


def test_schema_command_unknown_kind(capsys):
    assert main(["schema", "Fleets"]) == 2
    assert capsys.readouterr().err.strip() == "edgeship: error: unknown kind 'Fleets' (did you mean 'Fleet'?)"


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["EDGESHIP_HOME"] = os.environ["EDGESHIP_HOME"]
    return env


def test_validate_as_a_process(cases_dir):
    run = subprocess.run(
        [sys.executable, "-m", "edgeship", "validate", "broken/bomb.yaml", "broken/garbage.yaml", "good/fleet.yaml"],
        cwd=cases_dir, capture_output=True, text=True, env=_clean_env(), timeout=120,
    )
    assert run.returncode == 2
    lines = run.stderr.splitlines()
    assert lines[0].startswith("broken/bomb.yaml:6:4: <document>: aliases expand to more than")
    assert lines[1].startswith("broken/garbage.yaml:5:7: <document>: invalid YAML:")
    assert lines[2] == "2 error(s), 0 warning(s) in 3 file(s)"
    assert "Traceback" not in run.stderr
    assert run.stdout == "good/fleet.yaml: ok (Fleet bench)\n"


def test_validate_clean_process_exits_0(cases_dir):
    run = subprocess.run(
        [sys.executable, "-m", "edgeship", "validate", "good/pipeline.yaml", "good/fleet.yaml", "good/rollout.yaml"],
        cwd=cases_dir, capture_output=True, text=True, env=_clean_env(), timeout=120,
    )
    assert (run.returncode, run.stderr) == (0, "")
    assert len(run.stdout.splitlines()) == 3


def test_no_bare_top_level_packages_are_installed(tmp_path):
    """The folders install as edgeship.* subpackages only: `import stages` must fail outside the repo."""
    code = (
        "import importlib, sys\n"
        "for name in ('stages', 'fleet', 'pipelines', 'targets'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    sys.exit(f'bare module {name} importable')\n"
        "import edgeship.stages, edgeship.fleet, edgeship.pipelines.manifest, edgeship.targets\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env=_clean_env(), timeout=120)
    assert run.returncode == 0, run.stderr or run.stdout
    run = subprocess.run([sys.executable, "-c", "import stages"], cwd=tmp_path, capture_output=True, text=True,
                         env=_clean_env(), timeout=60)
    assert run.returncode != 0 and "ModuleNotFoundError" in run.stderr


def test_schemas_ship_inside_the_package():
    import edgeship.pipelines

    folder = Path(edgeship.pipelines.__file__).parent / "schemas"
    assert {p.name for p in folder.glob("*.schema.json")} >= {
        "pipeline.schema.json", "fleet.schema.json", "rollout.schema.json", "target.schema.json"}


def _field_paths(schema, prefix=""):
    for name, prop in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        yield path
        yield from _field_paths(prop, path + ".")
        items = prop.get("items")
        if isinstance(items, dict):
            yield from _field_paths(items, path + "[].")


@pytest.mark.parametrize("kind", MINE)
def test_reference_doc_lists_every_field(kind):
    doc = (Path(__file__).resolve().parents[2] / "docs" / "manifests.md").read_text()
    missing = [p for p in _field_paths(load_schema(kind)) if f"`{p}`" not in doc]
    assert not missing, f"docs/manifests.md lacks {kind} fields: {missing}"
