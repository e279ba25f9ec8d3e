"""edgeship: declarative compile-and-ship for edge inference chips."""

from pathlib import Path as _Path

__version__ = "0.1.0"


def _find_subpackages_in_source_checkout() -> None:
    """Run from a source checkout without installing: pyproject maps the folders beside this one
    (pipelines/, stages/, targets/, fleet/) to `edgeship.*` only at install time, so let the import
    system look for `edgeship.<sub>` beside this package too. An installed copy never matches."""
    root = _Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "fleet" / "__init__.py").is_file():
        __path__.append(str(root))  # noqa: F821 - a package's own __path__


_find_subpackages_in_source_checkout()

_API = ("build", "compare", "plan", "apply", "resume", "pause", "abort", "rollback", "status", "fleet_status",
        "rollouts", "history")


def __getattr__(name: str):
    """`edgeship.plan(...)` etc.: the API (edgeship.api) loads on first use, so `import edgeship` stays cheap."""
    if name in _API:
        from edgeship import api

        return getattr(api, name)
    if name in ("api", "events", "results", "errors"):
        import importlib

        return importlib.import_module(f"edgeship.{name}")
    raise AttributeError(f"module 'edgeship' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "api", "events", "results", "errors"])
