"""The manager side of the MQTT transport (`transport: mqtt` in a Fleet manifest).

Every desired document is signed with the fleet's signing key (`signing_key`, default
EDGESHIP_SIGNING_KEY or the state dir's key: the one builds sign with) and carries a per-device
counter as its seq (fleet/desired_state.py). A device counts as done only when it reports the
target digest as its current release.

push     cut the bundle into content-defined chunks (manager chunk store), offer them to the device,
         publish a retained `stage` desired and wait until the device reports it holds the release.
         With `fanout: true` the chunks go once per release to shared retained topics that every
         device reads (bytes sent per release ~1x the artifact whatever the fleet size).
activate publish a retained `activate` desired and wait for the device's reported result.
rollback publish a retained `rollback` desired and wait likewise.
status   the retained `status` + `reported` documents of the device.
trust    the fleet's trust chain (`trust.document`) is published retained on `<prefix>/trust` before
         the first desired document of a run, so a device checks a rotated key's intent against the
         new trust document; `deliver_trust` publishes it alone and waits for the device's report.

Waits end cleanly: a device whose retained status is the last-will `offline` for longer than
`offline_grace_s` gets `unreachable`, one that says nothing within `timeout_s` gets `timeout`.
The desired document stays retained, so an offline device converges when it comes back; `withdraw`
deletes it when the rollout that published it stopped (a failed gate, a rollback).
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from pathlib import Path

from edgeship import artifact
from edgeship.errors import ArtifactError, TransportError
from edgeship.fleet import desired_state
from edgeship.fleet.mqtt import protocol
from edgeship.fleet.mqtt.chunks import ChunkParams, ChunkStore, Recipe, chunk_bundle, save_recipe
from edgeship.fleet.mqtt.client import Incoming, MqttClient
from edgeship.fleet.mqtt.server import ArtifactServer
from edgeship.fleet.mqtt.topics import Topics
from edgeship.fleet.trust import parse_chain
from edgeship.fleet.trust_delivery import fleet_chain_bytes
from edgeship.fleet.types import DeviceState, PushResult, Result
from edgeship.paths import default_signing_key, state_dir
import json

_ENV = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def _secret(value: str | None) -> str | None:
    """`${ENV}` -> the variable's value (secrets stay out of manifests)."""
    if value is None:
        return None
    match = _ENV.match(str(value))
    if match:
        if match.group(1) not in os.environ:
            raise TransportError("transports.mqtt", f"environment variable {match.group(1)} is not set")
        return os.environ[match.group(1)]
    return str(value)


