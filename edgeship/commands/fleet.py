"""`edgeship fleet ...`: fleet-wide views and broker security material.

    edgeship fleet status FLEET.yaml [-o json]         online/offline, release, last seen per device
    edgeship fleet credentials FLEET.yaml --out DIR    broker accounts, per-device client ids and ACLs, secrets
    edgeship fleet certs --out DIR [--host H ...]      a CA and a broker certificate for mqtts://
    edgeship fleet wheelhouse FLEET.yaml               the agent's wheels for the boards' platforms
    edgeship fleet bootstrap FLEET.yaml [--upgrade]    install the agent on boards over SSH
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from edgeship.errors import UsageError


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    secs = max(0, time.time() - ts)
    if secs < 90:
        return f"{secs:.0f}s ago"
    if secs < 5400:
        return f"{secs / 60:.0f}m ago"
    if secs < 172800:
        return f"{secs / 3600:.0f}h ago"
    return f"{secs / 86400:.0f}d ago"


def _size(n) -> str:
    return "?" if not isinstance(n, (int, float)) else f"{n / 2**30:.1f}G" if n >= 2**30 else f"{n / 2**20:.0f}M"


def _device_cells(info: dict | None) -> tuple[str, str]:
    """AGENT (`0.1.0 onnxruntime 1.20.1`) and FREE DISK/MEM (`12.3G/1.5G`) from a device's device_info."""
    if not info:
        return "-", "-"
    runtimes = " ".join(f"{k} {v}" for k, v in sorted((info.get("runtimes") or {}).items()) if k != "numpy")
    agent = " ".join(x for x in (str(info.get("agent_version") or "?"), runtimes) if x)
    return agent, f"{_size(info.get('free_bytes'))}/{_size(info.get('mem_available_bytes'))}"


def _status(args) -> int:
    from edgeship import api
    from edgeship.commands.rollout import _label
    from edgeship.output import print_document, wants

    status = api.fleet_status(Path(args.fleet))
    if args.json:  # the legacy form: the transports' own reports, as a list
        print(json.dumps(status._raw, indent=2, sort_keys=True, default=str))
        return 0
    if wants(args, "json"):
        print_document("FleetStatus", **status.to_dict())
        return 0
    table = [("DEVICE", "TRANSPORT", "STATE", "RELEASE", "LAST SEEN", "AGENT", "FREE DISK/MEM", "LAST RESULT")]
    for d, r in zip(status.devices, status._raw):
        last = r.get("last_result") or {}
        result = "" if not last else ("ok" if last.get("ok") else f"failed: {last.get('reason')}"
                                      + (f": {last.get('message')}" if last.get("message") else ""))
        if r.get("error"):
            result = r["error"]
        state = d.reason if d.state == "unreachable" else d.state
        seen = "-" if r.get("error") else _ago(d.last_seen)  # unknown, not "never"
        table.append((d.device, d.transport, state, _label(d.release), seen, *_device_cells(r.get("device")), result))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    if status.releases:
        print("releases: " + ", ".join(f"{_label(c.release) if c.release.digest else 'nothing'}: {c.devices} "
                                       f"device{'s' if c.devices != 1 else ''}" for c in status.releases))
    return 0


def _credentials(args) -> int:
    from edgeship.fleet.inventory import load_fleet
    from edgeship.fleet.mqtt.credentials import write_credentials

    fleet = load_fleet(Path(args.fleet))
    devices = [d.id for d in fleet.devices if d.transport == "mqtt"] if not args.all else [d.id for d in fleet.devices]
    if not devices:
        raise UsageError(f"{args.fleet}: no device uses the mqtt transport (use --all to include every device)")
    prefix = fleet.transport_settings("mqtt").get("prefix", "edgeship")
    manager = fleet.transport_settings("mqtt").get("username") or "manager"
    try:
        files = write_credentials(Path(args.out), devices, prefix=prefix, manager_user=manager)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {files.dynsec_file} ({len(files.users)} accounts), {files.password_file} and {files.acl_file} "
          f"(for other brokers), secrets in {files.secrets_dir}/ (0600; give each device only its own)")
    print(f"mosquitto.conf:  append {files.broker_conf.resolve()} (the dynamic-security plugin: each device bound to\n"
          f"                 its own client id, any number of manager processes); restart mosquitto after a re-run")
    if not files.plugin:
        print("warning: mosquitto_dynamic_security.so not found on this machine: fix the `plugin` line of "
              f"{files.broker_conf.name} to where the broker's mosquitto installed it")
    return 0


def _certs(args) -> int:
    from edgeship.fleet.mqtt.certs import generate

    try:
        files = generate(Path(args.out), hosts=args.host or None, days=args.days)
    except FileExistsError as err:
        raise UsageError(str(err)) from None
    print(f"wrote CA {files.ca_cert} (+ {files.ca_key.name}, keep it offline) and broker certificate "
          f"{files.server_cert} / {files.server_key.name} for {', '.join(args.host or ['127.0.0.1', 'localhost'])}")
    print(f"mosquitto.conf:  cafile {files.ca_cert.resolve()}\n                 certfile {files.server_cert.resolve()}\n"
          f"                 keyfile {files.server_key.resolve()}")
    return 0


def register(sub) -> None:
    fleet = sub.add_parser("fleet", help="fleet status, MQTT credentials and TLS certificates")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", metavar="ACTION")
    fleet.set_defaults(func=lambda args: (fleet.print_help(), 2)[1])

    p = fleet_sub.add_parser("status", help="online/offline, release and last-seen per device")
    p.add_argument("fleet", help="Fleet manifest (YAML)")
    p.add_argument("--json", action="store_true", help="the legacy JSON list (prefer -o json)")
    from edgeship.output import add_output_option

    add_output_option(p)
    p.set_defaults(func=_status)

    p = fleet_sub.add_parser("credentials", help="broker accounts: each device only its own client id and topics")
    p.add_argument("fleet", help="Fleet manifest (YAML)")
    p.add_argument("--out", required=True, help="output folder (dynamic-security.json, broker.conf, passwd, acl, secrets/<user>.password)")
    p.add_argument("--all", action="store_true", help="include devices of every transport, not only mqtt")
    p.set_defaults(func=_credentials)

    p = fleet_sub.add_parser("certs", help="a CA and a broker certificate for mqtts://")
    p.add_argument("--out", required=True, help="output folder (ca.pem, ca.key, server.pem, server.key)")
    p.add_argument("--host", action="append", help="host name or IP the broker is reached by; repeatable")
    p.add_argument("--days", type=int, default=825, help="server certificate validity (default 825)")
    p.set_defaults(func=_certs)

    from edgeship.fleet.bootstrap.cli import add_parsers  # wheelhouse, bootstrap: putting the agent on boards

    add_parsers(fleet_sub)
