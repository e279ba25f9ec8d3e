"""Fleets of real local devices and Rollout manifests for the rollout tests.

A device is a folder driven by the real agent (the `local` transport runs it in-process); devices
chosen to fail get an agent.yaml whose smoke.max_latency_ms is tiny, so their smoke test really
fails on the real onnxruntime timing.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import CONFIG_NAME, AgentConfig, SmokeConfig, config_for_root
from tests.support.bundles import make_bundle, signing_keys

TINY_MS = 0.000001  # no real inference is this fast: the smoke test fails for real


def device_ids(n: int, prefix: str = "dev") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(n)]


def write_local_fleet(tmp: Path, ids: list[str], name: str = "lab", extra_devices: list[dict] | None = None,
                      transports: dict | None = None, folder: Path | None = None) -> Path:
    """A Fleet manifest of local devices under tmp/devices/<id>, trusting the test signing key."""
    _, pub = signing_keys(tmp)
    address = (lambda d: f"devices/{d}") if folder is None else (lambda d: str(tmp / "devices" / d))
    devices = [{"id": d, "target": "host-cpu", "transport": "local", "address": address(d),
                "labels": {"site": "lab"}} for d in ids]
    doc = {"apiVersion": "edgeship/v1", "kind": "Fleet", "metadata": {"name": name},
           "trust": {"public_keys": [str(pub)]}, "devices": devices + list(extra_devices or [])}
    if transports:
        doc["transports"] = transports
    for d in ids:
        (tmp / "devices" / d).mkdir(parents=True, exist_ok=True)
    path = (folder or tmp) / f"fleet-{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def make_failing(tmp: Path, ids: list[str]) -> None:
    """Give these devices an agent config whose absolute latency ceiling no model can meet."""
    _, pub = signing_keys(tmp)
    for d in ids:
        root = tmp / "devices" / d
        config = AgentConfig(trusted_keys=[pub], smoke=SmokeConfig(max_latency_ms=TINY_MS))
        (root / CONFIG_NAME).write_text(yaml.safe_dump(config.to_yaml_dict(relative_to=root)))


def write_rollout(tmp: Path, name: str, fleet: Path, bundle: Path, strategy: dict | None = None,
                  selector: dict | None = None, filename: str | None = None) -> Path:
    doc = {"apiVersion": "edgeship/v1", "kind": "Rollout", "metadata": {"name": name},
           "fleet": str(fleet), "artifact": {"path": str(bundle)}}
    if selector is not None:
        doc["selector"] = selector
    if strategy is not None:
        doc["strategy"] = strategy
    path = tmp / (filename or f"rollout-{name}.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def current_of(tmp: Path, device_id: str) -> str | None:
    root = tmp / "devices" / device_id
    return Agent(root, config_for_root(root) if (root / CONFIG_NAME).exists() else AgentConfig()).status()["current"]


def releases_of(tmp: Path, device_id: str) -> set[str]:
    folder = tmp / "devices" / device_id / "releases"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


__all__ = ["device_ids", "write_local_fleet", "make_failing", "write_rollout", "current_of", "releases_of",
           "make_bundle", "signing_keys", "TINY_MS"]
