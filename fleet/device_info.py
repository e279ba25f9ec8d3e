"""What a device says about itself: agent and runtime versions, free disk and memory.

Why: an operator deciding whether a board can take a release (or needs `fleet bootstrap --upgrade`)
needs the agent's version, the runtimes it can smoke-test with, and the room it has, without logging
in. The MQTT service puts this in its birth and heartbeat messages, `agent status` in its JSON, and
`agent selftest` (run by bootstrap before it switches to a new agent) checks it can be gathered and
that every installed runtime imports. Versions are read from package metadata: no runtime is loaded
just to report it.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from functools import lru_cache
from importlib import import_module, metadata
from pathlib import Path

from edgeship import __version__

# distribution name -> module it installs: the runtimes a release's smoke test may need
RUNTIMES = {"onnxruntime": "onnxruntime", "onnxruntime-gpu": "onnxruntime", "ai-edge-litert": "ai_edge_litert",
            "tflite-runtime": "tflite_runtime", "rknn-toolkit-lite2": "rknnlite", "openvino": "openvino"}


@lru_cache(maxsize=1)
def runtime_versions() -> dict[str, str]:
    """Installed runtime distributions and their versions (numpy too: every runtime rides on it).
    Read once per process: an install changes under a running service only by a restart."""
    found = {}
    for dist in (*RUNTIMES, "numpy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> dict[str, int | None]:
    """MemTotal and MemAvailable from /proc/meminfo (None where the kernel does not say)."""
    values: dict[str, int] = {}
    try:
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if key in ("MemTotal", "MemAvailable") and parts and parts[0].isdigit():
                values[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return {"mem_total_bytes": values.get("MemTotal"), "mem_available_bytes": values.get("MemAvailable")}


def free_bytes(root: Path) -> int | None:
    """Free bytes on the file system holding the device root (or its nearest existing parent)."""
    path = Path(root)
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return None


def device_info(root: Path) -> dict:
    return {"agent_version": __version__, "python": platform.python_version(), "arch": platform.machine(),
            "runtimes": dict(runtime_versions()), "free_bytes": free_bytes(root), **memory_bytes()}


def selftest(root: Path) -> dict:
    """Can this install run the agent? Imports the agent and the service, loads the root's config,
    imports every installed runtime, gathers the device info. Never raises: `ok` and `problems` say."""
    problems = []
    for module in ("edgeship.fleet.agent", "edgeship.fleet.mqtt.service"):
        try:
            import_module(module)
        except Exception as err:  # noqa: BLE001 - a broken install shows here, whatever the error
            problems.append(f"import {module}: {type(err).__name__}: {err}")
    try:
        from edgeship.fleet.agent_config import config_for_root

        config_for_root(Path(root))
    except Exception as err:  # noqa: BLE001
        problems.append(f"agent config: {err}")
    info = device_info(root)
    for dist in info["runtimes"]:
        module = RUNTIMES.get(dist)
        if module is None:
            continue
        try:
            if module == "openvino":  # its first import writes a telemetry id unless declined, as the backend does
                from edgeship.openvino_common import opt_out_of_telemetry

                opt_out_of_telemetry()
            import_module(module)
        except Exception as err:  # noqa: BLE001 - e.g. a wheel for another CPU or a missing shared library
            problems.append(f"import {module} ({dist} {info['runtimes'][dist]}): {type(err).__name__}: {err}")
    if not any(d in RUNTIMES for d in info["runtimes"]):
        problems.append("no inference runtime is installed (pip install 'edgeship[agent]')")
    return {"ok": not problems, "problems": problems, **info}


def _selftest(args: argparse.Namespace) -> int:
    report = selftest(Path(args.root))
    print(json.dumps(report, sort_keys=True))
    return 0 if report["ok"] else 1


def add_selftest_parser(agent_sub) -> None:
    p = agent_sub.add_parser("selftest", help="check this install can run the agent; print versions, disk, memory",
                             description="Import the agent, the MQTT service and every installed runtime, load the "
                                         "root's agent.yaml, and print one JSON line (exit 1 when something fails).")
    p.add_argument("--root", required=True, help="the device root")
    p.set_defaults(func=_selftest)
