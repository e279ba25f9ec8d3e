"""One broken manifest per error class: each must give exactly the located line it promises.

Every file in cases/broken/ starts with `# expect: LINE:COL FIELD: MESSAGE (HINT)` (and optionally
`# exit: N`, default 2). The test runs `edgeship validate` in-process and checks that this exact
line (prefixed with the file name) is printed on stderr and that the exit code matches. A few
inputs cannot carry a comment (an empty file, binary data, a 50 MB file, a directory, a missing
file); those are made here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeship.cli import main

BROKEN = sorted((Path(__file__).parent / "cases" / "broken").glob("*.yaml"))
EXPECT = re.compile(rb"^# expect: (\d+):(\d+) (.*)$")
EXIT = re.compile(rb"^# exit: (\d+)$", re.M)


def _expectation(path: Path) -> tuple[int, int, str, int] | None:
    raw = path.read_bytes()
    first = raw.split(b"\n", 1)[0]
    match = EXPECT.match(first)
    if not match:
        return None
    exit_match = EXIT.search(raw)
    return int(match.group(1)), int(match.group(2)), match.group(3).decode(), int(exit_match.group(1)) if exit_match else 2


def run_validate(capsys, *files: str, extra=()) -> tuple[int, list[str], str]:
    code = main(["validate", *extra, *files])
    out = capsys.readouterr()
    return code, out.err.splitlines(), out.out


def test_there_are_at_least_30_broken_manifests():
    commented = [p for p in BROKEN if _expectation(p)]
    assert len(commented) >= 30


@pytest.mark.parametrize("case", [p for p in BROKEN if _expectation(p)], ids=lambda p: p.stem)
def test_broken_manifest_is_reported_where_it_is_wrong(case, in_cases, capsys):
    line, col, rest, exit_code = _expectation(case)
    rel = f"broken/{case.name}"
    code, err_lines, _ = run_validate(capsys, rel)
    expected = f"{rel}:{line}:{col}: {rest}"
    assert expected in err_lines, "\n".join(err_lines)
    assert code == exit_code
    assert not any("Traceback" in l or "internal error" in l for l in err_lines)


def _single_error(err_lines: list[str]) -> str:
    problems = [l for l in err_lines if not re.match(r"^\d+ error", l)]
    assert len(problems) == 1, err_lines
    return problems[0]


def test_zero_byte_file(in_cases, capsys):
    code, err, _ = run_validate(capsys, "broken/empty.yaml")
    assert code == 2
    assert _single_error(err) == "broken/empty.yaml:1:1: <document>: file is empty (a manifest needs apiVersion, kind and metadata)"


def test_binary_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("model.yaml").write_bytes(bytes(range(256)) * 64)
    code, err, _ = run_validate(capsys, "model.yaml")
    assert code == 2
    assert _single_error(err).startswith("model.yaml:1:1: <document>: binary file, not YAML text")


def test_fifty_megabyte_file_is_refused_before_parsing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with open("huge.yaml", "wb") as fh:
        fh.write(b"apiVersion: edgeship/v1\nkind: Fleet\n")
        block = b"# " + b"x" * 1021 + b"\n"
        for _ in range(50 * 1024):
            fh.write(block)
    code, err, _ = run_validate(capsys, "huge.yaml")
    assert code == 2
    line = _single_error(err)
    assert line.startswith("huge.yaml:1:1: <document>: file is 50.0 MB, over the 8 MB manifest size limit")


def test_directory(in_cases, capsys):
    code, err, _ = run_validate(capsys, "broken")
    assert code == 2
    assert _single_error(err).startswith("broken:1:1: <document>: is a directory, not a manifest file")


def test_missing_file(in_cases, capsys):
    code, err, _ = run_validate(capsys, "broken/no-such-file.yaml")
    assert code == 2
    assert _single_error(err) == "broken/no-such-file.yaml:1:1: <document>: file not found (check the path)"


def test_every_error_in_every_file_at_once(in_cases, capsys):
    files = ["broken/unknown-target.yaml", "broken/bad-enum.yaml", "good/fleet.yaml", "broken/duplicate-device.yaml"]
    code, err, out = run_validate(capsys, *files)
    assert code == 2
    problems = [l for l in err if not l.endswith("file(s)")]
    assert [l.split(":")[0] for l in problems] == ["broken/unknown-target.yaml", "broken/bad-enum.yaml", "broken/bad-enum.yaml",
                                                   "broken/duplicate-device.yaml"]
    assert "broken/bad-enum.yaml:4:18: metadata.name: duplicate Pipeline name 'tiny'" in err[1]  # both are named tiny
    assert err[-1] == "4 error(s), 0 warning(s) in 4 file(s)"
    assert "good/fleet.yaml: ok (Fleet bench)" in out


def test_several_errors_in_one_document_are_all_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text(
        "apiVersion: edgeship/v1\n"
        "kind: Pipeline\n"
        "metadata: {name: x}\n"
        "model: {path: missing.onnx, taks: classification}\n"
        "target: host-cpu\n"
        "budget: {latency_ms: {p95: 0}, memory_kb: {peak: -1}}\n"
    )
    code, err, _ = run_validate(capsys, "p.yaml")
    assert code == 2
    assert err[:-1] == [
        "p.yaml:4:15: model.path: model file not found: missing.onnx (paths are relative to the manifest's folder (.))",
        "p.yaml:4:29: model.taks: unknown field 'taks' (did you mean 'task'?)",
        "p.yaml:6:28: budget.latency_ms.p95: must be > 0, got 0",
        "p.yaml:6:50: budget.memory_kb.peak: must be > 0, got -1",
    ]


def test_strict_makes_warnings_fail(in_cases, capsys):
    code, err, _ = run_validate(capsys, "broken/selector-no-match.yaml")
    assert code == 0 and any(": warning: selector:" in l for l in err)
    code, _, _ = run_validate(capsys, "broken/selector-no-match.yaml", extra=["--strict"])
    assert code == 2


def test_json_format(in_cases, capsys):
    import json

    code, _, out = run_validate(capsys, "broken/unknown-stage.yaml", extra=["--format", "json"])
    assert code == 2
    problems = json.loads(out)
    assert problems == [{"file": "broken/unknown-stage.yaml", "line": 7, "col": 29, "path": "stages[2]",
                         "message": "unknown stage 'quantise'", "hint": "did you mean 'quantize'?", "severity": "error"}]


def test_pathological_nesting_does_not_crash_the_process(tmp_path):
    """libyaml's composer recurses in C: 100k nested brackets would overflow the stack (SIGSEGV)."""
    import subprocess
    import sys

    (tmp_path / "deep.yaml").write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    (tmp_path / "dashes.yaml").write_text("- " * 100_000 + "x\n")
    run = subprocess.run([sys.executable, "-m", "edgeship", "validate", "deep.yaml", "dashes.yaml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    # Behaviour, not wording: libyaml's own depth message differs between PyYAML releases.
    lines = run.stderr.splitlines()
    for name, line in zip(("deep.yaml", "dashes.yaml"), lines[:2]):
        assert re.match(rf"{name}:1:\d+: <document>: .*(nesting|depth)", line), line
    assert "Traceback" not in run.stderr
