"""With no identity_file and no password, the SSH transport authenticates as `ssh` does: the SSH
agent, then the default keys in ~/.ssh. Host keys stay verified against known_hosts (real sshd)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import yaml

from edgeship.errors import TransportError
from edgeship.fleet.inventory import load_fleet
from edgeship.fleet.transports import close_transports, get_transport
from tests.support.bundles import make_bundle, signing_keys
from tests.support.require import require_binary
from tests.support.sshd import SshdFarm

pytestmark = pytest.mark.integration


def _fleet(tmp_path, farm, name: str, **ssh):
    _, pub = signing_keys(tmp_path)
    doc = farm.fleet_document(trust=[pub], **ssh)
    doc["transports"]["ssh"].pop("identity_file")  # the example fleet's default: nothing named
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_fleet(path)


def _status(fleet):
    dev = fleet.devices[0]
    try:
        return get_transport(fleet, dev).status(dev)
    finally:
        close_transports(fleet)


def test_default_identity_is_the_agent_then_the_home_keys(tmp_path, monkeypatch):
    agent_bin = require_binary("ssh-agent")
    add_bin = require_binary("ssh-add")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with SshdFarm(tmp_path / "sshd", count=1) as farm:
        # nothing to offer: a clear refusal, never a prompt or a traceback
        state = _status(_fleet(tmp_path, farm, "none"))
        assert not state.online and "authentication" in state.last_result["message"]

        # 1. the SSH agent holds the key
        sock = tmp_path / "agent.sock"
        agent = subprocess.Popen([agent_bin, "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if sock.exists():
                    break
                time.sleep(0.05)
            env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
            subprocess.run([add_bin, "-q", str(farm.client_key)], env=env, check=True, capture_output=True)
            monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
            fleet = _fleet(tmp_path, farm, "agent")
            dev = fleet.devices[0]
            try:
                pushed = get_transport(fleet, dev).push(dev, make_bundle(tmp_path, "kws", seed=1))
                assert pushed.bytes_sent > 0
                assert get_transport(fleet, dev).activate(dev, pushed.digest).ok
            finally:
                close_transports(fleet)
        finally:
            agent.terminate()
            agent.wait(10)
        monkeypatch.delenv("SSH_AUTH_SOCK")

        # 2. no agent: the default key file in ~/.ssh
        shutil.copyfile(farm.client_key, home / ".ssh" / "id_ed25519")
        os.chmod(home / ".ssh" / "id_ed25519", 0o600)
        state = _status(_fleet(tmp_path, farm, "home"))
        assert state.online and state.current is not None

        # host keys are still verified with the default identity
        farm.known_hosts.write_text("")
        with pytest.raises(TransportError, match="not in"):
            _status(_fleet(tmp_path, farm, "unknown-host"))
