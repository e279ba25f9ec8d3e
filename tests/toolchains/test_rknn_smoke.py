"""The device smoke test runs a release that names rknn-toolkit-lite2 on the board's NPU.

rknn-toolkit-lite2 has aarch64 wheels only and needs a Rockchip NPU driver, so it cannot run here: the
first test checks the one-line refusal where it is missing (the real situation on this machine); the
second puts a stand-in `rknnlite` module in its place to check what the smoke test hands the runtime
(model path, NCHW layout, one array per input) and that its figures come out."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from edgeship.errors import AgentError
from edgeship.fleet.agent_config import SmokeConfig
from edgeship.fleet.smoke import smoke_test


@pytest.fixture
def release(tmp_path):
    (tmp_path / "bundle.json").write_text(json.dumps({
        "format": 1, "name": "kws", "target": "rockchip-rk3588", "runtime": "rknn-toolkit-lite2",
        "inputs": {"x": {"shape": [1, 3, 8, 8], "dtype": "float32"}}, "budget": {"latency_ms": {"p95": 1000}}}))
    (tmp_path / "model.rknn").write_bytes(b"RKNN model bytes")
    np.savez(tmp_path / "samples.npz", x=np.ones((2, 1, 3, 8, 8), np.float32))
    return tmp_path


def test_missing_runtime_is_one_line(release, monkeypatch):
    monkeypatch.setitem(sys.modules, "rknnlite", None)
    monkeypatch.setitem(sys.modules, "rknnlite.api", None)
    with pytest.raises(AgentError) as err:
        smoke_test(release, SmokeConfig())
    assert err.value.reason == "smoke-failed"
    assert str(err.value) == ("smoke test: this release runs on rknn-toolkit-lite2, which is not installed on this "
                              "device (pip install rknn-toolkit-lite2 on the board)")


def test_the_release_runs_through_rknnlite(release, monkeypatch):
    calls = {}

    class RKNNLite:
        NPU_CORE_AUTO = 0

        def load_rknn(self, path):
            calls["path"] = path
            return 0

        def init_runtime(self, core_mask=None):
            calls["core_mask"] = core_mask
            return 0

        def inference(self, inputs, data_format=None):
            calls.setdefault("shapes", []).append([a.shape for a in inputs])
            calls["layout"] = data_format
            return [np.full((1, 10), 0.5, np.float32)]

    api = types.ModuleType("rknnlite.api")
    api.RKNNLite = RKNNLite
    monkeypatch.setitem(sys.modules, "rknnlite", types.ModuleType("rknnlite"))
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    figures = smoke_test(release, SmokeConfig(samples=2, runs=2))
    assert calls["path"] == str(release / "model.rknn") and calls["layout"] == "nchw"
    assert calls["shapes"][0] == [(1, 3, 8, 8)]
    assert figures["samples"] == 2 and figures["runs"] == 4 and figures["p95_ms"] >= 0
