"""Where edgeship keeps its state. One place so tests can point everything at a temp dir."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The state dir: build cache, artifact store, journals, keys. `EDGESHIP_HOME` overrides."""
    env = os.environ.get("EDGESHIP_HOME")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeship"
    base.mkdir(parents=True, exist_ok=True)
    return base


def keys_dir() -> Path:
    path = state_dir() / "keys"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_signing_key() -> Path:
    """`EDGESHIP_SIGNING_KEY` names the private key; else the state dir's generated one."""
    env = os.environ.get("EDGESHIP_SIGNING_KEY")
    return Path(env) if env else keys_dir() / "signing.key"


def tree_bytes(path: Path) -> int:
    """Bytes under `path`, files and folder entries, symlinks not followed (disk use of a release or environment)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
