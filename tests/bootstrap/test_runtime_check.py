"""What a board needs for its target's artifacts: the runtime each target's backend makes artifacts for,
the extras `fleet wheelhouse` derives from a fleet's boards, and the note `fleet bootstrap` gives when a
board's agent lacks its target's runtime (an Intel board bootstrapped without OpenVINO)."""

from __future__ import annotations

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from pathlib import Path

import pytest

from edgeship.fleet.bootstrap.runtime_check import missing_runtime, target_runtime, wheelhouse_extras
from edgeship.fleet.device_info import RUNTIMES as REPORTED
from edgeship.fleet.inventory import Device
from edgeship.fleet.runtimes import RUNTIMES
from edgeship.fleet.smoke import RUNNERS
from edgeship.targets.profile import profile_files
from edgeship.targets.backends import ARTIFACT_RUNTIMES, BUILTIN

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target, runtime", [("intel-core-ultra-cpu", "openvino"), ("intel-core-ultra-npu", "openvino"),
                                             ("raspberry-pi-5", "litert"), ("rockchip-rk3588", "rknn-toolkit-lite2"),
                                             ("host-cpu", "onnxruntime"), ("no-such-chip", None), (None, None)])
def test_the_runtime_a_targets_artifacts_need(target, runtime):
    assert target_runtime(target) == runtime


def test_every_builtin_backend_and_packaged_profile_has_a_known_runtime():
    assert set(ARTIFACT_RUNTIMES) == set(BUILTIN)
    for name in profile_files():
        assert target_runtime(name) in ARTIFACT_RUNTIMES.values(), name


def test_the_agent_runs_reports_and_installs_the_same_runtimes():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(RUNNERS) == set(RUNTIMES) and "openvino" in RUNNERS
    for runtime in RUNTIMES.values():
        assert set(runtime.distributions) <= set(REPORTED), runtime.name  # devices report what they can run
        if runtime.extra:
            packages = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in extras[runtime.extra]}
            assert packages & set(runtime.distributions), runtime.name


def test_wheelhouse_extras_follow_the_boards_targets():
    boards = [Device("nuc", "intel-core-ultra-npu"), Device("pi", "raspberry-pi-5"), Device("x86", "host-cpu"),
              Device("rk", "rockchip-rk3588")]
    assert wheelhouse_extras(boards) == "agent,litert,openvino-runtime"  # the rknn wheel is Rockchip's, not an extra
    assert wheelhouse_extras([Device("x86", "host-cpu")]) == "agent"


def test_bootstrap_notes_a_board_whose_agent_lacks_its_targets_runtime():
    intel = Device("nuc", "intel-core-ultra-cpu")
    assert missing_runtime(intel, {"runtimes": {"onnxruntime": "1.22.0", "numpy": "2.2"}}) == (
        "intel-core-ultra-cpu releases run on openvino, which this agent lacks: build the wheelhouse with "
        "--extras agent,openvino-runtime and bootstrap --upgrade")
    assert missing_runtime(intel, {"runtimes": {"onnxruntime": "1.22.0", "openvino": "2026.4.1"}}) is None
    assert "pip install rknn-toolkit-lite2 on the board" in missing_runtime(Device("rk", "rockchip-rk3588"), None)
    assert missing_runtime(Device("x86", "host-cpu"), {"runtimes": {"onnxruntime-gpu": "1.22"}}) is None
