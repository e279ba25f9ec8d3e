"""Shared test setup: every test gets its own edgeship state dir, so nothing leaks into ~/.cache."""

import pytest


@pytest.fixture(autouse=True)
def _edgeship_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("edgeship-home")
    monkeypatch.setenv("EDGESHIP_HOME", str(home))
    return home
