import pytest

from .helpers import make_example


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory):
    """The three example workloads, made once per session by their own scripts into a temp dir."""
    root = tmp_path_factory.mktemp("examples")
    return {name: make_example(name, root / name) for name in ("kws", "fraud", "llm")}
