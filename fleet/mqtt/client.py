"""A small wrapper around paho-mqtt 2.x that keeps to the library's known pitfalls.

- `CallbackAPIVersion.VERSION2`; MQTT 5 first (session expiry, message expiry, response topic),
  falling back to 3.1.1 when the broker refuses the protocol version.
- Subscriptions are re-made in every `on_connect` (they do not survive a clean reconnect).
- Callbacks only enqueue: messages and connection events are handled on a worker thread, so long
  work never blocks the network loop and publishing never happens under the client's lock.
- Reconnects with exponential backoff, either with paho's own loop thread (`loop_start`) or, for
  many simulated devices in one process, on a `SharedLoop` that drives many clients from one thread.
"""

from __future__ import annotations

import functools
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeship.errors import TransportError

log = logging.getLogger("edgeship.mqtt")

_BAD_CREDENTIALS = {"Bad user name or password", "Not authorized", "Bad username or password"}


@functools.lru_cache(maxsize=4096)
def _levels(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("/"))


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT subscription matching, as paho's topic_matches_sub (which builds a matcher object on
    every call: for every handler of every message, a busy manager's largest single cost).
    `+` is one level, `#` the rest (the parent level included); wildcards in the first level do
    not match `$` topics."""
    wanted = _levels(pattern)
    levels = topic.split("/")
    if topic.startswith("$") and wanted[0] in ("+", "#"):
        return False
    for i, part in enumerate(wanted):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(levels) == len(wanted)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> "BrokerAddress":
        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parsed.hostname:
            raise ValueError(f"broker URL must look like mqtt://host:1883 or mqtts://host:8883, got {url!r}")
        tls = parsed.scheme in ("mqtts", "ssl")
        return cls(parsed.hostname, parsed.port or (8883 if tls else 1883), tls)


@dataclass
class Incoming:
    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation: bytes | None = None


class Worker:
    """One thread running queued jobs in order. Several clients may share one worker."""

    def __init__(self, name: str = "edgeship-mqtt-worker"):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args) -> None:
        self._jobs.put((fn, args))

    def _run(self) -> None:
        while True:
            fn, args = self._jobs.get()
            if fn is None:
                return
            try:
                fn(*args)
            except Exception:  # a handler bug must not kill the worker for every other device
                log.exception("mqtt handler failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._jobs.put((None, ()))
        self._thread.join(timeout)


class SharedLoop:
    """Drive many paho clients from one thread with a selector (no thread per client)."""

    def __init__(self, name: str = "edgeship-mqtt-loop"):
        self._clients: list["MqttClient"] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wake(self, *_args) -> None:
        """A client has data to send: wake the selector (only the loop thread writes to sockets)."""
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def add(self, client: "MqttClient") -> None:
        with self._lock:
            if client not in self._clients:
                self._clients.append(client)

    def remove(self, client: "MqttClient") -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def _run(self) -> None:
        """One selector for the loop's life: a client's socket is registered once and changed only
        when it wants to write or reconnects (rebuilding it for every client on every pass was most
        of a device host's own CPU)."""
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        registered: dict[MqttClient, tuple[object, int]] = {}  # client -> (socket, events)
        last_misc = 0.0
        try:
            while not self._stop.is_set():
                with self._lock:
                    clients = list(self._clients)
                now = time.monotonic()
                wanted = {}
                for c in clients:
                    sock = c.paho.socket()
                    if sock is None:
                        c._maybe_reconnect(now)
                        continue
                    wanted[c] = (sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.paho.want_write() else 0))
                _sync_registrations(sel, registered, wanted)
                if not registered:
                    time.sleep(0.05)
                    continue
                for key, mask in sel.select(timeout=0.05):
                    client = key.data
                    if client is None:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                        continue
                    if mask & selectors.EVENT_READ:
                        client.paho.loop_read()
                    if mask & selectors.EVENT_WRITE and client.paho.socket() is not None:
                        client.paho.loop_write()
                if now - last_misc >= 0.5:
                    last_misc = now
                    for c in clients:
                        if c.paho.socket() is not None:
                            c.paho.loop_misc()
        finally:
            sel.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _sync_registrations(sel: selectors.BaseSelector, registered: dict, wanted: dict) -> None:
    """Make the selector watch exactly `wanted` (client -> (socket, events)). Stale sockets (closed
    by a disconnect, replaced by a reconnect) go first, so a new socket that reuses a closed one's
    descriptor number registers cleanly."""
    for client, (sock, _events) in list(registered.items()):
        if client not in wanted or wanted[client][0] is not sock:
            del registered[client]
            try:
                sel.unregister(sock)
            except (KeyError, ValueError, OSError):
                pass
    for client, (sock, events) in wanted.items():
        known = registered.get(client)
        if known is not None and known[1] == events:
            continue
        try:
            if known is None:
                sel.register(sock, events, client)
            else:
                sel.modify(sock, events, client)
            registered[client] = (sock, events)
        except (KeyError, ValueError, OSError):
            registered.pop(client, None)  # closed under us: picked up again on the next pass


