"""The JSON documents on the topics, in one place so the device and the manager agree.

desired (retained, QoS 1), written by the manager:
    {"seq": 1764057600000000000,          # increases with every publish; the device acts once per seq
     "action": "activate" | "stage" | "rollback",
     "digest": "sha256:...",               # activate / stage
     "recipe": {...chunks.Recipe...},      # how to fetch it over MQTT, or
     "url": "https://host/kws.tar"}        # fetch it over HTTP(S) instead

reported (retained), written by the device:
    {"device_id", "seq" (last desired handled), "current", "previous", "releases", "staged",
     "last_result": Result.to_dict(), "transfer": {...figures of the last fetch...}, "ts"}

status (retained): {"state": "online"|"offline", "ts"}; the offline one is the device's last will.
req: {"digest", "chunks": [ids], "rid"}   chunks: binary frames (chunks.encode_frame)
"""

from __future__ import annotations

import json
import time

ACTIONS = ("activate", "stage", "rollback")


class ProtocolError(ValueError):
    """A message on a topic is not the shape the protocol says."""


def dumps(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def loads(payload: bytes) -> dict:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as err:
        raise ProtocolError(f"not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("not a JSON object")
    return doc


def check_desired(doc: dict) -> dict:
    """Validate a desired-state document; raise ProtocolError with what is wrong."""
    if not isinstance(doc.get("seq"), int):
        raise ProtocolError("desired.seq must be an integer")
    action = doc.get("action")
    if action not in ACTIONS:
        raise ProtocolError(f"desired.action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if action != "rollback":
        digest = doc.get("digest")
        if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
            raise ProtocolError("desired.digest must be 'sha256:<64 hex>'")
        url = doc.get("url")
        if action == "stage" and doc.get("recipe") is None and not url:
            raise ProtocolError("desired stage needs a chunk recipe or a url")
        if url is not None and not (isinstance(url, str) and url.split("://", 1)[0] in ("http", "https")):
            raise ProtocolError("desired.url must be an http:// or https:// URL")
    return doc


def status_doc(state: str) -> bytes:
    return dumps({"state": state, "ts": round(time.time(), 3)})
