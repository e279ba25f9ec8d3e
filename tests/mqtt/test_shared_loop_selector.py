"""The shared network loop keeps one selector and changes a client's registration only when it
must: wants to write, reconnected (a new socket, maybe under the closed one's descriptor number),
or went away."""

from __future__ import annotations

import selectors
import socket

from edgeship.fleet.mqtt.client import _sync_registrations

R, RW = selectors.EVENT_READ, selectors.EVENT_READ | selectors.EVENT_WRITE


class _Client:
    """Stands for an MqttClient: the selector only needs a hashable owner."""


def test_registrations_follow_sockets_and_write_interest():
    sel = selectors.DefaultSelector()
    a, b = _Client(), _Client()
    a_sock, a_peer = socket.socketpair()
    b_sock, b_peer = socket.socketpair()
    registered: dict = {}
    try:
        _sync_registrations(sel, registered, {a: (a_sock, R), b: (b_sock, R)})
        assert sel.get_key(a_sock).data is a and sel.get_key(b_sock).events == R
        key = sel.get_key(a_sock)
        _sync_registrations(sel, registered, {a: (a_sock, R), b: (b_sock, R)})
        assert sel.get_key(a_sock) is key  # nothing changed: not registered again
        _sync_registrations(sel, registered, {a: (a_sock, RW), b: (b_sock, R)})
        assert sel.get_key(a_sock).events == RW
        b_peer.send(b"x")
        ready = {k.data for k, mask in sel.select(0) if mask & selectors.EVENT_READ}
        assert ready == {b}

        # a reconnects: its old socket is closed and the new one reuses the descriptor number
        old_fd = a_sock.fileno()
        a_sock.close()
        a_peer.close()
        first, second = socket.socketpair()  # the lowest free descriptors: usually the ones just closed
        a_sock, a_peer = (first, second) if first.fileno() == old_fd else (second, first)
        _sync_registrations(sel, registered, {a: (a_sock, R), b: (b_sock, R)})
        assert sel.get_key(a_sock).data is a and registered[a][0] is a_sock
        a_peer.send(b"y")
        assert a in {k.data for k, mask in sel.select(0) if mask & selectors.EVENT_READ}

        # b disconnects (no socket): it is no longer watched
        _sync_registrations(sel, registered, {a: (a_sock, R)})
        assert b not in registered and set(registered) == {a}
        assert b_sock not in [k.fileobj for k in sel.get_map().values()]
    finally:
        sel.close()
        for s in (a_sock, a_peer, b_sock, b_peer):
            s.close()


def test_a_socket_closed_under_the_loop_is_dropped_not_raised():
    sel = selectors.DefaultSelector()
    c = _Client()
    sock, peer = socket.socketpair()
    sock.close()
    registered: dict = {}
    try:
        _sync_registrations(sel, registered, {c: (sock, R)})
        assert registered == {}
    finally:
        sel.close()
        peer.close()
