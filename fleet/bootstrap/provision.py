"""The agent.yaml a bootstrapped board gets: the fleet's trusted keys, the device's limits and target.

One function builds the config dict, so whoever adds a field to the agent's config (target binding,
trust documents) changes it here only. Limits come from the device's `options` (keep_releases,
max_bundle_mb, min_free_mb); the dict is checked by the agent's own parser before it leaves.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from edgeship.fleet.agent_config import AgentConfig, parse_config
from edgeship.fleet.inventory import Device, Fleet

LIMIT_OPTIONS = ("keep_releases", "max_bundle_mb", "min_free_mb")


def trust_names(fleet: Fleet) -> list[tuple[Path, str]]:
    """(local public key, its path in the device root) for each key the fleet trusts."""
    return [(Path(key), f"trust/{i:02d}-{Path(key).name}") for i, key in enumerate(fleet.trusted_keys)]


def agent_config(fleet: Fleet, device: Device) -> dict:
    """The agent.yaml mapping for this device (key paths relative to the device root)."""
    config = AgentConfig().to_yaml_dict()
    config["trusted_keys"] = [name for _, name in trust_names(fleet)]
    options = device.options or {}
    for key in LIMIT_OPTIONS:
        if options.get(key) is not None:
            config[key] = options[key]
    if "target" in config:  # the agent binds releases to its target once its config knows the field
        config["target"] = device.target
    parse_config(config, PurePosixPath(f"{device.id}:agent.yaml"))  # refuse a bad limit here, not on the board
    return config
