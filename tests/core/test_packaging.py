"""Every Python package folder ships in the wheel: a subpackage missing from pyproject's explicit
list installs fine in editable mode and vanishes from a real install."""

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli there
    import tomli as tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folder_of = {name: ROOT / path for name, path in config["package-dir"].items()}
    found = set()
    for top, folder in folder_of.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            found.add(".".join([top, *rel.parts]) if rel.parts else top)
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
