"""The agent.yaml a device gets (bootstrap, and the SSH transport's first contact): the fleet's trusted
keys, the device's limits, and with a trust chain its first root and the device's target.

One function builds the config dict, so whoever adds a field to the agent's config (target binding,
trust documents) changes it here only. Limits come from the device's `options` (keep_releases,
max_bundle_mb, min_free_mb); the dict is checked by the agent's own parser before it leaves.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from edgeship.fleet.agent_config import AgentConfig, parse_config
from edgeship.fleet.inventory import Device, Fleet
from edgeship.fleet.trust_delivery import first_root_pems

LIMIT_OPTIONS = ("keep_releases", "max_bundle_mb", "min_free_mb")


def trust_names(fleet: Fleet) -> list[tuple[Path, str]]:
    """(local public key, its path in the device root) for each key the fleet trusts."""
    return [(Path(key), f"trust/{i:02d}-{Path(key).name}") for i, key in enumerate(fleet.trusted_keys)]


def device_files(fleet: Fleet, device: Device) -> tuple[dict, dict[str, bytes]]:
    """The agent.yaml mapping for this device and the key files it names (paths relative to the
    device root). When the fleet has a trust chain, its first root (keys + threshold) and the
    device's target are provisioned too: the device then walks the chain from there."""
    files = {name: key.read_bytes() for key, name in trust_names(fleet)}
    config = AgentConfig().to_yaml_dict()
    config["trusted_keys"] = list(files)
    options = device.options or {}
    for key in LIMIT_OPTIONS:
        if options.get(key) is not None:
            config[key] = options[key]
    roots = first_root_pems(fleet)
    if roots is not None:
        root_names = [f"trust/root-{i:02d}.pub" for i in range(len(roots[0]))]
        files.update(zip(root_names, roots[0]))
        config["trust_root"] = {"keys": root_names, "threshold": roots[1]}
        config["target"] = device.target
    parse_config(config, PurePosixPath(f"{device.id}:agent.yaml"))  # refuse a bad limit here, not on the board
    return config, files