def _number(value) -> float:
    """A timestamp from a device's document; anything that is not a number counts as never."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class MqttManager:
    """One manager connection to the broker: desired/reported/status bookkeeping + the artifact server."""

    def __init__(self, broker: str, *, prefix: str = "edgeship", username: str | None = None,
                 password: str | None = None, ca: str | None = None, chunk_kb: int = 256,
                 timeout_s: float = 600.0, offline_grace_s: float = 5.0, connect_timeout_s: float = 15.0,
                 protocol_version: str = "auto", store_dir: Path | None = None,
                 signing_key: Path | None = None, fanout: bool = False):
        self.fanout = bool(fanout)  # chunks once per release on shared retained topics (fleet/mqtt/server.py)
        self.signing_key = Path(signing_key) if signing_key else None
        self.topics = Topics(prefix)
        self.params = ChunkParams(int(chunk_kb) * 1024)
        self.timeout_s, self.offline_grace_s, self.connect_timeout_s = timeout_s, offline_grace_s, connect_timeout_s
        base = Path(store_dir) if store_dir else state_dir() / "mqtt"
        self.store = ChunkStore(base / "chunks")
        self.recipes_dir = base / "recipes"
        self.client = MqttClient(broker, client_id=f"edgeship-manager-{uuid.uuid4().hex[:10]}", username=username,
                                 password=password, ca=ca, persistent=False, protocol=protocol_version, label="manager",
                                 will=(self.topics.manager_status(), protocol.status_doc("offline")))
        self.reported: dict[str, dict] = {}
        self.status_docs: dict[str, dict] = {}
        self.last_seen: dict[str, float] = {}
        self._recipes: dict[str, Recipe] = {}
        self._recipe_lock = threading.Lock()
        self._desired: dict[str, dict] = {}
        self._seq_seen: dict[str, int] = {}  # highest retained desired seq per device, signed by our key
        self._own_public = None
        # One lock for all the bookkeeping below; waiters on one device's report wait on that
        # device's condition (same lock), so a report wakes its own waiter, not the ~100 threads of
        # an engine wave that wait for other devices (each report used to wake them all).
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._device_conds: dict[str, threading.Condition] = {}
        self._sync_topic = f"{prefix}/manager/{self.client.client_id}/sync"
        self._sync_sent = self._sync_done = 0  # sync rounds sent / answered (see sync())
        self._sync_inflight: int | None = None
        self._synced_connect = -1  # client.connects at the last completed sync
        self.client.subscribe(self.topics.all_devices("reported"), self._on_reported)
        self.client.subscribe(self.topics.all_devices("status"), self._on_status)
        self.client.subscribe(self._sync_topic, self._on_sync)
        self.client.subscribe(self.topics.all_devices("desired"), self._on_desired_seen)
        self.client.on_connected.append(self._on_connected)
        self.server = ArtifactServer(self.client, self.topics, self.store)
        self._trust_sent: bytes | None = None
        self._started = False
        self._failed: str | None = None
        self._start_lock = threading.Lock()

    # --- connection ----------------------------------------------------------------------------

    def start(self) -> "MqttManager":
        with self._start_lock:
            if not self._started:
                self.client.start()
                self._started = True
        if self._failed:
            raise TransportError("broker", self._failed)
        try:
            self.client.wait_connected(self.connect_timeout_s)
        except TransportError as err:
            if not self.client.connects:  # never connected: fail every later call at once, same reason
                self._failed = str(err).split(": ", 1)[-1]
            raise TransportError("broker", str(err).split(": ", 1)[-1]) from None
        return self

    def close(self) -> None:
        self.server.stop()
        self.client.stop()

    def serve(self) -> None:
        """Start answering chunk requests (a manager that publishes desired state serves its chunks;
        a read-only one such as `fleet status` does not), and tell devices to re-ask for lost ones."""
        if not self.server.enabled:
            self.server.enabled = True
            if self.client.connected.is_set():
                self.client.publish(self.topics.manager_status(), protocol.status_doc("online"), retain=True)

    def _on_connected(self, session_present: bool) -> None:
        with self._cond:
            self._sync_inflight = None  # a round sent on the old connection may be lost
            self._cond.notify_all()
        if self.server.enabled:
            self.client.publish(self.topics.manager_status(), protocol.status_doc("online"), retain=True)
        # A broker that lost its retained store (crash without persistence) gets our intent again.
        for device_id, doc in list(self._desired.items()):
            self.client.publish(self.topics.device(device_id, "desired"), protocol.dumps(doc), retain=True)

    def sync(self, timeout: float = 10.0) -> None:
        """Return once every retained message published before now has been received.

        A sync is a message to ourselves through the broker (in order with everything before it).
        Concurrent callers share rounds: one that arrives while a round is in flight waits for the
        next round, which one of them starts; so 100 threads asking at once cost two round trips,
        not 100 (a busy broker answers each in tens of milliseconds)."""
        self.start()
        deadline = time.monotonic() + timeout
        with self._cond:
            wanted = self._sync_sent + 1  # a round sent after this call began
            while self._sync_done < wanted:
                if self._sync_inflight is None:
                    self._sync_sent += 1
                    self._sync_inflight = self._sync_sent
                    self.client.publish(self._sync_topic, str(self._sync_sent).encode())
                left = deadline - time.monotonic()
                if left <= 0:
                    self._sync_inflight = None  # lost (a disconnect): the next caller sends a new round
                    raise TransportError("broker", "no answer from the broker (sync timed out)")
                self._cond.wait(min(left, 0.5))
        self._synced_connect = self.client.connects

    def ensure_synced(self) -> None:
        """sync() once per connection: after it, retained updates arrive live and in order."""
        if self._synced_connect != self.client.connects:
            self.sync()

    def _on_sync(self, msg: Incoming) -> None:
        try:
            done = int(msg.payload)
        except ValueError:
            return
        with self._cond:
            self._sync_done = max(self._sync_done, done)
            if self._sync_inflight is not None and done >= self._sync_inflight:
                self._sync_inflight = None
            self._cond.notify_all()

    def _on_desired_seen(self, msg: Incoming) -> None:
        """A retained desired document from an earlier manager run: keep serving its chunks, so a
        device mid-transfer when that manager stopped still finishes (only managers may write it: ACL)."""
        parsed = self.topics.parse(msg.topic)
        if not parsed or not msg.payload:
            return
        try:
            doc = protocol.loads(msg.payload)
        except protocol.ProtocolError:
            return
        seq = doc.get("seq")
        if (self._desired.get(parsed[0]) or {}).get("seq") == seq:
            return  # our own publication coming back: nothing to learn (and no signature to check)
        own = self._public_key()
        if isinstance(seq, int) and not isinstance(seq, bool) and 0 < seq <= protocol.MAX_SEQ \
                and own is not None and desired_state.signed_by(doc, own):
            with self._cond:
                self._seq_seen[parsed[0]] = max(seq, self._seq_seen.get(parsed[0], 0))
        if parsed[0] in self._desired:
            return
        try:
            recipe = Recipe.from_json(doc["recipe"]) if doc.get("recipe") else None
        except (protocol.ProtocolError, ValueError, KeyError):
            return
        if recipe is not None and not self.store.missing(recipe):
            self.server.offer(parsed[0], recipe)

    def _device_doc(self, msg: Incoming) -> tuple[str, dict] | None:
        """(device id, JSON document) of a per-device message; None for a foreign topic, an empty
        (cleared retained) payload or one that does not parse: those are ignored, never raised."""
        parsed = self.topics.parse(msg.topic)
        if not parsed or not msg.payload:
            return None
        try:
            return parsed[0], protocol.loads(msg.payload)
        except protocol.ProtocolError:
            return None

    def _device_cond(self, device_id: str) -> threading.Condition:
        """The condition a waiter for this device's report or status waits on (call with the lock held)."""
        cond = self._device_conds.get(device_id)
        if cond is None:
            cond = self._device_conds[device_id] = threading.Condition(self._lock)
        return cond

    def _notify_device(self, device_id: str) -> None:
        cond = self._device_conds.get(device_id)
        if cond is not None:
            cond.notify_all()

    def _on_reported(self, msg: Incoming) -> None:
        decoded = self._device_doc(msg)
        if decoded is None:
            return
        device_id, doc = decoded
        with self._cond:
            self.reported[device_id] = doc
            self.last_seen[device_id] = max(self.last_seen.get(device_id, 0), _number(doc.get("ts")))
            self._notify_device(device_id)

    def _on_status(self, msg: Incoming) -> None:
        decoded = self._device_doc(msg)
        if decoded is None:
            return
        device_id, doc = decoded
        doc["_received"] = time.monotonic()
        with self._cond:
            self.status_docs[device_id] = doc
            # Every status the device wrote counts (heartbeats, and the `offline` of a clean stop, written
            # when it stopped); a last will carries its connect time, older than any heartbeat: max() keeps it harmless.
            self.last_seen[device_id] = max(self.last_seen.get(device_id, 0), _number(doc.get("ts")))
            self._notify_device(device_id)

    # --- artifacts -----------------------------------------------------------------------------

    def recipe_for(self, bundle: Path, device_id: str = "bundle") -> Recipe:
        """Chunk a bundle into the manager store once per digest (cached on disk as a recipe)."""
        try:
            digest = artifact.bundle_digest(bundle)
        except ArtifactError as err:
            raise TransportError(device_id, str(err)) from None
        with self._recipe_lock:  # deploy pushes to many devices at once: chunk a bundle once
            cached = self._recipes.get(digest) or self._load_recipe(digest)
            if cached is None or cached.params != self.params or self.store.missing(cached):
                cached = chunk_bundle(Path(bundle), digest, self.params, self.store)
                save_recipe(self.recipes_dir, cached)
            self._recipes[digest] = cached
            return cached

    def _load_recipe(self, digest: str) -> Recipe | None:
        path = self.recipes_dir / f"{digest.split(':', 1)[-1]}.json"
        try:
            return Recipe.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    # --- desired / reported --------------------------------------------------------------------

    def _next_seq(self, device_id: str) -> int:
        """One above the device's reported seq, the retained desired and our own last publish."""
        with self._cond:
            reported = (self.reported.get(device_id) or {}).get("seq")
            known = (reported, self._seq_seen.get(device_id), (self._desired.get(device_id) or {}).get("seq"))
        try:
            return desired_state.next_seq(*known)
        except ValueError as err:
            raise TransportError(device_id, str(err)) from None

    def _key_path(self) -> Path:
        return self.signing_key or default_signing_key()

    def _public_key(self):
        """The public half of our signing key (cached), or None when there is no usable key."""
        if self._own_public is None:
            try:
                self._own_public = artifact.load_private_key(self._key_path()).public_key()
            except ArtifactError:
                return None
        return self._own_public

    def _sign(self, device_id: str, doc: dict) -> dict:
        key = self._key_path()
        if not key.is_file():
            raise TransportError(device_id, f"cannot sign desired state: no signing key at {key} "
                                            "(set EDGESHIP_SIGNING_KEY to the key your artifacts are signed with)")
        try:
            return desired_state.sign(doc, key)
        except ArtifactError as err:
            raise TransportError(device_id, f"cannot sign desired state: {err}") from None

    def publish_desired(self, device_id: str, action: str, digest: str | None = None,
                        recipe: Recipe | None = None, url: str | None = None, size: int | None = None,
                        wait: bool = True) -> int:
        """Publish a signed, retained intent for one device; return its seq. `wait=False` returns
        before the broker acknowledges it (a caller publishing to a whole fleet at once)."""
        self.start()
        self.ensure_synced()  # the retained reported/desired of the device are in: the seq goes above them
        seq = self._next_seq(device_id)
        doc: dict = {"seq": seq, "device": device_id, "action": action}
        if digest:
            doc["digest"] = digest
        if recipe is not None:
            doc["recipe"] = recipe.to_json()
            doc["size"] = recipe.size
            if self.fanout:
                doc["fanout"] = True
            self.server.offer(device_id, recipe)
        elif size:
            doc["size"] = int(size)
        if url:
            doc["url"] = url
        protocol.check_desired(doc)
        doc = self._sign(device_id, doc)
        self.serve()
        self._desired[device_id] = doc
        info = self.client.publish(self.topics.device(device_id, "desired"), protocol.dumps(doc), retain=True)
        if wait:
            try:
                info.wait_for_publish(self.connect_timeout_s)
            except (RuntimeError, ValueError):
                pass  # not connected right now: paho resends after reconnect, and _on_connected republishes
        return seq

    def publish_trust(self, data: bytes) -> None:
        """Publish the fleet's trust chain, retained, on the fleet-wide topic (once per content).
        It is signed by the root, so no manager key is needed and the broker cannot alter it."""
        if self._trust_sent == data:
            return
        self.start()
        info = self.client.publish(self.topics.fleet_trust(), data, retain=True)
        try:
            info.wait_for_publish(self.connect_timeout_s)
        except (RuntimeError, ValueError):
            pass  # not connected right now: paho resends after the reconnect
        self._trust_sent = data

    def wait_for_trust(self, device_id: str, version: int, timeout: float) -> dict:
        """Wait for the device to report trusting `version` (or newer); TransportError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            cond = self._device_cond(device_id)
            while True:
                doc = self.reported.get(device_id) or {}
                trust = doc.get("trust") if isinstance(doc.get("trust"), dict) else {}
                if isinstance(trust.get("version"), int) and trust["version"] >= version:
                    return trust
                status = self.status_docs.get(device_id)
                if status and status.get("state") == "offline":
                    raise TransportError(device_id, "offline; the retained trust chain reaches it when it returns")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(device_id, f"did not report trust document version {version} "
                                                    f"(it reports {trust.get('version')!r}; legacy devices ignore it)")
                cond.wait(min(left, 0.5))

    def withdraw_desired(self, device_id: str) -> None:
        """Delete the device's retained desired document (an empty retained message), so a device
        that was offline when a rollout stopped never acts on what that rollout no longer wants."""
        self.start()
        self._desired.pop(device_id, None)
        info = self.client.publish(self.topics.device(device_id, "desired"), b"", retain=True)
        try:
            info.wait_for_publish(self.connect_timeout_s)
        except (RuntimeError, ValueError):
            pass  # not connected now: paho resends it after the reconnect

    def wait_for_seq(self, device_id: str, seq: int, timeout: float | None = None) -> dict:
        """Wait for the device's report of having handled `seq`; raise TransportError otherwise."""
        started = time.monotonic()
        deadline = started + (timeout if timeout is not None else self.timeout_s)
        with self._cond:
            cond = self._device_cond(device_id)
            while True:
                doc = self.reported.get(device_id)
                if doc and int(doc.get("seq") or 0) >= seq:
                    return doc
                status = self.status_docs.get(device_id)
                if status and status.get("state") == "offline" \
                        and time.monotonic() - max(status["_received"], started) > self.offline_grace_s:
                    raise TransportError(device_id, "offline (last will); desired state stays retained for when it returns")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(device_id, "timed out waiting for the device to report")
                cond.wait(min(left, 0.5))

    def device_state(self, device_id: str) -> DeviceState:
        with self._cond:
            rep = dict(self.reported.get(device_id) or {})
            st = self.status_docs.get(device_id) or {}
            seen = self.last_seen.get(device_id)
        return DeviceState(device_id, online=st.get("state") == "online", current=rep.get("current"),
                           previous=rep.get("previous"), last_result=rep.get("last_result"),
                           last_seen=seen or None, disk_bytes=rep.get("disk_bytes"),
                           releases=list(rep.get("releases") or []), device=st.get("device") or rep.get("device"),
                           trust=rep.get("trust") if isinstance(rep.get("trust"), dict) else None)


