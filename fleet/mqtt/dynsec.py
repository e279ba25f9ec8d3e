"""mosquitto's dynamic-security plugin configuration for a fleet (`dynamic-security.json`).

Why this and not `use_username_as_clientid`: that option is global, so every connection of the manager
account got the client id of the account, and each new manager process (a second reconcile replica,
`apply`, `fleet status`, the dashboard) knocked the previous one offline. The plugin binds a *client*
(an account) to one client id when asked to: each device account is bound to its device's client id
(`edgeship-device-<id>`), so a device cannot connect under another device's id, while the manager
account is left unbound and every manager process connects with its own random id.

The file holds one client per account (PBKDF2-SHA512 hash, base64 salt and hash), one role per device
(its own topics, literal: mosquitto 2.0's plugin substitutes no `%u` in role ACLs) and one manager role;
anything not granted is denied.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import secrets
from pathlib import Path

from edgeship.fleet.mqtt.topics import DEVICE_READS, DEVICE_WRITES, Topics, device_client_id

PLUGIN_NAME = "mosquitto_dynamic_security.so"
PLUGIN_DIRS = ("/usr/lib/*-linux-gnu", "/usr/lib", "/usr/local/lib", "/usr/lib64", "/opt/homebrew/lib",
               "/usr/local/opt/mosquitto/lib")  # Debian/Ubuntu multiarch first, then upstream builds
MANAGER_ROLE = "edgeship-manager"
DEFAULT_ACL_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                      "unsubscribe": True}


def plugin_path() -> str | None:
    """Where this machine's mosquitto keeps the plugin (the Debian `mosquitto` package ships it), or None."""
    for folder in PLUGIN_DIRS:
        found = sorted(glob.glob(f"{folder}/{PLUGIN_NAME}"))
        if found:
            return found[0]
    return None


def device_role(device_id: str) -> str:
    return f"edgeship-device-{device_id}"


def _acls(reads: list[str], writes: list[str]) -> list[dict]:
    """`read` = subscribe to the filter and receive what matches it; `write` = publish to it."""
    acls = []
    for topic in reads:
        acls += [{"acltype": "subscribePattern", "topic": topic, "priority": 0, "allow": True},
                 {"acltype": "publishClientReceive", "topic": topic, "priority": 0, "allow": True}]
    acls += [{"acltype": "publishClientSend", "topic": topic, "priority": 0, "allow": True} for topic in writes]
    return acls


def device_topics(topics: Topics, device_id: str) -> tuple[list[str], list[str]]:
    """(reads, writes) of one device: its own topics, plus what every device of the fleet may read (the
    manager's status, the fleet's trust chain, the content-addressed fan-out chunks)."""
    reads = [topics.device(device_id, kind) for kind in DEVICE_READS]
    reads += [topics.manager_status(), topics.fleet_trust(), topics.all_chunks()]
    return reads, [topics.device(device_id, kind) for kind in DEVICE_WRITES]


def pbkdf2_sha512(password: str, salt: bytes, iterations: int) -> bytes:
    """The hash both mosquitto's password file (`$7$`) and this plugin store."""
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)


def _client(username: str, password: str, iterations: int, roles: list[str], client_id: str | None) -> dict:
    salt = secrets.token_bytes(12)
    digest = pbkdf2_sha512(password, salt, iterations)
    client = {"username": username, "textname": "", "password": base64.b64encode(digest).decode(),
              "salt": base64.b64encode(salt).decode(), "iterations": iterations,
              "roles": [{"rolename": role} for role in roles]}
    if client_id:
        client["clientid"] = client_id  # the plugin refuses this account under any other client id
    return client


def config(prefix: str, manager_user: str, passwords: dict[str, str], device_ids: list[str],
           iterations: int) -> dict:
    """The plugin's configuration: `passwords` maps every account (manager and devices) to its secret."""
    topics = Topics(prefix)
    devices = sorted(set(device_ids))
    roles = [{"rolename": MANAGER_ROLE, "acls": _acls([f"{prefix}/#"], [f"{prefix}/#"])}]
    roles += [{"rolename": device_role(d), "acls": _acls(*device_topics(topics, d))} for d in devices]
    clients = [_client(manager_user, passwords[manager_user], iterations, [MANAGER_ROLE], None)]
    clients += [_client(d, passwords[d], iterations, [device_role(d)], device_client_id(d)) for d in devices]
    return {"defaultACLAccess": DEFAULT_ACL_ACCESS, "clients": clients, "groups": [], "roles": roles}


def broker_conf_lines(config_file: Path, plugin: str | None) -> list[str]:
    return [f"plugin {plugin or '/usr/lib/' + PLUGIN_NAME}",
            f"plugin_opt_config_file {Path(config_file).resolve()}"]
