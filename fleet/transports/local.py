"""The `local` transport: a device is a directory on this machine (demos, tests, the README).

The agent runs in-process (same code the SSH and MQTT devices run, no subprocess), so a local
fleet exercises exactly the activation path a real device does. The device's own `agent.yaml`
wins; without one, the device trusts the fleet's `trust.public_keys`. The fleet's trust chain (`trust.document`) goes with every push as
`incoming/trust-chain.json`, which the agent takes before it looks at the bundle.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from edgeship import artifact
from edgeship.errors import ArtifactError, TransportError
from edgeship.fleet.agent import Agent, digest_hex
from edgeship.fleet.agent_config import CONFIG_NAME, AgentConfig, config_for_root
from edgeship.fleet.device_trust import INCOMING_FILE
from edgeship.fleet.trust_delivery import fleet_chain_bytes
from edgeship.fleet.inventory import Device, Fleet
from edgeship.fleet.transports import register
from edgeship.fleet.transports.writer import part_name, writer_id
from edgeship.fleet.device_info import device_info
from edgeship.fleet.types import DeviceState, PushResult, Result


@register("local")
class LocalTransport:
    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.writer = writer_id()  # uploads of another manager never share our .part file

    def agent(self, device: Device) -> Agent:
        root = Path(device.address or "")
        if not device.address:
            raise TransportError(device.id, "local device has no address (its root directory)")
        if (root / CONFIG_NAME).exists():
            config = config_for_root(root)
        else:
            config = AgentConfig(trusted_keys=list(self.fleet.trusted_keys))
        return Agent(root, config, device_id=device.id)

    def push(self, device: Device, bundle: Path) -> PushResult:
        """Copy the bundle to incoming/<hex>.tar; skip when the device already holds it."""
        bundle = Path(bundle)
        try:
            digest = artifact.bundle_digest(bundle)
        except ArtifactError as err:
            raise TransportError(device.id, str(err)) from None
        agent = self.agent(device)
        hexd = digest_hex(digest)
        try:
            agent.ensure_layout()
            self._stage_trust(agent)
            if (agent.releases / hexd / artifact.SUMS).is_file():
                return PushResult(0, True, device.id, digest)
            target = agent.incoming_path(digest)
            if target.is_file() and target.stat().st_size == bundle.stat().st_size \
                    and artifact.sha256_file(target) == artifact.sha256_file(bundle):
                return PushResult(0, True, device.id, digest)
            part = target.with_name(part_name(hexd, self.writer))
            with open(bundle, "rb") as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(part, target)
            return PushResult(bundle.stat().st_size, False, device.id, digest)
        except OSError as err:
            raise TransportError(device.id, f"push to {agent.root} failed: {err.strerror or err}") from None

    def _stage_trust(self, agent: Agent) -> None:
        data = fleet_chain_bytes(self.fleet)
        if data is None:
            return
        part = agent.incoming / f"{INCOMING_FILE}.{self.writer}.part"
        part.write_bytes(data)
        os.replace(part, agent.incoming / INCOMING_FILE)

    def deliver_trust(self, device: Device, data: bytes) -> Result:
        result = self.agent(device).accept_trust(data)
        result.device_id = device.id
        return result

    def activate(self, device: Device, digest: str) -> Result:
        result = self.agent(device).activate(f"sha256:{digest_hex(digest)}")
        result.device_id = device.id
        return result

    def rollback(self, device: Device) -> Result:
        result = self.agent(device).rollback()
        result.device_id = device.id
        return result

    def status(self, device: Device) -> DeviceState:
        agent = self.agent(device)
        if not agent.root.is_dir():  # never deployed: an empty device, not an offline one (push creates it)
            return DeviceState(device.id, online=True)
        data = agent.status()
        return DeviceState(device.id, online=True, current=data["current"], previous=data["previous"],
                           last_result=data["last_result"], last_seen=time.time(),
                           disk_bytes=data["disk_bytes"], releases=data["releases"], trust=data.get("trust"),
                           device=device_info(agent.root))  # as `agent status` reports it over SSH and MQTT