class MqttTransport:
    """The `mqtt` Transport: one MqttManager per fleet, shared by all its MQTT devices."""

    def __init__(self, fleet=None, **settings):
        conf = dict(fleet.transport_settings("mqtt")) if fleet is not None else {}
        conf.update(settings)
        if "broker" not in conf:
            raise TransportError("transports.mqtt", "broker is not set in the fleet manifest")
        tls = conf.get("tls") or {}
        ca = tls.get("ca") if isinstance(tls, dict) else None
        if ca and fleet is not None:
            ca = str(fleet.resolve(ca))
        password = _secret(conf.get("password"))
        if conf.get("password_file"):
            named = _secret(conf["password_file"]) or ""
            path = fleet.resolve(named) if fleet is not None else Path(named)
            try:
                password = Path(path).read_text().strip()
            except OSError as err:
                raise TransportError("transports.mqtt", f"password_file {path}: {err.strerror}") from None
        try:
            self.manager = self._manager(conf, fleet, ca, password)
        except ValueError as err:
            raise TransportError("transports.mqtt", str(err)) from None
        self._trust = fleet_chain_bytes(fleet) if fleet is not None else None

    @staticmethod
    def _manager(conf: dict, fleet, ca: str | None, password: str | None) -> MqttManager:
        store_dir = conf.get("store_dir")
        if store_dir and fleet is not None:
            store_dir = fleet.resolve(store_dir)
        return MqttManager(conf["broker"], prefix=conf.get("prefix", "edgeship"), username=conf.get("username"),
                           password=password, ca=ca, chunk_kb=int(conf.get("chunk_kb", 256)),
                           timeout_s=float(conf.get("timeout_s", 600)),
                           offline_grace_s=float(conf.get("offline_grace_s", 5)), store_dir=store_dir,
                           signing_key=conf.get("signing_key"), fanout=bool(conf.get("fanout", False)),
                           protocol_version=str(conf.get("protocol", conf.get("protocol_version", "auto"))))

    def close(self) -> None:
        self.manager.close()

    def _known(self, device_id: str) -> dict:
        """The device's last report. Synced once per connection: later reports arrive live, and one a
        moment late only costs a push the device answers with `already present`."""
        self.manager.ensure_synced()
        with self.manager._cond:
            return dict(self.manager.reported.get(device_id) or {})

    def _publish_trust(self) -> None:
        if self._trust is not None:
            self.manager.publish_trust(self._trust)

    def deliver_trust(self, device, data: bytes) -> Result:
        """Publish the chain (retained, fleet-wide) and wait for the device to report the version."""
        version = max(d.version for d in parse_chain(json.loads(data)))
        self.manager.publish_trust(data)
        try:
            self.manager.sync()
            trust = self.manager.wait_for_trust(device.id, version, min(self.manager.timeout_s, 60.0))
        except TransportError as err:
            reason = "unreachable" if "offline" in str(err) else "timeout"
            return Result(False, device.id, "", reason, str(err))
        return Result(True, device.id, "", "", f"trusts trust document version {trust['version']}",
                      {"trust_version": trust["version"]})

    def push(self, device, bundle: Path) -> PushResult:
        self._publish_trust()
        recipe = self.manager.recipe_for(Path(bundle), device.id)
        digest = recipe.digest
        rep = self._known(device.id)
        if digest == rep.get("current") or digest in (rep.get("releases") or []) or digest in (rep.get("staged") or []):
            return PushResult(0, True, device.id, digest)
        before = self.manager.server.bytes_sent[device.id]
        seq = self.manager.publish_desired(device.id, "stage", digest, recipe, wait=False)
        doc = self.manager.wait_for_seq(device.id, seq)
        result = Result.from_dict(doc.get("last_result"))
        if not result.ok:
            raise TransportError(device.id, f"staging failed: {result.reason}: {result.message}")
        sent = self.manager.server.bytes_sent[device.id] - before
        if self.manager.fanout:  # shared chunks are not sent to one device: count what it fetched
            transfer = (result.figures or {}).get("transfer") or {}
            sent = max(sent, int(transfer.get("bytes_fetched") or 0)) if transfer.get("digest") == digest else sent
        return PushResult(sent, sent == 0, device.id, digest)

    def activate(self, device, digest: str) -> Result:
        recipe = self.manager._recipes.get(digest) or self.manager._load_recipe(digest)
        rep = self._known(device.id)
        has = digest == rep.get("current") or digest in (rep.get("releases") or []) or digest in (rep.get("staged") or [])
        if recipe is None and not has:
            return Result(False, device.id, digest, "not-found", "push the bundle first (no chunk recipe for this digest)")
        self._publish_trust()
        try:
            seq = self.manager.publish_desired(device.id, "activate", digest, recipe, wait=False)
            doc = self.manager.wait_for_seq(device.id, seq)
        except TransportError as err:
            reason = "unreachable" if "offline" in str(err) else "timeout"
            return Result(False, device.id, digest, reason, str(err))
        result = Result.from_dict({**(doc.get("last_result") or {}), "device_id": device.id})
        if result.ok and doc.get("current") != digest:  # only the device's own report of what runs counts
            return Result(False, device.id, digest, "not-running",
                          f"device reports {doc.get('current') or 'no release'} running, not {digest}")
        return result

    def rollback(self, device) -> Result:
        try:
            seq = self.manager.publish_desired(device.id, "rollback", wait=False)
            doc = self.manager.wait_for_seq(device.id, seq)
        except TransportError as err:
            reason = "unreachable" if "offline" in str(err) else "timeout"
            return Result(False, device.id, "", reason, str(err))
        return Result.from_dict({**(doc.get("last_result") or {}), "device_id": device.id})

    def withdraw(self, device) -> None:
        """Cancel whatever desired state is still pending for the device (see MqttManager.withdraw_desired)."""
        self.manager.withdraw_desired(device.id)

    def status(self, device) -> DeviceState:
        self.manager.sync()
        return self.manager.device_state(device.id)
