"""Artifacts over MQTT: content-defined delta transfer, corrupt chunks, HTTP URLs, MQTT 3.1.1."""

from __future__ import annotations

import functools
import http.server
import ssl
import threading

import pytest

from edgeship import artifact
from edgeship.fleet.agent import Agent
from edgeship.fleet.agent_config import AgentConfig
from edgeship.fleet.mqtt import certs
from tests.mqtt.conftest import device, root_of
from tests.mqtt.models import mlp_bundle
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration


def test_retrained_last_layer_moves_under_a_quarter_of_the_bytes(tmp_path, mosquitto_broker, make_service,
                                                                   make_transport):
    broker = mosquitto_broker()
    make_service(broker.url, "cam-01").start().client.wait_connected(10)
    transport = make_transport(broker.url)
    v1, v2 = mlp_bundle(tmp_path, "v1"), mlp_bundle(tmp_path, "v2")
    first = transport.push(device("cam-01"), v1)
    assert transport.activate(device("cam-01"), first.digest).ok
    second = transport.push(device("cam-01"), v2)
    size = v2.stat().st_size
    fraction = second.bytes_sent / size
    print(f"\nv1 -> v2 (retrained head): {second.bytes_sent} of {size} bytes on the wire ({fraction:.1%})")
    assert 0 < fraction < 0.25
    result = transport.activate(device("cam-01"), second.digest)
    assert result.ok, result


def test_release_installed_without_mqtt_is_reused(tmp_path, mosquitto_broker, make_service, make_transport, keys):
    """A device that got v1 another way (SSH, local) still fetches only the chunks v2 changes."""
    v1, v2 = mlp_bundle(tmp_path, "v1"), mlp_bundle(tmp_path, "v2")
    agent = Agent(root_of(tmp_path, "cam-02"), AgentConfig(trusted_keys=[keys[1]]), device_id="cam-02")
    assert agent.activate(v1).ok
    broker = mosquitto_broker()
    make_service(broker.url, "cam-02").start().client.wait_connected(10)
    transport = make_transport(broker.url)
    pushed = transport.push(device("cam-02"), v2)
    assert 0 < pushed.bytes_sent < 0.25 * v2.stat().st_size


def test_corrupt_chunk_is_detected_and_fetched_again(tmp_path, mosquitto_broker, make_service, make_transport):
    broker = mosquitto_broker()
    make_service(broker.url, "cam-01").start().client.wait_connected(10)
    transport = make_transport(broker.url, chunk_kb=64)
    bundle = make_bundle(tmp_path, "tiny", seed=4, pad_kb=256)
    spoiled: list[str] = []

    def corrupt_first(device_id, chunk_id, data):
        if not spoiled:
            spoiled.append(chunk_id)
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    transport.manager.server.tamper = corrupt_first
    pushed = transport.push(device("cam-01"), bundle)
    result = transport.activate(device("cam-01"), pushed.digest)
    assert result.ok, result
    sends = [c for d, c in transport.manager.server.sent_log if c == spoiled[0]]
    assert len(sends) == 2  # sent, found corrupt by the device, asked for and sent again
    reported = transport.manager.reported["cam-01"]
    assert reported["current"] == pushed.digest


def test_device_that_has_the_digest_downloads_nothing(tmp_path, mosquitto_broker, make_service, make_transport):
    broker = mosquitto_broker()
    make_service(broker.url, "cam-01").start().client.wait_connected(10)
    transport = make_transport(broker.url)
    bundle = make_bundle(tmp_path, "tiny", seed=5)
    digest = transport.push(device("cam-01"), bundle).digest
    assert transport.activate(device("cam-01"), digest).ok
    sent = len(transport.manager.server.sent_log)
    # publish desired directly (bypassing push's own skip), the device must still fetch nothing
    seq = transport.manager.publish_desired("cam-01", "activate", digest, transport.manager.recipe_for(bundle))
    doc = transport.manager.wait_for_seq("cam-01", seq)
    assert doc["last_result"]["ok"] and len(transport.manager.server.sent_log) == sent
    assert transport.manager.server.bytes_sent["cam-01"] > 0 and doc["transfer"]["bytes_fetched"] == 0


def _serve_files(root, tls=None):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        """Static files, with single `bytes=N-` ranges (what a resumed download asks for)."""

        def log_message(self, *args):
            pass

        def do_GET(self):
            wanted = self.headers.get("Range", "")
            path = root / self.path.lstrip("/")
            if not wanted.startswith("bytes=") or not path.is_file():
                return super().do_GET()
            data = path.read_bytes()[int(wanted[6:].rstrip("-")):]
            self.send_response(206)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.server_cert, tls.server_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server, base = _serve_files(root)
    yield root, base
    server.shutdown()


