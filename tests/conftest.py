"""Shared test setup: every test gets its own edgeship state dir, so nothing leaks into ~/.cache.

Tests keep models and data in pytest's temp folders, apart from the manifests that name them: that
whole temp tree is allowed as a model/data folder (EDGESHIP_ALLOW_PATHS, see pipelines/containment.py).
The containment itself is tested with the variable cleared (tests/buildflow/test_path_containment.py).
"""

import pytest


@pytest.fixture(autouse=True)
def _edgeship_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("edgeship-home")
    monkeypatch.setenv("EDGESHIP_HOME", str(home))
    monkeypatch.setenv("EDGESHIP_ALLOW_PATHS", str(tmp_path_factory.getbasetemp()))
    return home


from tests.support.postgres import postgres_server, postgres_url, state_store  # noqa: E402,F401  (fixtures)
