"""Toolchain environments for tests.

The `echo` toolchain (no packages, a standard-library worker) is installed once per session into a
temporary cache root. Real vendor toolchains (rknn) are installed into `$EDGESHIP_TOOLCHAIN_CACHE`
(default ~/.cache/edgeship-test-toolchains) and kept between runs: scripts/install-toolchains.sh
makes them in CI as a separate, visible step; a test that finds one missing installs it itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from edgeship.targets.toolchains.env import CACHE_ENV, ToolchainEnv
from edgeship.targets.toolchains.spec import Toolchain

HERE = Path(__file__).resolve().parent
ECHO = Toolchain(name="echo", requirements=(), python="%d.%d" % sys.version_info[:2],
                 worker=str(HERE / "workers" / "echo_worker.py"), description="test toolchain")
STABLE_CACHE = Path.home() / ".cache" / "edgeship-test-toolchains"


@pytest.fixture(scope="session")
def echo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toolchains")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        ToolchainEnv(ECHO).install()
    return root


@pytest.fixture
def echo(echo_root, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(echo_root))
    return ECHO


@pytest.fixture
def vendor_cache(monkeypatch):
    """The cache root for real vendor toolchains: kept between runs on one machine."""
    path = Path(os.environ.get(CACHE_ENV) or STABLE_CACHE)
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


def installed(toolchain: Toolchain) -> Toolchain:
    env = ToolchainEnv(toolchain)
    if not env.installed:
        print(f"\ninstalling toolchain {toolchain.name} into {env.path} (once per machine) ...", file=sys.stderr)
        env.install(progress=lambda line: None)
    return toolchain


@pytest.fixture(scope="session")
def kws_int8(tmp_path_factory):
    """The kws example, built by edgeship up to quantize (static int8 QDQ): float model, QDQ model and
    32 validation samples (.npz, input name -> (N, *shape))."""
    import numpy as np

    from tests.quant.helpers import build, make_example, write_pipeline

    root = tmp_path_factory.mktemp("kws-int8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESHIP_HOME", str(root / "home"))
        example = make_example("kws", root / "kws")
        result = build(write_pipeline(root, example, "kws", name="kws-int8"),
                       stages=("import", "normalize", "optimize", "quantize"))
    assert result.ok, result.error
    ctx = result.ctx
    samples = root / "samples.npz"
    np.savez(samples, **ctx.validation)
    return {"float": Path(ctx.float_model_path), "qdq": Path(ctx.model_path), "samples": samples}
