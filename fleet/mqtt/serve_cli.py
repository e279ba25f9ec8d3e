"""`edgeship agent serve`: the long-running device service over MQTT (hooked into `edgeship agent`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from edgeship.errors import UsageError


def add_serve_parser(agent_sub) -> None:
    p = agent_sub.add_parser("serve", help="run the MQTT device service: converge to the retained desired state",
                             description="Connect to the broker, follow this device's retained desired state, "
                                         "fetch releases in chunks, activate them with the agent and report.")
    p.add_argument("--broker", required=True, help="mqtt://host:1883 or mqtts://host:8883")
    p.add_argument("--device-id", required=True, help="this device's id (also its MQTT username)")
    p.add_argument("--root", required=True, help="the device root (releases/, current, chunks/, agent.yaml)")
    p.add_argument("--config", help="agent config file (default: ROOT/agent.yaml)")
    p.add_argument("--prefix", default="edgeship", help="topic prefix (default: edgeship)")
    p.add_argument("--username", help="MQTT username (default: the device id when a password is given)")
    p.add_argument("--password-file", help="file holding the MQTT password (or set EDGESHIP_MQTT_PASSWORD)")
    p.add_argument("--ca", help="CA certificate (PEM) the broker's certificate must chain to (mqtts://)")
    p.add_argument("--protocol", choices=["auto", "5", "3.1.1"], default="auto", help="MQTT protocol version")
    p.add_argument("--window", type=int, default=4, help="chunks requested at once (default 4)")
    p.add_argument("--request-timeout", type=float, default=20.0, help="seconds before re-requesting a chunk")
    p.add_argument("--max-backoff", type=float, default=30.0, help="longest reconnect delay in seconds")
    p.add_argument("--heartbeat", type=float, default=30.0,
                   help="seconds between `online` refreshes, the most `last seen` can lag (default 30)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log each desired state, transfer, activation and refusal (with its reason) on stderr")
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from edgeship.fleet.agent import Agent
    from edgeship.fleet.agent_config import config_for_root
    from edgeship.fleet.mqtt.service import DeviceService, Ticker
    from edgeship.fleet.mqtt.topics import valid_device_id
    from edgeship.fleet.sdnotify import Notifier

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.heartbeat <= 0:
        raise UsageError("--heartbeat must be > 0 seconds")
    if not valid_device_id(args.device_id):
        raise UsageError(f"--device-id {args.device_id!r}: use lowercase letters, digits, '.', '_' and '-'")
    password = os.environ.get("EDGESHIP_MQTT_PASSWORD")
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().strip()
        except OSError as err:
            raise UsageError(f"{args.password_file}: cannot read password file: {err.strerror}") from None
    username = args.username or (args.device_id if password else None)
    root = Path(args.root)
    agent = Agent(root, config_for_root(root, Path(args.config) if args.config else None), device_id=args.device_id)
    agent.ensure_layout()
    try:
        service = DeviceService(args.device_id, root, args.broker, agent=agent, username=username, password=password,
                                ca=args.ca, prefix=args.prefix, window=args.window,
                                request_timeout_s=args.request_timeout, protocol_version=args.protocol,
                                max_backoff=args.max_backoff, heartbeat_s=args.heartbeat)
    except ValueError as err:
        raise UsageError(str(err)) from None
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    service.start()
    ticker = Ticker([service], interval=1.0)
    print(f"edgeship agent serve: {args.device_id} -> {args.broker} (prefix {args.prefix})", flush=True)
    for note in agent.config.warnings() if agent.config.source else []:
        print(f"edgeship: warning: {note}", flush=True)
    systemd = Notifier()
    systemd.ready(f"serving {args.device_id} -> {args.broker}")
    pinged = threading.Event()
    pinged.set()
    while not done.wait(0.5):
        if pinged.is_set():  # the ping runs on the worker: a stuck worker stops it, and systemd restarts us
            pinged.clear()
            service.client.worker.submit(lambda: (systemd.watchdog(), pinged.set()))
        if service.client.refused and service.client._stopped:
            print(f"edgeship: error: {args.device_id}: broker refused the connection: {service.client.refused}",
                  flush=True)
            ticker.stop()
            service.client.stop(clean=False)
            return 1
    systemd.stopping()
    ticker.stop()
    service.stop()
    return 0
