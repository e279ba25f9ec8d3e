"""The manager's artifact server: answers devices' chunk requests on their own chunk topics, or
(fan-out) publishes each requested chunk once, retained, on its shared content-addressed topic.

Why fan-out: unicast sends the artifact once per device, so the manager's bytes grow with the fleet.
A retained `<p>/chunks/<sha256>` message is published once and the broker hands it to every device
that subscribes, now or later: the manager sends ~1x the artifact per release whatever the fleet
size, and a device receives only the chunks it subscribed to (those it lacks). The device still
checks each chunk's sha256 against the recipe in its signed desired state, as with unicast.
Retained chunks expire after `shared_expiry_s` (MQTT 5 message expiry); a chunk asked for again
after that is published again.

A device may only get (or cause the publication of) chunks of releases offered to it. Answers go
through one sender thread with a bound on bytes published but not yet acknowledged, so a thousand
devices asking at once cannot fill the manager's memory with queued chunks.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

from edgeship.fleet.mqtt import protocol
from edgeship.fleet.mqtt.chunks import ChunkStore, Recipe, encode_frame
from edgeship.fleet.mqtt.client import Incoming, MqttClient
from edgeship.fleet.mqtt.topics import Topics

log = logging.getLogger("edgeship.mqtt.server")


class ArtifactServer:
    def __init__(self, client: MqttClient, topics: Topics, store: ChunkStore, *,
                 max_unacked_bytes: int = 32 << 20, chunk_expiry_s: int = 600, cache_bytes: int = 64 << 20,
                 shared_expiry_s: int = 7 * 24 * 3600, republish_after_s: float = 10.0):
        self.client, self.topics, self.store = client, topics, store
        self.max_unacked_bytes = max_unacked_bytes
        self.chunk_expiry_s = chunk_expiry_s
        self.shared_expiry_s = shared_expiry_s
        self.republish_after_s = republish_after_s  # a device's overdue re-ask of an older copy: publish again
        self._shared_at: dict[str, float] = {}  # chunk -> when it was last published on its shared topic
        self.bytes_shared = 0  # fan-out bytes: counted once, whatever number of devices receive them
        self._allowed: dict[str, set[str]] = collections.defaultdict(set)
        self._queue: collections.deque = collections.deque()
        self._queued: set[tuple[str, str]] = set()
        self._cond = threading.Condition()
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cache_bytes, self._cache_limit = 0, cache_bytes
        self.sent_log: list[tuple[str, str]] = []  # (device, chunk) in send order
        self.bytes_sent: collections.Counter = collections.Counter()
        self.requests = 0
        self.enabled = False  # read-only managers (`fleet status`) never answer requests
        # Fault injection for tests and demos: a slow link, a corrupting link.
        self.send_delay_s = 0.0
        self.tamper: Callable[[str, str, bytes], bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send_loop, name="edgeship-mqtt-sender", daemon=True)
        self._thread.start()
        client.subscribe(topics.all_devices("req"), self._on_request)

    def offer(self, device_id: str, recipe: Recipe) -> None:
        with self._cond:
            self._allowed[device_id].update(recipe.ids())

    def _on_request(self, msg: Incoming) -> None:
        parsed = self.topics.parse(msg.topic)
        if not parsed or not self.enabled:
            return
        device_id = parsed[0]
        try:
            doc = protocol.loads(msg.payload)
            wanted = [str(c) for c in doc.get("chunks", [])]
        except (protocol.ProtocolError, TypeError):
            return
        self.requests += 1
        shared = doc.get("fanout") is True
        fresh_for = self.republish_after_s if doc.get("retry") is True else self.shared_expiry_s
        now = time.monotonic()
        with self._cond:
            allowed = self._allowed.get(device_id, set())
            for cid in wanted:
                if cid not in allowed:
                    continue
                if shared:
                    if now - self._shared_at.get(cid, float("-inf")) < fresh_for:
                        continue  # already retained on its shared topic: the device's subscription gets it
                    self._shared_at[cid] = now
                key = (None if shared else device_id, cid)
                if key not in self._queued:
                    self._queued.add(key)
                    self._queue.append(key)
            self._cond.notify_all()

    def _chunk(self, cid: str) -> bytes | None:
        data = self._cache.get(cid)
        if data is not None:
            self._cache.move_to_end(cid)
            return data
        data = self.store.get(cid)
        if data is not None:
            self._cache[cid] = data
            self._cache_bytes += len(data)
            while self._cache_bytes > self._cache_limit and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= len(old)
        return data

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._send_some()
            except Exception:  # never let one bad send stop serving every device
                log.exception("artifact server: send failed")
                time.sleep(0.5)

    @staticmethod
    def _acked(info) -> bool:
        try:
            return info.is_published()
        except (RuntimeError, ValueError):  # published while disconnected: paho re-sends or the device re-asks
            return True

    def _send_some(self) -> None:
        unacked: collections.deque = collections.deque()
        unacked_bytes = 0
        while not self._stop.is_set():
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                device_id, cid = self._queue.popleft()
                self._queued.discard((device_id, cid))
            data = self._chunk(cid)
            if data is None:
                log.warning("%s: chunk %s requested but not in the store", device_id, cid[:12])
                continue
            if self.tamper is not None:
                data = self.tamper(device_id or "*", cid, data)
            if self.send_delay_s:
                time.sleep(self.send_delay_s)
            frame = encode_frame(cid, data)
            while unacked and (unacked_bytes + len(frame) > self.max_unacked_bytes or self._acked(unacked[0][0])):
                info, size = unacked.popleft()
                if not self._acked(info):
                    try:
                        info.wait_for_publish(5)
                    except (RuntimeError, ValueError):
                        pass
                unacked_bytes -= size
            if device_id is None:  # fan-out: once, retained, for every device that lacks it
                info = self.client.publish(self.topics.chunk(cid), frame, retain=True, expiry_s=self.shared_expiry_s)
                self.bytes_shared += len(frame)
            else:
                info = self.client.publish(self.topics.device(device_id, "chunks"), frame, expiry_s=self.chunk_expiry_s)
                self.bytes_sent[device_id] += len(frame)
            unacked.append((info, len(frame)))
            unacked_bytes += len(frame)
            self.sent_log.append((device_id or "*", cid))

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(5)
