"""The JSON documents on the topics, in one place so the device and the manager agree.

desired (retained, QoS 1), written by the manager and signed (see fleet/desired_state.py):
    {"seq": 42,                            # per-device counter; the device acts once per seq, in order
     "device": "cam-01",                   # the one device this intent is for
     "action": "activate" | "stage" | "rollback",
     "digest": "sha256:...",               # activate / stage
     "size": 123456,                       # bytes of the bundle (.tar): the most a fetch may write
     "recipe": {...chunks.Recipe...},      # how to fetch it over MQTT, or
     "url": "https://host/kws.tar",        # fetch it over HTTP(S) instead
     "fanout": true,                       # optional: chunks come on the shared <p>/chunks/<sha256> topics
     "sig": {"algorithm": "ed25519", "key_id", "signature"}}

reported (retained), written by the device:
    {"device_id", "seq" (last desired handled), "current", "previous", "releases", "staged",
     "last_result": Result.to_dict(), "transfer": {...figures of the last fetch...}, "ts"}

status (retained): {"state": "online"|"offline", "ts"}; the offline one is the device's last will. The
    online ones (birth and heartbeat) add "device": {agent_version, python, arch, runtimes, free_bytes,
    mem_total_bytes, mem_available_bytes} (fleet/device_info.py); `reported` carries it too.
req: {"digest", "chunks": [ids], "rid", "fanout"?}   chunks: binary frames (chunks.encode_frame)
"""

from __future__ import annotations

import json
import time

ACTIONS = ("activate", "stage", "rollback")
MAX_SEQ = 2**63 - 1


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
    seq = doc.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq <= MAX_SEQ:
        raise ProtocolError(f"desired.seq must be an integer from 1 to {MAX_SEQ}")
    size = doc.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ProtocolError("desired.size must be a positive integer")
    if "fanout" in doc and not isinstance(doc["fanout"], bool):
        raise ProtocolError("desired.fanout must be true or false")
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


def status_doc(state: str, device: dict | None = None) -> bytes:
    """`device`: the birth and heartbeat messages carry device_info (versions, free disk, memory)."""
    return dumps({"state": state, "ts": round(time.time(), 3), **({"device": device} if device else {})})
