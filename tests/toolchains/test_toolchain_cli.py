"""`edgeship toolchain ls | install | doctor | remove` on the echo toolchain (a real venv, a real worker)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgeship.cli import main
from edgeship.targets.toolchains import registry

from .conftest import ECHO


@pytest.fixture
def cli_toolchains(echo, monkeypatch):
    fresh = replace(ECHO, name="fresh")
    monkeypatch.setattr(registry, "_entry_points", lambda: {"echo": echo, "fresh": fresh})
    return echo, fresh


def test_ls_shows_what_is_installed_and_how_to_install_the_rest(cli_toolchains, capsys):
    assert main(["toolchain", "ls"]) == 0
    out = capsys.readouterr().out
    assert "rknn" in out and "rknn-toolkit2==2.5.0" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(("-", "name"))}
    assert " yes " in lines["echo"] and " no " in lines["fresh"]
    assert "(install: edgeship toolchain install fresh)" in out


def test_install_shows_progress_then_doctor_and_remove(cli_toolchains, capsys):
    assert main(["toolchain", "install", "fresh"]) == 0
    captured = capsys.readouterr()
    assert "creating virtualenv" in captured.err and captured.err.lstrip().startswith("[")
    assert "fresh: installed at" in captured.out
    assert main(["toolchain", "doctor", "fresh"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fresh: ok (python ") and "echo 1.0" in out
    assert main(["toolchain", "remove", "fresh"]) == 0
    assert "removed " in capsys.readouterr().out
    assert main(["toolchain", "doctor", "fresh"]) == 0
    assert "not installed (edgeship toolchain install fresh)" in capsys.readouterr().out


def test_unknown_toolchain_is_a_usage_error(cli_toolchains, capsys):
    assert main(["toolchain", "install", "rknm"]) == 2
    assert "unknown toolchain 'rknm' (did you mean 'rknn'?)" in capsys.readouterr().err
