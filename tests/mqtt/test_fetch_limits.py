"""What a device fetches is bounded by the signed size before a byte is written, and what it
activates never goes below a release it has run. Real mosquitto, real HTTP server, real agents."""

from __future__ import annotations

import http.server
import threading

import pytest

from edgeship import artifact
from tests.mqtt.conftest import device, root_of
from tests.mqtt.test_transfer import http_root  # noqa: F401  (fixture)
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration
SERVED_AT_MOST = 64 << 20  # the endless server gives up by itself after this much (bounded test)


class _Endless(http.server.BaseHTTPRequestHandler):
    sent = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()  # no Content-Length: the body just goes on
        block = b"\0" * 65536
        try:
            while type(self).sent < SERVED_AT_MOST:
                self.wfile.write(block)
                type(self).sent += len(block)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def endless_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/kws.tar"
    server.shutdown()


def test_an_endless_url_is_cut_at_the_signed_size(tmp_path, mosquitto_broker, make_service, make_transport,
                                                  endless_url):
    broker = mosquitto_broker()
    svc = make_service(broker.url, "cam-01").start()
    svc.client.wait_connected(10)
    manager = make_transport(broker.url).manager
    bundle = make_bundle(tmp_path, "tiny", seed=5)
    digest, size = artifact.bundle_digest(bundle), bundle.stat().st_size
    doc = manager.wait_for_seq("cam-01", manager.publish_desired("cam-01", "activate", digest, url=endless_url,
                                                                 size=size))
    result = doc["last_result"]
    assert not result["ok"] and result["reason"] == "oversize", result
    assert not list((root_of(tmp_path, "cam-01") / "incoming").glob("*.part"))


def test_a_signed_size_over_max_bundle_mb_is_refused_before_fetching(tmp_path, mosquitto_broker, make_service,
                                                                      make_transport, endless_url):
    broker = mosquitto_broker()
    make_service(broker.url, "cam-01").start().client.wait_connected(10)
    manager = make_transport(broker.url).manager
    _Endless.sent = 0
    digest = artifact.bundle_digest(make_bundle(tmp_path, "tiny", seed=6))
    doc = manager.wait_for_seq("cam-01", manager.publish_desired("cam-01", "activate", digest, url=endless_url,
                                                                 size=3 << 30))
    assert doc["last_result"]["reason"] == "oversize" and "max_bundle_mb" in doc["last_result"]["message"]
    assert _Endless.sent == 0  # not one request was made


def test_a_signed_activate_of_an_older_release_does_not_move_the_device_back(tmp_path, mosquitto_broker,
                                                                              make_service, make_transport):
    broker = mosquitto_broker()
    svc = make_service(broker.url, "cam-01").start()
    svc.client.wait_connected(10)
    transport = make_transport(broker.url)
    old, new = make_bundle(tmp_path, "tiny", seed=1, release=1), make_bundle(tmp_path, "tiny", seed=2, release=2)
    older = make_bundle(tmp_path, "tiny", seed=0, release=0)
    for bundle in (old, new):
        digest = transport.push(device("cam-01"), bundle).digest
        assert transport.activate(device("cam-01"), digest).ok
    for bundle in (old, older):  # kept on the device / never seen by it
        digest = transport.push(device("cam-01"), bundle).digest
        result = transport.activate(device("cam-01"), digest)
        assert not result.ok and result.reason == "downgrade", result
    assert svc.agent.status()["current"] == artifact.bundle_digest(new)
    assert transport.rollback(device("cam-01")).ok  # the signed, explicit rollback is the way back
    assert svc.agent.status()["current"] == artifact.bundle_digest(old)


def test_an_activate_pointing_at_an_old_url_does_not_move_the_device_back(tmp_path, mosquitto_broker, make_service,
                                                                           make_transport, http_root):
    www, base = http_root
    old = make_bundle(tmp_path, "tiny", seed=1, release=1)
    (www / "old.tar").write_bytes(old.read_bytes())
    broker = mosquitto_broker()
    svc = make_service(broker.url, "cam-01").start()
    svc.client.wait_connected(10)
    transport = make_transport(broker.url)
    new = transport.push(device("cam-01"), make_bundle(tmp_path, "tiny", seed=2, release=2)).digest
    assert transport.activate(device("cam-01"), new).ok
    manager = transport.manager
    doc = manager.wait_for_seq("cam-01", manager.publish_desired("cam-01", "activate", artifact.bundle_digest(old),
                                                                 url=f"{base}/old.tar", size=old.stat().st_size))
    assert doc["last_result"]["reason"] == "downgrade" and doc["current"] == new
