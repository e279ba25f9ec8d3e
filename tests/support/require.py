"""Missing components: a skip on a developer's machine, a failure in CI (CI=true)."""

import os
import shutil

import pytest


def _missing(message: str):
    """A skip on a developer's machine; in CI a missing component fails: CI must provide it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_binary(name: str, *candidates: str) -> str:
    for cand in (name, *candidates):
        path = shutil.which(cand)
        if path:
            return path
    _missing(f"{name} is not installed (apt-get install the package that provides it)")


def require_file(path, why: str) -> None:
    """A file a package installs (a broker plugin, ...)."""
    if not os.path.isfile(path):
        _missing(f"{path} is missing: {why}")


def require_dir(path, why: str) -> None:
    """A folder the platform provides (Linux's /proc, ...)."""
    if not os.path.isdir(path):
        _missing(f"{path} is missing: {why}")


def require_root(why: str) -> None:
    """Tests that change file owners or groups (CI runs as root)."""
    if os.geteuid() != 0:
        _missing(f"needs root: {why}")


def require_module(name: str):
    """Import a test dependency: a skip on a developer's machine, a failure in CI (CI=true)."""
    if os.environ.get("CI", "").lower() == "true":
        import importlib

        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is a test dependency: pip install -e '.[test]'")