def test_desired_with_an_http_url(tmp_path, mosquitto_broker, make_service, make_transport, http_root):
    www, base = http_root
    bundle = make_bundle(tmp_path, "tiny", seed=6)
    (www / "tiny.tar").write_bytes(bundle.read_bytes())
    (www / "other.tar").write_bytes(make_bundle(tmp_path, "tiny", seed=7).read_bytes())
    broker = mosquitto_broker()
    make_service(broker.url, "cam-01").start().client.wait_connected(10)
    manager = make_transport(broker.url).manager
    digest = artifact.bundle_digest(bundle)

    seq = manager.publish_desired("cam-01", "activate", digest, url=f"{base}/other.tar")
    doc = manager.wait_for_seq("cam-01", seq)
    assert not doc["last_result"]["ok"] and doc["last_result"]["reason"] == "tampered"

    seq = manager.publish_desired("cam-01", "activate", digest, url=f"{base}/tiny.tar")
    doc = manager.wait_for_seq("cam-01", seq)
    assert doc["last_result"]["ok"], doc["last_result"]
    assert doc["current"] == digest and not manager.server.sent_log


def test_mqtt_311(tmp_path, mosquitto_broker, make_service, make_transport):
    broker = mosquitto_broker()
    svc = make_service(broker.url, "cam-01", protocol_version="3.1.1").start()
    svc.client.wait_connected(10)
    transport = make_transport(broker.url, protocol_version="3.1.1")
    digest = transport.push(device("cam-01"), make_bundle(tmp_path, "tiny", seed=8, pad_kb=300)).digest
    assert transport.activate(device("cam-01"), digest).ok
    assert transport.manager.reported["cam-01"]["protocol"] == "3.1.1"


def test_desired_with_an_https_url_checked_against_the_ca(tmp_path, mosquitto_broker, make_service, make_transport):
    tls = certs.generate(tmp_path / "tls")
    www = tmp_path / "www-tls"
    www.mkdir()
    bundle = make_bundle(tmp_path, "tiny", seed=9)
    (www / "tiny.tar").write_bytes(bundle.read_bytes())
    server, base = _serve_files(www, tls)
    try:
        broker = mosquitto_broker()
        make_service(broker.url, "cam-01", ca=str(tls.ca_cert)).start().client.wait_connected(10)
        make_service(broker.url, "cam-02").start().client.wait_connected(10)  # trusts only the system CAs
        manager = make_transport(broker.url).manager
        digest = artifact.bundle_digest(bundle)
        ok = manager.publish_desired("cam-01", "activate", digest, url=f"{base}/tiny.tar")
        refused = manager.publish_desired("cam-02", "activate", digest, url=f"{base}/tiny.tar")
        assert manager.wait_for_seq("cam-01", ok)["current"] == digest
        doc = manager.wait_for_seq("cam-02", refused)
        assert doc["last_result"]["reason"] == "unreachable" and "CERTIFICATE_VERIFY_FAILED" in doc["last_result"]["message"]
        assert doc["current"] is None
    finally:
        server.shutdown()


def test_chunks_are_kept_only_for_releases_the_device_keeps(tmp_path, mosquitto_broker, make_service, make_transport):
    from edgeship.fleet.mqtt.chunks import ChunkStore

    broker = mosquitto_broker()
    make_service(broker.url, "cam-01", keep_releases=2).start().client.wait_connected(10)
    transport = make_transport(broker.url, chunk_kb=16)
    recipes = []
    for seed in (71, 72, 73):
        bundle = make_bundle(tmp_path, "tiny", seed=seed, pad_kb=100)
        digest = transport.push(device("cam-01"), bundle).digest
        assert transport.activate(device("cam-01"), digest).ok
        recipes.append(transport.manager.recipe_for(bundle))
    store = ChunkStore(root_of(tmp_path, "cam-01") / "chunks")
    kept = set(recipes[1].ids()) | set(recipes[2].ids())
    assert store.ids() == kept  # the first release was pruned by the agent, its own chunks with it
    assert not (root_of(tmp_path, "cam-01") / "recipes" / f"{recipes[0].digest.split(':')[1]}.json").exists()


def test_http_download_resumes_a_partial_file(tmp_path, mosquitto_broker, make_service, make_transport, http_root):
    www, base = http_root
    bundle = make_bundle(tmp_path, "tiny", seed=10, pad_kb=300)
    data = bundle.read_bytes()
    (www / "tiny.tar").write_bytes(data)
    digest = artifact.bundle_digest(bundle)
    broker = mosquitto_broker()
    svc = make_service(broker.url, "cam-01")
    part = svc.agent.incoming_path(digest).with_name(svc.agent.incoming_path(digest).name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data[:100_000])  # what an interrupted download left behind
    svc.start().client.wait_connected(10)
    manager = make_transport(broker.url).manager
    doc = manager.wait_for_seq("cam-01", manager.publish_desired("cam-01", "activate", digest, url=f"{base}/tiny.tar"))
    assert doc["last_result"]["ok"], doc["last_result"]
    assert doc["transfer"]["bytes_fetched"] == len(data) - 100_000
