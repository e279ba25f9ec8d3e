"""MQTT 5 first, 3.1.1 when the broker refuses v5: a proxy in front of mosquitto plays a 3.1.1-only broker."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.mqtt.conftest import device
from tests.support.bundles import make_bundle

pytestmark = pytest.mark.integration


def _read_packet(sock: socket.socket) -> bytes:
    head = sock.recv(1)
    length, shift, raw = 0, 0, b""
    while True:
        b = sock.recv(1)
        raw += b
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return head + raw + body


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class V311OnlyProxy:
    """Refuses MQTT 5 CONNECTs the way a 3.1.1 broker does (CONNACK rc 1), forwards everything else."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refused_v5 = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        first = _read_packet(conn)
        body = first[first.index(b"MQTT") + 4:]
        if body[0] == 5:
            self.refused_v5 += 1
            conn.sendall(b"\x20\x02\x00\x01")
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        up.sendall(first)
        threading.Thread(target=_pump, args=(up, conn), daemon=True).start()
        _pump(conn, up)

    def close(self) -> None:
        self.listener.close()


def test_auto_falls_back_to_311(tmp_path, mosquitto_broker, make_service, make_transport):
    broker = mosquitto_broker()
    proxy = V311OnlyProxy(broker.port)
    url = f"mqtt://127.0.0.1:{proxy.port}"
    try:
        svc = make_service(url, "cam-01").start()
        svc.client.wait_connected(20)
        transport = make_transport(url)
        digest = transport.push(device("cam-01"), make_bundle(tmp_path, "tiny", seed=41)).digest
        assert transport.activate(device("cam-01"), digest).ok
        assert transport.manager.reported["cam-01"]["protocol"] == "3.1.1"
        assert not svc.client.v5 and not transport.manager.client.v5
        assert proxy.refused_v5 >= 2
    finally:
        proxy.close()