class MqttClient:
    """One MQTT connection with a stable client id, a will, and handlers run on a worker thread."""

    def __init__(self, url: str, client_id: str | None = None, *, username: str | None = None,
                 password: str | None = None, ca: str | None = None, persistent: bool = False,
                 session_expiry_s: int = 7 * 24 * 3600, keepalive: int = 30, protocol: str = "auto",
                 will: tuple[str, bytes] | None = None, worker: Worker | None = None,
                 loop: SharedLoop | None = None, min_backoff: float = 0.5, max_backoff: float = 30.0,
                 label: str | None = None):
        self.address = BrokerAddress.parse(url)
        self.client_id = client_id or f"edgeship-{uuid.uuid4().hex[:12]}"
        self.label = label or self.client_id
        self.username, self.password, self.ca = username, password, ca
        self.persistent, self.session_expiry_s, self.keepalive = persistent, session_expiry_s, keepalive
        self.protocol = protocol
        self.will = will
        self._own_worker = worker is None
        self.worker = worker or Worker(f"mqtt-worker-{self.label}")
        self.loop = loop
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self._backoff = min_backoff
        self._next_attempt = 0.0
        self.subscriptions: dict[str, int] = {}
        self.handlers: list[tuple[str, Callable[[Incoming], None]]] = []
        self.on_connected: list[Callable[[bool], None]] = []
        self.connected = threading.Event()
        self.refused: str | None = None
        self.connects = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._stopped = False
        self._fully_stopped = False
        self.paho = self._make_client(paho.MQTTv5 if protocol in ("auto", "5") else paho.MQTTv311)

    # --- setup --------------------------------------------------------------------------------

    @property
    def v5(self) -> bool:
        return self.paho.protocol == paho.MQTTv5

    def _make_client(self, version: int) -> paho.Client:
        kwargs = {"callback_api_version": CallbackAPIVersion.VERSION2, "client_id": self.client_id,
                  "protocol": version, "reconnect_on_failure": self.loop is None}
        if version != paho.MQTTv5:
            kwargs["clean_session"] = not self.persistent
        c = paho.Client(**kwargs)
        if self.username:
            c.username_pw_set(self.username, self.password)
        if self.address.tls:
            c.tls_set(ca_certs=self.ca, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if self.will:
            c.will_set(self.will[0], self.will[1], qos=1, retain=True)
        c.reconnect_delay_set(min_delay=max(1, int(self.min_backoff)), max_delay=int(self.max_backoff))
        c.max_inflight_messages_set(50)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        if self.loop is not None:  # never let paho write from the publishing thread (see SharedLoop)
            c.on_socket_register_write = self.loop.wake
        return c

    def subscribe(self, topic: str, handler: Callable[[Incoming], None], qos: int = 1) -> None:
        """Register a subscription (made now if connected, and again on every reconnect)."""
        self.subscriptions[topic] = qos
        self.handlers.append((topic, handler))
        if self.connected.is_set():
            self.paho.subscribe(topic, qos)

    def add_handler(self, pattern: str, handler: Callable[[Incoming], None]) -> None:
        """Route messages matching `pattern` to `handler` without subscribing to it (for topics
        subscribed one by one with `subscribe_topics`)."""
        self.handlers.append((pattern, handler))

    def subscribe_topics(self, topics: list[str], qos: int = 1) -> None:
        """Subscribe to several concrete topics in one SUBSCRIBE (kept across reconnects until
        `unsubscribe_topics`); their messages go to the handler whose pattern matches."""
        new = [t for t in topics if t not in self.subscriptions]
        for topic in new:
            self.subscriptions[topic] = qos
        if new and self.connected.is_set():
            self.paho.subscribe([(t, qos) for t in new])

    def unsubscribe_topics(self, topics: list[str]) -> None:
        gone = [t for t in topics if self.subscriptions.pop(t, None) is not None]
        if gone and self.connected.is_set():
            self.paho.unsubscribe(gone)

    # --- connection ---------------------------------------------------------------------------

    def _connect_properties(self) -> Properties | None:
        if not self.v5:
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s if self.persistent else 0
        return props

    def start(self) -> "MqttClient":
        """Begin connecting in the background; reconnects forever with backoff until `stop()`."""
        kwargs = {"clean_start": not self.persistent, "properties": self._connect_properties()} if self.v5 else {}
        if self.loop is None:
            self.paho.connect_async(self.address.host, self.address.port, self.keepalive, **kwargs)
            self.paho.loop_start()
        else:
            self._connect_kwargs = kwargs
            self.loop.add(self)
        return self

    def _maybe_reconnect(self, now: float) -> None:
        """SharedLoop mode: (re)connect when due, doubling the delay after each failure."""
        if self._stopped or now < self._next_attempt:
            return
        try:
            self.paho.connect(self.address.host, self.address.port, self.keepalive, **self._connect_kwargs)
            self._backoff = self.min_backoff
        except (OSError, ssl.SSLError):
            self._next_attempt = now + self._backoff
            self._backoff = min(self._backoff * 2, self.max_backoff)

    def wait_connected(self, timeout: float) -> None:
        """Block until connected; raise TransportError if refused or not connected in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.refused:
                raise TransportError(self.label, f"broker refused the connection: {self.refused}")
            if self.connected.wait(0.05):
                return
        raise TransportError(self.label, f"no connection to {self.address.host}:{self.address.port} within {timeout:.0f}s")

    def stop(self, clean: bool = True) -> None:
        """Disconnect (clean: no last will) and stop the loop and worker."""
        if self._stopped and not self.connected.is_set() and self._fully_stopped:
            return
        self._stopped = True
        try:
            if clean:
                self.paho.disconnect()
                if self.loop is not None:  # the loop thread sends the DISCONNECT and closes the socket
                    deadline = time.monotonic() + 2
                    while self.paho.socket() is not None and time.monotonic() < deadline:
                        time.sleep(0.01)
        finally:
            self.connected.clear()
            self._fully_stopped = True
            if self.loop is None:
                self.paho.loop_stop()
            else:
                self.loop.remove(self)
                if self.paho.socket() is not None:
                    self.paho.socket().close()
            if self._own_worker:
                self.worker.stop()

    # --- paho callbacks: short, they only enqueue ------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            text = str(reason_code)
            if self.protocol == "auto" and self.v5 and "Unsupported protocol version" in text:
                self.protocol = "3.1.1"  # once: later refusals of this old client must not trigger it again
                client.disconnect()
                self.worker.submit(self._fall_back_to_311)
                return
            self.refused = text
            log.warning("%s: broker refused the connection: %s", self.label, text)
            if text in _BAD_CREDENTIALS:  # retrying with the same secret cannot succeed: stop hammering
                self._stopped = True
                client.disconnect()
            return
        self.refused = None
        self.connects += 1
        session_present = bool(getattr(flags, "session_present", False))
        for topic, qos in list(self.subscriptions.items()):  # the worker may add chunk topics meanwhile
            client.subscribe(topic, qos)
        self.connected.set()
        for hook in self.on_connected:
            self.worker.submit(hook, session_present)

    def _fall_back_to_311(self) -> None:
        log.info("%s: broker does not speak MQTT 5, falling back to 3.1.1", self.label)
        if self.loop is None:
            self.paho.loop_stop()
        self.paho = self._make_client(paho.MQTTv311)
        self.start()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if self.loop is not None:
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.max_backoff)

    def _on_message(self, client, userdata, message) -> None:
        self.messages_in += 1
        self.bytes_in += len(message.payload) + len(message.topic)
        props = getattr(message, "properties", None)
        incoming = Incoming(message.topic, bytes(message.payload), bool(message.retain),
                            getattr(props, "ResponseTopic", None) if props else None,
                            getattr(props, "CorrelationData", None) if props else None)
        for pattern, handler in self.handlers:
            if topic_matches(pattern, message.topic):
                self.worker.submit(handler, incoming)

    # --- publishing ----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False,
                expiry_s: int | None = None, response_topic: str | None = None,
                correlation: bytes | None = None) -> paho.MQTTMessageInfo:
        """Queue a publish (safe from any thread that is not a paho callback)."""
        props = None
        if self.v5 and (expiry_s or response_topic or correlation):
            props = Properties(PacketTypes.PUBLISH)
            if expiry_s:
                props.MessageExpiryInterval = int(expiry_s)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
        data = payload.encode() if isinstance(payload, str) else payload
        self.messages_out += 1
        self.bytes_out += len(data) + len(topic)
        return self.paho.publish(topic, data, qos=qos, retain=retain, properties=props)
