"""The fleet inventory: which devices exist, how to reach them, what labels select them.

Read from a `Fleet` manifest. The manifest area (`edgeship.pipelines.manifest.load_documents`)
does the parsing and schema checks; the checks here are the ones only the fleet knows (unique ids,
an address each transport can use, trusted keys that exist), reported as `file:line:col` too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeship.errors import Diagnostic, ManifestError

DEVICE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
KNOWN_TRANSPORTS = ("local", "ssh", "mqtt")
_DEVICE_KEYS = {"id", "target", "transport", "address", "labels", "root", "options"}


@dataclass
class Device:
    id: str
    target: str = "host-cpu"
    transport: str = "local"
    address: str | None = None  # local: absolute device root; ssh: host[:port]; mqtt: None
    labels: dict[str, str] = field(default_factory=dict)
    root: str | None = None  # ssh: remote agent root (overrides transports.ssh.root)
    options: dict[str, Any] = field(default_factory=dict)  # per-device transport overrides


@dataclass
class Fleet:
    name: str
    devices: list[Device]
    transports: dict[str, dict] = field(default_factory=dict)
    trusted_keys: list[Path] = field(default_factory=list)
    source: Path | None = None
    trust_document: Path | None = None  # the trust chain (trust.json) transports deliver to devices

    def device(self, device_id: str) -> Device:
        for dev in self.devices:
            if dev.id == device_id:
                return dev
        raise KeyError(device_id)

    def select(self, selector: dict | None) -> list[Device]:
        """Devices matching a label selector, in manifest order. `selector` is either a plain
        `{label: value}` map or Kubernetes-style `{matchLabels: {...}, matchExpressions: [...]}`
        with operators In, NotIn, Exists, DoesNotExist. An empty selector selects every device."""
        return [d for d in self.devices if matches(selector, d.labels)]

    @property
    def base_dir(self) -> Path:
        """Relative paths in the manifest (keys, known_hosts, local roots) are relative to this."""
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    def resolve(self, value: str | Path) -> Path:
        path = Path(str(value)).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def transport_settings(self, kind: str) -> dict:
        return dict(self.transports.get(kind) or {})


def matches(selector: dict | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    if "matchLabels" in selector or "matchExpressions" in selector:
        match_labels = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
    else:
        match_labels, expressions = selector, []
    if any(str(labels.get(k)) != str(v) or k not in labels for k, v in match_labels.items()):
        return False
    for expr in expressions:
        key, op = expr.get("key"), expr.get("operator")
        values = [str(v) for v in (expr.get("values") or [])]
        present = key in labels
        if op == "In" and not (present and str(labels[key]) in values):
            return False
        if op == "NotIn" and present and str(labels[key]) in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op!r} (use In, NotIn, Exists, DoesNotExist)")
    return True


def parse_selector(items: list[str] | None) -> dict:
    """`--select site=lab --select ring=canary` -> {matchLabels: {...}}; `key` alone means Exists,
    `key!=v` NotIn, `key in (a,b)` In."""
    labels: dict[str, str] = {}
    exprs: list[dict] = []
    for item in items or []:
        for part in _split_selector(item):
            m = re.match(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$", part)
            if m:
                values = [v.strip() for v in m.group(3).split(",") if v.strip()]
                exprs.append({"key": m.group(1), "operator": "In" if m.group(2) == "in" else "NotIn", "values": values})
            elif "!=" in part:
                key, value = part.split("!=", 1)
                exprs.append({"key": key.strip(), "operator": "NotIn", "values": [value.strip()]})
            elif "=" in part:
                key, value = part.split("=", 1)
                labels[key.strip().rstrip("=")] = value.strip().lstrip("=")
            elif part.strip().startswith("!"):
                exprs.append({"key": part.strip()[1:], "operator": "DoesNotExist"})
            elif part.strip():
                exprs.append({"key": part.strip(), "operator": "Exists"})
    selector: dict = {}
    if labels:
        selector["matchLabels"] = labels
    if exprs:
        selector["matchExpressions"] = exprs
    return selector


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


# --- reading the manifest ---------------------------------------------------------------------

def _read_fleet_document(path: Path) -> tuple[dict, Callable[..., tuple[int, int]]]:
    """The Fleet document's data and its `where(path) -> (line, col)` locator, parsed and
    schema-checked by the manifest area's loader (all problems at once, file:line:col)."""
    from edgeship.pipelines.manifest import load_documents

    doc = load_documents(path, kinds={"Fleet"})[0]
    return doc.data, doc.where


