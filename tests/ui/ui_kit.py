"""A real local fleet mid-rollout, a running `edgeship ui`, and artifacts built for several targets,
for the dashboard tests.

The fleet is local devices in a temp dir driven by the real agent; the rollout's gate soak keeps
`edgeship apply` (a real subprocess) running for a few seconds per wave, so the dashboard sees it
move. Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from edgeship.pipelines.manifest import load_documents
from edgeship.pipelines.runner import Progress, build
from tests.buildflow.models import tiny_mlp
from tests.rollout.rollout_kit import device_ids, write_local_fleet, write_rollout

TARGETS = ("host-cpu", "nvidia-jetson-orin-nano", "amd-kria-k26-dpu")  # in-process backends only
ROOT = Path(__file__).resolve().parents[2]


def build_for_targets(tmp: Path, name: str = "kws") -> dict[str, Path]:
    """Build a tiny pipeline with the real runner for each target; target -> artifact folder.
    Signed with the test key (EDGESHIP_SIGNING_KEY), which the test fleet trusts."""
    tiny_mlp(tmp / "mlp.onnx", batch=1)
    doc = {"apiVersion": "edgeship/v1", "kind": "Pipeline", "metadata": {"name": name},
           "model": {"path": "mlp.onnx", "inputs": {"x": [1, 8]}}, "target": "host-cpu",
           "budget": {"latency_ms": {"p95": 50}, "memory_kb": {"peak": 4096}},
           "quantization": {"mode": "static"}}
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = {}
    for target in TARGETS:
        result = build(load_documents(path)[0], target=target, progress=Progress(quiet=True))
        assert result.ok, result.error
        out[target] = Path(result.artifact["dir"])
    return out


def fleet_mid_rollout_setup(tmp: Path, devices: int = 8, soak_s: float = 4.0) -> tuple[Path, Path]:
    """(fleet manifest, rollout manifest): `devices` local devices, canary 1 then 50% then 100%,
    each wave soaked `soak_s` seconds before its gate. Set EDGESHIP_SIGNING_KEY to
    `signing_keys(tmp)[0]` first (the fleet trusts that key)."""
    artifacts = build_for_targets(tmp)
    ids = device_ids(devices, "edge")
    fleet = write_local_fleet(tmp, ids, name="lab")
    doc = yaml.safe_load(fleet.read_text())
    for i, device in enumerate(doc["devices"]):
        device["labels"] = {"site": "lab" if i % 2 else "plant", "ring": "canary" if i == 0 else "main"}
    fleet.write_text(yaml.safe_dump(doc, sort_keys=False))
    rollout = write_rollout(tmp, "kws-v1", fleet, artifacts["host-cpu"],
                            {"canary": {"count": 1}, "waves": [50, 100], "max_unavailable": 2,
                             "gate": {"min_success_ratio": 1.0, "soak_s": soak_s}})
    return fleet, rollout


def start_apply(rollout: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeship", "apply", str(rollout)], cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def start_ui(fleet: Path, log: Path, extra: list[str] | None = None, env: dict | None = None,
             timeout: float = 60) -> tuple[subprocess.Popen, str, str]:
    """Start `edgeship ui --port 0`; (process, base URL, the line saying so) once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "edgeship", "ui", "--port", "0", "--interval", "0.5", "--status-interval", "0.5",
                             "--fleet", str(fleet), *(extra or [])], cwd=ROOT, env=env or dict(os.environ),
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(r"serving on (http://\S+?/)", line)
        if match:
            return proc, match.group(1), line
    proc.kill()
    raise AssertionError(f"edgeship ui did not start: {log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
