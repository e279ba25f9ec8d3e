"""`edgeship agent serve -v` is a device log an operator can read: each desired state, transfer,
activation and refusal (with its reason), from the real CLI against a real mosquitto."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from edgeship import artifact
from tests.mqtt.conftest import device
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration


def test_agent_serve_verbose_logs_what_the_device_does(tmp_path, mosquitto_broker, make_transport, keys):
    broker = mosquitto_broker()
    root = tmp_path / "cam-01"
    init = subprocess.run([sys.executable, "-m", "edgeship", "agent", "init", "--root", str(root), "--trust", str(keys[1])],
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        serve = subprocess.Popen([sys.executable, "-m", "edgeship", "agent", "serve", "--broker", broker.url,
                                  "--device-id", "cam-01", "--root", str(root), "-v"],
                                 stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        transport = make_transport(broker.url, offline_grace_s=30)
        dev = device("cam-01")
        for _ in range(100):  # wait (bounded) for the device's birth
            if transport.status(dev).online:
                break
            time.sleep(0.1)
        good = make_bundle(tmp_path, "tiny", seed=1)
        assert transport.activate(dev, transport.push(dev, good).digest).ok
        other_priv = tmp_path / "other" / "signing.key"
        artifact.generate_keypair(other_priv, other_priv.with_suffix(".pub"))
        stranger = make_bundle(tmp_path, "tiny", seed=2, key=other_priv)
        refused = transport.activate(dev, transport.push(dev, stranger).digest)
        assert not refused.ok and refused.reason == "untrusted-key"
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
    text = log_path.read_text()
    good_short, bad_short = artifact.short(artifact.bundle_digest(good)), artifact.short(artifact.bundle_digest(stranger))
    assert "cam-01: connected to the broker" in text
    assert "desired state seq" in text and f"stage {good_short}" in text and f"activate {good_short}" in text
    assert f"transfer of {good_short} complete:" in text and "byte(s) in" in text
    assert f"activate {good_short}: activated" in text
    assert f"activate {bad_short} REFUSED: untrusted-key:" in text, text
