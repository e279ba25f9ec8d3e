"""The device service (`edgeship agent serve`): one outbound broker connection, converging the
device to its retained `desired` document.

It subscribes to its own `desired` and `chunks` topics, fetches the chunks of a new release that
none of its kept releases holds (request/response on its own `req`/`chunks` topics, a few chunks in
flight; or, when the signed desired says `fanout`, by subscribing to the shared retained chunk topics
`<p>/chunks/<sha256>` the manager publishes once per release, falling back to its own topics for a
chunk that does not come in time), verifies each chunk by its sha256 and the whole bundle by its
sha256 and signature, then hands it to the same `Agent` every transport uses, and publishes `reported`. Verified chunks are on
disk, so a broker restart, a lost connection or a killed service resumes where it stopped.

All work runs on the client's worker thread; paho's network loop only enqueues.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from edgeship import artifact
from edgeship.errors import AgentError, ArtifactError
from edgeship.fleet import desired_state
from edgeship.fleet.device_info import device_info
from edgeship.fleet.mqtt import protocol
from edgeship.fleet.mqtt.chunks import ChunkStore, Recipe, chunk_bundle, decode_frame, save_recipe
from edgeship.fleet.mqtt.client import Incoming, MqttClient, SharedLoop, Worker
from edgeship.fleet.mqtt.heartbeat import Heartbeat
from edgeship.fleet.mqtt.topics import Topics, device_client_id
from edgeship.fleet.types import Result

log = logging.getLogger("edgeship.mqtt.service")


@dataclass
class Transfer:
    """One release being fetched: what is wanted, what is in flight, and the figures so far."""

    desired: dict
    recipe: Recipe
    wanted: set[str]
    outstanding: dict[str, float] = field(default_factory=dict)
    chunks_fetched: int = 0
    bytes_fetched: int = 0
    chunks_reused: int = 0
    corrupt: int = 0
    started: float = field(default_factory=time.time)
    fanout: bool = False  # chunks come from the shared retained topics (see fleet/mqtt/server.py)
    shared: set[str] = field(default_factory=set)  # shared chunk topics subscribed for this transfer
    retries: dict[str, int] = field(default_factory=dict)  # chunk -> overdue re-requests so far

    def figures(self) -> dict:
        return {"digest": self.recipe.digest, "chunks_total": len(set(self.recipe.ids())),
                "chunks_fetched": self.chunks_fetched, "bytes_fetched": self.bytes_fetched,
                "chunks_reused": self.chunks_reused, "bytes_total": self.recipe.size, "corrupt_chunks": self.corrupt,
                "seconds": round(time.time() - self.started, 3)}


class DeviceService:
    def __init__(self, device_id: str, root: Path, broker: str, *, agent, username: str | None = None,
                 password: str | None = None, ca: str | None = None, prefix: str = "edgeship",
                 window: int = 4, request_timeout_s: float = 20.0, protocol_version: str = "auto",
                 loop: SharedLoop | None = None, worker: Worker | None = None, store: ChunkStore | None = None,
                 persist_state: bool = True, http_timeout_s: float = 30.0, min_backoff: float = 0.5,
                 max_backoff: float = 30.0, heartbeat_s: float = 60.0):
        self.device_id = device_id
        self.root = Path(root)
        self.agent = agent
        self.topics = Topics(prefix)
        self.window = max(1, window)
        self.request_timeout_s = request_timeout_s
        self.http_timeout_s = http_timeout_s
        self.ca = ca
        self.store = store if store is not None else ChunkStore(self.root / "chunks")
        self.recipes_dir = self.root / "recipes"
        self.state_path = self.root / "mqtt-state.json" if persist_state else None
        self._handled_seq = self._load_seq()
        self.transfer: Transfer | None = None
        self._parked_desired: Incoming | None = None  # refused for its key: looked at again after a new trust doc
        self.last_result: dict | None = None
        self.last_transfer: dict | None = None
        self.converged = threading.Event()
        self.heartbeat = Heartbeat(heartbeat_s, self._current_on_disk)
        self.client = MqttClient(
            broker, client_id=device_client_id(device_id), username=username, password=password, ca=ca,
            persistent=True, protocol=protocol_version, worker=worker, loop=loop, label=device_id,
            will=(self.topics.device(device_id, "status"), protocol.status_doc("offline")),
            min_backoff=min_backoff, max_backoff=max_backoff)
        self.client.on_connected.append(self._on_connected)
        # QoS 0: desired is a retained *state*, re-read on every (re)subscribe; at QoS 1 a persistent
        # session would also queue every stale desired published while the device was offline, and a
        # late device would act on a release the manager has since withdrawn.
        self.client.subscribe(self.topics.device(device_id, "desired"), self._on_desired, qos=0)
        self.client.subscribe(self.topics.device(device_id, "chunks"), self._on_chunk)
        self.client.subscribe(self.topics.manager_status(), self._on_manager_status)
        # Trust chains: retained, self-authenticating (fleet/trust.py); an older one changes nothing.
        self.client.subscribe(self.topics.fleet_trust(), self._on_trust)
        self.client.subscribe(self.topics.device(device_id, "trust"), self._on_trust)
        self.client.add_handler(self.topics.all_chunks(), self._on_chunk)  # subscribed chunk by chunk

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "DeviceService":
        self.client.start()
        return self

    def stop(self) -> None:
        """Say goodbye (retained offline) and disconnect cleanly."""
        if self.client.connected.is_set():
            info = self.client.publish(self.topics.device(self.device_id, "status"), protocol.status_doc("offline"),
                                       retain=True)
            try:
                info.wait_for_publish(2)
            except (RuntimeError, ValueError):
                pass
        self.client.stop()

    def tick(self) -> None:
        """Re-request chunks whose answer is overdue (lost in a disconnect or dropped), report a
        release switched on the device itself, and refresh the retained `online` status every
        heartbeat so `last seen` stays true. Run on the worker."""
        if not self.client.connected.is_set():
            return
        if self.transfer is None and self.heartbeat.changed():
            log.info("%s: local change: the device now runs %s (not by a desired state); reporting it",
                     self.device_id, _short(self._current_on_disk()))
            self.report()
        if self.heartbeat.due():
            self.client.publish(self.topics.device(self.device_id, "status"), protocol.status_doc("online", device_info(self.root)),
                                retain=True)
        t = self.transfer
        if t is None:
            return
        now = time.monotonic()
        stale = [c for c, at in t.outstanding.items() if now - at > self.request_timeout_s]
        for cid in stale:
            t.retries[cid] = t.retries.get(cid, 0) + 1
        # Fan-out: the first time a chunk is overdue, ask again on the shared topic (the manager
        # publishes it again if its copy may be lost; a busy broker may simply be late, and a fleet
        # of devices all falling back to unicast at once would multiply the load); after that, alone.
        again = [c for c in stale if t.fanout and t.retries[c] == 1]
        alone = [c for c in stale if c not in again]
        if again:
            self._request(again, retry=True)
        if alone:
            self._request(alone, unicast=True)

    # --- state ---------------------------------------------------------------------------------

    def _load_seq(self) -> int:
        if self.state_path is None:
            return 0
        try:
            return int(json.loads(self.state_path.read_text()).get("seq", 0))
        except (OSError, ValueError, AttributeError):
            return 0

    def _save_seq(self, seq: int) -> None:
        self._handled_seq = seq
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seq": seq}))
        os.replace(tmp, self.state_path)

    def _event(self, kind: str, **fields) -> None:
        self.client.publish(self.topics.device(self.device_id, "events"),
                            protocol.dumps({"event": kind, "ts": round(time.time(), 3), **fields}), qos=0)

    def _current_on_disk(self) -> str | None:
        hexd = self.agent.current_hex()
        return f"sha256:{hexd}" if hexd else None

    def report(self) -> None:
        status = self.agent.status()
        self.heartbeat.reported(status.get("current"))
        staged = [f"sha256:{name[:-4]}" for name in status.get("incoming", []) if name.endswith(".tar")]
        doc = {"device_id": self.device_id, "seq": self._handled_seq, "current": status.get("current"),
               "previous": status.get("previous"), "releases": status.get("releases", []), "staged": staged,
               "last_result": self.last_result or status.get("last_result"), "transfer": self.last_transfer,
               "disk_bytes": status.get("disk_bytes"), "device": device_info(self.root), "protocol": "5" if self.client.v5 else "3.1.1",
               "trust": status.get("trust"),
               "ts": round(time.time(), 3)}
        self.client.publish(self.topics.device(self.device_id, "reported"), protocol.dumps(doc), retain=True)

    # --- handlers (worker thread) -------------------------------------------------------------

    def _on_connected(self, session_present: bool) -> None:
        log.info("%s: connected to the broker (MQTT %s)", self.device_id, "5" if self.client.v5 else "3.1.1")
        self.heartbeat.beaten()
        self.client.publish(self.topics.device(self.device_id, "status"), protocol.status_doc("online", device_info(self.root)), retain=True)
        self.report()
        if self.transfer is not None:  # answers in flight may be lost with the old connection
            self._request(list(self.transfer.outstanding) or self._next_wanted())

    def _on_trust(self, msg: Incoming) -> None:
        """A trust chain (fleet-wide or for this device): the agent checks it against its root."""
        if not msg.payload:
            return
        result = self.agent.accept_trust(msg.payload)
        if result.ok:
            log.info("%s: %s", self.device_id, result.message)
            parked, self._parked_desired = self._parked_desired, None
            if parked is not None:
                self._on_desired(parked)
                return  # it reported
        else:
            log.warning("%s: trust chain on %s REFUSED: %s: %s", self.device_id, msg.topic, result.reason, result.message)
            self._event("trust-refused", reason=result.reason, message=result.message)
        self.report()

    def _on_manager_status(self, msg: Incoming) -> None:
        """The manager (re)connected: requests sent while it was away are lost, ask again now."""
        try:
            online = protocol.loads(msg.payload).get("state") == "online"
        except protocol.ProtocolError:
            return
        if online and not msg.retain and self.transfer is not None:
            self._request(list(self.transfer.outstanding) or self._next_wanted())

    def _on_desired(self, msg: Incoming) -> None:
        if not msg.payload:  # withdrawn by the manager (a stopped rollout): drop a transfer for it
            self._parked_desired = None
            self._drop_shared(self.transfer)
            if self.transfer is not None:
                log.info("%s: desired state withdrawn: abandoning the transfer of %s", self.device_id,
                         _short(self.transfer.recipe.digest))
                self.transfer = None
            return
        try:
            doc = protocol.check_desired(protocol.loads(msg.payload))
        except protocol.ProtocolError as err:
            self._finish(None, Result(False, self.device_id, "", "bad-desired", f"desired: {err}"))
            return
        config = self.agent.config
        try:  # before anything else: an unsigned or foreign intent changes nothing, not even the seq
            keys = self.agent.trust().desired_ring() if config.require_signature else config.trusted_keys
            desired_state.verify(doc, self.device_id, keys, config.require_signature)
        except AgentError as err:
            # signed by a key the device does not trust yet: the trust document naming it may arrive after
            # the intent (another topic, another queue at the broker): look at it again when one does
            self._parked_desired = msg if err.reason == "untrusted-key" else None
            self._finish(None, Result(False, self.device_id, str(doc.get("digest") or ""), err.reason, f"desired: {err}"))
            return
        self._parked_desired = None
        if doc["seq"] <= self._handled_seq:
            self.report()
            return
        if self.transfer is not None and self.transfer.desired.get("seq") == doc["seq"]:
            return  # the same desired again (retained, re-delivered): the transfer goes on
        self._drop_shared(self.transfer)
        self.transfer = None
        action = doc["action"]
        log.info("%s: desired state seq %s: %s %s", self.device_id, doc["seq"], action, _short(doc.get("digest")))
        if action == "rollback":
            self._finish(doc, self.agent.rollback())
            return
        digest = doc["digest"]
        too_big = self._over_limit(doc.get("size"))
        if too_big:
            self._finish(doc, Result(False, self.device_id, digest, "oversize", too_big))
            return
        if self._already_done(doc):
            self._finish(doc, Result(True, self.device_id, digest, "", "already present", {"bytes_fetched": 0}),
                         transfer={"digest": digest, "bytes_fetched": 0, "chunks_fetched": 0})
            return
        if self.agent.has(digest):
            self._apply(doc, None)
            return
        if doc.get("url"):
            self._fetch_url(doc)
            return
        if doc.get("recipe") is None:
            self._finish(doc, Result(False, self.device_id, digest, "not-found", "release not on the device and no recipe to fetch it"))
            return
        try:
            recipe = Recipe.from_json(doc["recipe"])
        except ValueError as err:
            self._finish(doc, Result(False, self.device_id, digest, "bad-desired", str(err)))
            return
        if recipe.digest != digest or recipe.size != doc.get("size", recipe.size):
            self._finish(doc, Result(False, self.device_id, digest, "bad-desired", "recipe is for another digest or size"))
            return
        too_big = self._over_limit(recipe.size)
        if too_big:
            self._finish(doc, Result(False, self.device_id, digest, "oversize", too_big))
            return
        self._seed_from_releases(recipe)
        missing = self.store.missing(recipe)
        transfer = Transfer(doc, recipe, set(missing), fanout=doc.get("fanout") is True)
        transfer.chunks_reused = len(set(recipe.ids())) - len(missing)
        self.transfer = transfer
        self._event("fetch-start", digest=digest, chunks_missing=len(missing), chunks_total=len(set(recipe.ids())))
        log.info("%s: transfer of %s: %d of %d chunk(s) to fetch, %d reused from kept releases", self.device_id,
                 _short(digest), len(missing), len(set(recipe.ids())), transfer.chunks_reused)
        if not missing:
            self._complete()
        else:
            self._request(self._next_wanted())

    def _byte_limit(self, doc: dict) -> int:
        """The most a fetch may write: the signed size of the bundle, never more than max_bundle_mb."""
        limit = self.agent.config.max_bundle_bytes
        return min(limit, doc["size"]) if doc.get("size") else limit

    def _over_limit(self, size: int | None) -> str:
        limit = self.agent.config.max_bundle_bytes
        if size and size > limit:
            return f"bundle is {size} bytes, over max_bundle_mb ({limit} bytes): not fetched"
        return ""

    def _already_done(self, doc: dict) -> bool:
        """From the `current` link and the release folders alone (the full status walks the whole
        device root: the report that follows does that once)."""
        digest = doc["digest"]
        if doc["action"] == "activate":
            return self._current_on_disk() == digest
        return self.agent.has(digest)

    def _next_wanted(self) -> list[str]:
        t = self.transfer
        if t is None:
            return []
        room = self.window - len(t.outstanding)
        order = [c for c in dict.fromkeys(t.recipe.ids()) if c in t.wanted and c not in t.outstanding]
        return order[:max(0, room)]

    def _request(self, chunk_ids: list[str], unicast: bool = False, retry: bool = False) -> None:
        """Ask the manager for chunks. Fan-out: subscribe to their shared topics first (a chunk
        already published arrives as the retained message) and ask the manager to publish the ones
        it has not yet (`retry`: or published long ago: it may be lost); `unicast` asks for them on
        this device's own topic instead."""
        t = self.transfer
        if t is None or not chunk_ids:
            return
        now = time.monotonic()
        for cid in chunk_ids:
            t.outstanding[cid] = now
        shared = t.fanout and not unicast
        if shared:
            topics = [self.topics.chunk(c) for c in chunk_ids]
            t.shared.update(topics)
            self.client.subscribe_topics(topics)
        rid = uuid.uuid4().hex[:12]
        doc = {"digest": t.recipe.digest, "chunks": chunk_ids, "rid": rid}
        if shared:
            doc["fanout"] = True
            if retry:
                doc["retry"] = True
        self.client.publish(self.topics.device(self.device_id, "req"), protocol.dumps(doc),
                            response_topic=self.topics.device(self.device_id, "chunks"), correlation=rid.encode())

    def _drop_shared(self, t: "Transfer | None", topics: list[str] | None = None) -> None:
        """Unsubscribe shared chunk topics no longer needed (all of the transfer's by default)."""
        if t is None or not t.shared:
            return
        gone = list(t.shared) if topics is None else [x for x in topics if x in t.shared]
        t.shared.difference_update(gone)
        self.client.unsubscribe_topics(gone)

    def _on_chunk(self, msg: Incoming) -> None:
        t = self.transfer
        try:
            cid, data = decode_frame(msg.payload)
        except ValueError:
            return
        if t is None or cid not in t.wanted:
            return  # a duplicate (QoS 1 redelivery) or an answer to an abandoned transfer
        t.outstanding.pop(cid, None)
        if not self.store.put(cid, data):
            t.corrupt += 1
            self._event("corrupt-chunk", chunk=cid)
            log.warning("%s: chunk %s failed its sha256: dropped, asking again", self.device_id, cid[:12])
            self._request([cid], unicast=True)
            return
        t.wanted.discard(cid)
        t.chunks_fetched += 1
        t.bytes_fetched += len(data)
        self._drop_shared(t, [self.topics.chunk(cid)])
        if t.wanted:
            self._request(self._next_wanted())
        else:
            self._complete()

    def _complete(self) -> None:
        t = self.transfer
        assert t is not None
        target = self.agent.incoming_path(t.recipe.digest)
        if target is not None:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        if not self.store.assemble(t.recipe, target):
            # a chunk vanished from disk or the recipe lies: fetch what is missing again
            t.wanted = set(self.store.missing(t.recipe))
            if t.wanted:
                self._request(self._next_wanted())
                return
            self._drop_shared(t)
            self.transfer = None
            self._finish(t.desired, Result(False, self.device_id, t.recipe.digest, "tampered",
                                           "assembled bundle does not match the recipe's sha256"), t.figures())
            return
        save_recipe(self.recipes_dir, t.recipe)
        self._drop_shared(t)
        self.transfer = None
        figures = t.figures()
        log.info("%s: transfer of %s complete: %d byte(s) in %d chunk(s) of a %d-byte bundle, %.1fs", self.device_id,
                 _short(t.recipe.digest), figures["bytes_fetched"], figures["chunks_fetched"], figures["bytes_total"],
                 figures["seconds"])
        self._apply(t.desired, figures)

    def _apply(self, doc: dict, figures: dict | None) -> None:
        digest = doc["digest"]
        if doc["action"] == "stage":
            result = Result(True, self.device_id, digest, "", "staged", {})
        else:
            result = self.agent.activate(digest)
        if figures is not None:
            result.figures = {**(result.figures or {}), "transfer": figures}
        if result.ok:  # before reporting, so the report (disk_bytes) describes the device as it stays
            self._gc_chunks()
        self._finish(doc, result, transfer=figures)

    def _finish(self, doc: dict | None, result: Result, transfer: dict | None = None) -> None:
        _log_result(self.device_id, (doc or {}).get("action", "desired"), result)
        self.last_result = result.to_dict()
        if transfer is not None:
            self.last_transfer = transfer
        if doc is not None:
            self._save_seq(doc["seq"])
        self._event("result", ok=result.ok, digest=result.digest, reason=result.reason, message=result.message)
        self.report()
        self.converged.set()

    # --- reuse of kept releases ---------------------------------------------------------------

    def _seed_from_releases(self, recipe: Recipe) -> None:
        """Releases installed without a recipe (SSH, local): re-pack them (the tar is deterministic),
        cut them with the same parameters, and keep the chunks the new release needs."""
        releases = getattr(self.agent, "releases", None)
        if releases is None or not Path(releases).is_dir():
            return
        needed = set(self.store.missing(recipe))
        for folder in sorted(Path(releases).iterdir()):
            if not needed:
                return
            known = self.recipes_dir / f"{folder.name}.json"
            if known.exists() or not (folder / artifact.SUMS).is_file():
                continue
            with tempfile.TemporaryDirectory(dir=self.root) as tmp:
                tar = artifact.pack(folder, Path(tmp) / "release.tar")
                data = tar.read_bytes()
                local = chunk_bundle(tar, f"sha256:{folder.name}", recipe.params)
                offset = 0
                for cid, size in local.chunks:
                    if cid in needed:
                        self.store.put(cid, data[offset:offset + size])
                        needed.discard(cid)
                    offset += size
                save_recipe(self.recipes_dir, local)

    def _gc_chunks(self) -> None:
        """Keep only chunks of releases still on the device (their recipes); drop the rest."""
        keep_digests = self.agent.kept_digests()
        keep: set[str] = set()
        if not self.recipes_dir.is_dir():
            return
        for path in self.recipes_dir.glob("*.json"):
            if f"sha256:{path.stem}" not in keep_digests:
                path.unlink(missing_ok=True)
                continue
            try:
                keep.update(Recipe.from_json(json.loads(path.read_text())).ids())
            except (OSError, ValueError):
                continue
        if self.transfer is not None:
            keep.update(self.transfer.recipe.ids())
        self.store.retain(keep)

    # --- http(s) ------------------------------------------------------------------------------

    def _fetch_url(self, doc: dict) -> None:
        """Download desired.url into incoming/ (resuming a partial download with Range), then apply."""
        digest, url = doc["digest"], doc["url"]
        target = Path(self.agent.incoming_path(digest))
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        limit = self._byte_limit(doc)
        have = part.stat().st_size if part.exists() else 0
        if have > limit:
            part.unlink()
            have = 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        context = ssl.create_default_context(cafile=self.ca) if url.startswith("https") else None
        log.info("%s: downloading %s from %s%s", self.device_id, _short(digest), url, f" (resuming at {have})" if have else "")
        started, fetched = time.time(), 0
        try:
            with urllib.request.urlopen(request, timeout=self.http_timeout_s, context=context) as resp:
                if resp.status != 206:
                    have = 0
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and have + int(declared) > limit:
                    raise _Oversize(f"{url}: {have + int(declared)} bytes declared, over the limit of {limit}")
                with open(part, "ab" if have else "wb") as out:
                    while block := resp.read(min(1 << 20, limit - have - fetched + 1)):
                        if have + fetched + len(block) > limit:  # an endless or lying server: stop at the limit
                            raise _Oversize(f"{url}: more than the limit of {limit} bytes")
                        out.write(block)
                        fetched += len(block)
                    out.flush()
                    os.fsync(out.fileno())
        except _Oversize as err:
            part.unlink(missing_ok=True)
            self._finish(doc, Result(False, self.device_id, digest, "oversize", str(err)))
            return
        except (urllib.error.URLError, OSError, ValueError) as err:
            self._finish(doc, Result(False, self.device_id, digest, "unreachable", f"{url}: {err}"))
            return
        try:
            got = artifact.bundle_digest(part, self.agent.config.max_members)
        except ArtifactError as err:
            part.unlink(missing_ok=True)
            self._finish(doc, Result(False, self.device_id, digest, err.reason, f"{url}: {err}"))
            return
        expected_sha = doc.get("sha256")
        if got != digest or (expected_sha and _sha256(part) != expected_sha):
            part.unlink(missing_ok=True)
            self._finish(doc, Result(False, self.device_id, digest, "tampered", f"{url}: content is not {digest}"))
            return
        os.replace(part, target)
        self._apply(doc, {"digest": digest, "bytes_fetched": fetched, "source": "url",
                          "seconds": round(time.time() - started, 3)})


def _short(digest: str | None) -> str:
    return artifact.short(digest) if digest else "-"


def _log_result(device_id: str, action: str, result: Result) -> None:
    """One line per outcome, the refusals with their reason: the device log an operator reads."""
    if result.ok:
        p95 = (result.figures or {}).get("p95_ms")
        extra = f" (smoke p95 {p95:.3g} ms)" if isinstance(p95, (int, float)) else ""
        log.info("%s: %s %s: %s%s", device_id, action, _short(result.digest), result.message or "ok", extra)
    else:
        log.warning("%s: %s %s REFUSED: %s: %s", device_id, action, _short(result.digest), result.reason or "error",
                    result.message)


class _Oversize(Exception):
    """A download went past the bundle's signed size or max_bundle_mb."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class Ticker:
    """Calls `tick()` of each service on its worker every `interval` seconds (one thread for many)."""

    def __init__(self, services: list[DeviceService], interval: float = 1.0):
        self.services, self.interval = services, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeship-mqtt-ticker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for svc in list(self.services):
                svc.client.worker.submit(svc.tick)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
