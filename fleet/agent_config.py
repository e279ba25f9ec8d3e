"""The device agent's configuration (`agent.yaml` in the device root, or `--config FILE`).

It lives on the device, not in the fleet manifest: which keys a device trusts is the device's own
decision, so a manager cannot talk it into trusting a new key by pushing a bundle.

    trusted_keys: [trust/signing.pub]      # ed25519 public keys (PEM), relative to this file
    trust_root:                            # the fleet's root of trust (fleet/trust.py); absent = legacy
      keys: [trust/root-1.pub, trust/root-2.pub, trust/root-3.pub]
      threshold: 2                         # root signatures a trust document needs
    target: host-cpu                       # the target profile this device runs; absent = not checked
    keep_releases: 3                       # releases kept on disk (current and previous always kept)
    smoke: {latency_tolerance: 1.5, samples: 4, runs: 5, max_latency_ms: null}
    max_bundle_mb: 2048                    # refuse bundles that download or unpack to more (disk-full)
    max_members: 256                       # refuse bundles with more tar members (too-many-members)
    min_free_mb: null                      # refuse when the unpacked release would leave less free space

With `trust_root`, the newest trust document the device accepted (`trust.json` in the device root)
names the artifact and desired-state keys; `trusted_keys` only count until the first one arrives.
Without it (today's format, a legacy single-level trust) `trusted_keys` are the keys, and trust
documents are refused. `target` binds the device to artifacts built for its chip (bundle.json
`target`); without it the agent warns that any target's artifact would be activated.

The limits are checked against the bundle's signed size (MQTT desired state) and its tar headers
before a byte is written; a missing or null limit means the default, never "unlimited".
    require_signature: true
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgeship.artifact import DEFAULT_MAX_MEMBERS
from edgeship.errors import UsageError

CONFIG_NAME = "agent.yaml"
DEFAULT_MAX_BUNDLE_MB = 2048.0


@dataclass
class SmokeConfig:
    latency_tolerance: float = 1.5  # smoke p95 may be this many times the bundle's p95 budget
    samples: int = 4  # sample inputs taken from samples.npz
    runs: int = 5  # timed runs per sample (after one warm-up run)
    max_latency_ms: float | None = None  # absolute p95 ceiling, whatever the budget says


@dataclass
class AgentConfig:
    trusted_keys: list[Path] = field(default_factory=list)
    keep_releases: int = 3
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    max_bundle_mb: float = DEFAULT_MAX_BUNDLE_MB
    min_free_mb: float | None = None
    require_signature: bool = True
    source: Path | None = None
    max_members: int = DEFAULT_MAX_MEMBERS
    trust_root: list[Path] = field(default_factory=list)  # root public keys; empty = legacy trust
    root_threshold: int = 1
    target: str | None = None

    def warnings(self) -> list[str]:
        """What a legacy config leaves unchecked, said once per command or service start."""
        where = self.source or CONFIG_NAME
        notes = []
        if not self.trust_root:
            notes.append(f"{where}: no trust_root: legacy single-level trust (trusted_keys only; keys cannot be "
                         "rotated or revoked remotely)")
        if not self.target:
            notes.append(f"{where}: no target: artifacts built for any target are accepted (set target: <profile>)")
        return notes

    @property
    def max_bundle_bytes(self) -> int:
        return int(self.max_bundle_mb * 1024 * 1024)

    def to_yaml_dict(self, relative_to: Path | None = None) -> dict:
        def rel(p: Path) -> str:
            if relative_to is not None:
                try:
                    return str(Path(p).resolve().relative_to(Path(relative_to).resolve()))
                except ValueError:
                    pass
            return str(Path(p).resolve())

        return {
            "trusted_keys": [rel(p) for p in self.trusted_keys],
            "keep_releases": self.keep_releases,
            "smoke": {
                "latency_tolerance": self.smoke.latency_tolerance,
                "samples": self.smoke.samples,
                "runs": self.smoke.runs,
                "max_latency_ms": self.smoke.max_latency_ms,
            },
            "max_bundle_mb": self.max_bundle_mb,
            "max_members": self.max_members,
            "min_free_mb": self.min_free_mb,
            "require_signature": self.require_signature,
            **({"trust_root": {"keys": [rel(p) for p in self.trust_root], "threshold": self.root_threshold}}
               if self.trust_root else {}),
            **({"target": self.target} if self.target else {}),
        }


_TOP = {"trusted_keys", "keep_releases", "smoke", "max_bundle_mb", "max_members", "min_free_mb", "require_signature",
        "trust_root", "target"}
_SMOKE = {"latency_tolerance", "samples", "runs", "max_latency_ms"}


def _number(path: Path, key: str, value, *, integer: bool = False, minimum: float = 0, allow_none: bool = True):
    if value is None and allow_none:
        return None
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or value < minimum:
        kind = "an integer" if integer else "a number"
        raise UsageError(f"{path}: {key}: must be {kind} >= {minimum}, got {value!r}")
    return value


def parse_config(data: dict | None, path: Path) -> AgentConfig:
    """Check and convert a config mapping; unknown keys are errors (they are usually typos)."""
    data = data or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: agent config must be a mapping")
    for key in data:
        if key not in _TOP:
            raise UsageError(f"{path}: {key}: unknown key (expected one of {', '.join(sorted(_TOP))})")
    keys = data.get("trusted_keys") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise UsageError(f"{path}: trusted_keys: must be a list of public key file paths")
    base = path.parent
    trusted = [_relative_to(base, k) for k in keys]
    root_keys, root_threshold = _trust_root(data.get("trust_root"), path)
    target = data.get("target")
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise UsageError(f"{path}: target: must be a target profile name, e.g. host-cpu")
    smoke_data = data.get("smoke") or {}
    if not isinstance(smoke_data, dict):
        raise UsageError(f"{path}: smoke: must be a mapping")
    for key in smoke_data:
        if key not in _SMOKE:
            raise UsageError(f"{path}: smoke.{key}: unknown key (expected one of {', '.join(sorted(_SMOKE))})")
    smoke = SmokeConfig(
        latency_tolerance=float(_number(path, "smoke.latency_tolerance", smoke_data.get("latency_tolerance", 1.5), allow_none=False)),
        samples=int(_number(path, "smoke.samples", smoke_data.get("samples", 4), integer=True, minimum=1, allow_none=False)),
        runs=int(_number(path, "smoke.runs", smoke_data.get("runs", 5), integer=True, minimum=1, allow_none=False)),
        max_latency_ms=_number(path, "smoke.max_latency_ms", smoke_data.get("max_latency_ms")),
    )
    require = data.get("require_signature", True)
    if not isinstance(require, bool):
        raise UsageError(f"{path}: require_signature: must be true or false")
    return AgentConfig(
        trusted_keys=trusted,
        keep_releases=int(_number(path, "keep_releases", data.get("keep_releases", 3), integer=True, minimum=2, allow_none=False)),
        smoke=smoke,
        max_bundle_mb=_number(path, "max_bundle_mb", data.get("max_bundle_mb"), minimum=0.001) or DEFAULT_MAX_BUNDLE_MB,
        max_members=int(_number(path, "max_members", data.get("max_members"), integer=True, minimum=1)
                        or DEFAULT_MAX_MEMBERS),
        min_free_mb=_number(path, "min_free_mb", data.get("min_free_mb")),
        require_signature=require,
        source=path,
        trust_root=root_keys,
        root_threshold=root_threshold,
        target=target,
    )


def _relative_to(base: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base / path


def _trust_root(data, path: Path) -> tuple[list[Path], int]:
    """`trust_root: {keys: [...], threshold: N}` -> (key paths, threshold); absent -> ([], 1)."""
    if data is None:
        return [], 1
    if not isinstance(data, dict) or set(data) - {"keys", "threshold"}:
        raise UsageError(f"{path}: trust_root: must be a mapping with keys (root public key files) and threshold")
    keys = data.get("keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise UsageError(f"{path}: trust_root.keys: must be a non-empty list of root public key files")
    threshold = _number(path, "trust_root.threshold", data.get("threshold", 1), integer=True, minimum=1, allow_none=False)
    if threshold > len(keys):
        raise UsageError(f"{path}: trust_root.threshold: {threshold} is more than the {len(keys)} root key(s)")
    return [_relative_to(path.parent, k) for k in keys], int(threshold)


def load_config(path: Path) -> AgentConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UsageError(f"{path}: cannot read agent config: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UsageError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from None
    return parse_config(data, path)


def config_for_root(root: Path, explicit: Path | None = None) -> AgentConfig:
    """`explicit` if given, else `<root>/agent.yaml`, else defaults (which trust no key)."""
    if explicit is not None:
        return load_config(explicit)
    candidate = Path(root) / CONFIG_NAME
    if candidate.exists():
        return load_config(candidate)
    return AgentConfig()


def write_config(root: Path, config: AgentConfig) -> Path:
    """Write `<root>/agent.yaml` atomically (used by `edgeship agent init` and transports' provisioning)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / CONFIG_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config.to_yaml_dict(relative_to=root), sort_keys=False))
    tmp.replace(path)
    return path
