"""What a device reports about itself: versions, free disk and memory (birth, heartbeat, status)."""

from __future__ import annotations

import json

from edgeship import __version__
from edgeship.commands.fleet import _device_cells
from edgeship.fleet.bootstrap.wheelhouse import Platform
from edgeship.fleet.device_info import device_info, memory_bytes, selftest
from edgeship.fleet.mqtt import protocol


def test_device_info_has_versions_disk_and_memory(tmp_path):
    info = device_info(tmp_path / "not-yet")  # a root not created yet: its parent's free space
    assert info["agent_version"] == __version__
    assert "onnxruntime" in info["runtimes"] and "numpy" in info["runtimes"]
    assert info["free_bytes"] > 0 and info["mem_total_bytes"] >= info["mem_available_bytes"] > 0


def test_meminfo_parsing(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        2048 kB\nMemFree:  10 kB\nMemAvailable:    1024 kB\n")
    assert memory_bytes(meminfo) == {"mem_total_bytes": 2048 * 1024, "mem_available_bytes": 1024 * 1024}
    assert memory_bytes(tmp_path / "none") == {"mem_total_bytes": None, "mem_available_bytes": None}


def test_selftest_passes_here_and_fails_on_a_bad_agent_yaml(tmp_path):
    assert selftest(tmp_path)["ok"]
    (tmp_path / "agent.yaml").write_text("keep_releases: one\n")
    report = selftest(tmp_path)
    assert not report["ok"] and "keep_releases" in report["problems"][0]


def test_birth_and_heartbeat_carry_the_device_info(tmp_path):
    doc = json.loads(protocol.status_doc("online", device_info(tmp_path)))
    assert doc["state"] == "online" and doc["device"]["agent_version"] == __version__
    assert "device" not in json.loads(protocol.status_doc("offline"))  # the last will stays small


def test_fleet_status_cells():
    agent, room = _device_cells({"agent_version": "0.1.0", "runtimes": {"onnxruntime": "1.20.1", "numpy": "2.1"},
                                 "free_bytes": 12 * 2**30, "mem_available_bytes": 512 * 2**20})
    assert agent == "0.1.0 onnxruntime 1.20.1" and room == "12.0G/512M"
    assert _device_cells(None) == ("-", "-")


def test_wheel_platform_tags_cover_older_glibc():
    tags = Platform("3.11", "aarch64", "2.31").pip_platforms()
    assert tags[0] == "manylinux_2_31_aarch64" and "manylinux_2_17_aarch64" in tags and "manylinux2014_aarch64" in tags
    assert Platform.parse("3.12:x86_64").glibc == "2.17"