def _dotted(field_path: tuple) -> str:
    out = ""
    for key in field_path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def load_fleet(path: Path | str) -> Fleet:
    """Load and check a Fleet manifest; every problem is reported at once as file:line:col."""
    path = Path(path)
    data, where = _read_fleet_document(path)
    base = path.resolve().parent
    diags: list[Diagnostic] = []

    def problem(field_path: tuple, message: str, hint: str = "") -> None:
        line, col = where(field_path)
        diags.append(Diagnostic(str(path), line, col, _dotted(field_path), message, hint))

    transports = data.get("transports") or {}
    if not isinstance(transports, dict):
        problem(("transports",), "must be a mapping of transport kind to settings")
        transports = {}
    trust = data.get("trust") or {}
    trusted: list[Path] = []
    for i, key in enumerate((trust.get("public_keys") or []) if isinstance(trust, dict) else []):
        key_path = Path(str(key)).expanduser()
        key_path = key_path if key_path.is_absolute() else base / key_path
        if not key_path.is_file():
            problem(("trust", "public_keys", i), f"public key file {key_path} does not exist", "edgeship keys generate writes one")
        trusted.append(key_path)

    trust_document = None
    if isinstance(trust, dict) and trust.get("document"):
        trust_document = Path(str(trust["document"])).expanduser()
        trust_document = trust_document if trust_document.is_absolute() else base / trust_document
        if not trust_document.is_file():
            problem(("trust", "document"), f"trust chain {trust_document} does not exist",
                    "edgeship keys root init + keys trust sign write one")

    devices: list[Device] = []
    seen: dict[str, int] = {}
    raw_devices = data.get("devices") or []
    if not isinstance(raw_devices, list) or not raw_devices:
        problem(("devices",), "must be a non-empty list of devices")
        raw_devices = []
    for i, raw in enumerate(raw_devices):
        if not isinstance(raw, dict):
            problem(("devices", i), "each device must be a mapping with at least id and transport")
            continue
        for key in raw:
            if key not in _DEVICE_KEYS:
                problem(("devices", i, key), "unknown field", f"expected one of {', '.join(sorted(_DEVICE_KEYS))}")
        dev_id = str(raw.get("id", ""))
        if not DEVICE_ID.match(dev_id):
            problem(("devices", i, "id"), f"invalid device id {dev_id!r}", "lowercase letters, digits, '.', '_' and '-', starting with a letter or digit")
        elif dev_id in seen:
            problem(("devices", i, "id"), f"duplicate device id {dev_id!r} (first at devices[{seen[dev_id]}])")
        else:
            seen[dev_id] = i
        transport = str(raw.get("transport", "local"))
        if transport not in KNOWN_TRANSPORTS:
            problem(("devices", i, "transport"), f"unknown transport {transport!r}", f"one of {', '.join(KNOWN_TRANSPORTS)}")
        address = raw.get("address")
        if transport in ("local", "ssh") and not address:
            problem(("devices", i), f"device {dev_id}: transport {transport} needs an address",
                    "a directory for local, host[:port] for ssh")
        if transport == "local" and address:
            addr = Path(str(address)).expanduser()
            address = str(addr if addr.is_absolute() else (base / addr))
        labels = raw.get("labels") or {}
        if not isinstance(labels, dict):
            problem(("devices", i, "labels"), "labels must be a mapping of strings")
            labels = {}
        options = raw.get("options") or {}
        devices.append(Device(
            id=dev_id, target=str(raw.get("target", "host-cpu")), transport=transport,
            address=str(address) if address is not None else None,
            labels={str(k): str(v) for k, v in labels.items()},
            root=str(raw["root"]) if raw.get("root") else None,
            options=dict(options) if isinstance(options, dict) else {},
        ))
    if diags:
        raise ManifestError(diags)
    name = str((data.get("metadata") or {}).get("name", path.stem))
    resolved_transports = {str(k): dict(v or {}) for k, v in transports.items()}
    return Fleet(name=name, devices=devices, transports=resolved_transports, trusted_keys=trusted, source=path,
                 trust_document=trust_document)


__all__ = ["Device", "Fleet", "load_fleet", "matches", "parse_selector"]
