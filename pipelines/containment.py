"""Which folders a manifest may read its model and data from.

Manifests may come from a git branch (`edgeship reconcile`), written by anyone who can push to it.
A model or data path is read on the manager and its bytes go into a signed artifact shipped to
devices, so a manifest must not be able to name `/etc/passwd` or `../../.ssh/id_ed25519` as its
model. Paths are therefore confined to the manifest's own folder, after following symlinks. Other
folders are allowed only by whoever runs edgeship, never by the manifest itself: `--allow-path DIR`
on `validate` and `build`, or `EDGESHIP_ALLOW_PATHS` (folders separated by `os.pathsep`) for every
command, e.g. in a reconcile service's environment. `reconcile` allows the folder it reads the
manifests from (a checkout of the branch), so a pipeline may use `../models/` inside the repository;
a symlink committed there that points out of it is still refused.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

ENV = "EDGESHIP_ALLOW_PATHS"


def allowed_roots() -> list[Path]:
    """The folders allowed beyond each manifest's own, from EDGESHIP_ALLOW_PATHS (resolved)."""
    raw = os.environ.get(ENV, "")
    return [Path(os.path.expanduser(p)).resolve() for p in raw.split(os.pathsep) if p.strip()]


@contextmanager
def allowing(folders: list[str]):
    """Allow more folders for a block: this process and the processes it starts (the CLI's
    --allow-path, spawned -j workers), restored afterwards so in-process callers are unchanged."""
    before = os.environ.get(ENV)
    current = [p for p in (before or "").split(os.pathsep) if p.strip()]
    added = [os.path.abspath(f) for f in folders if os.path.abspath(f) not in current]
    os.environ[ENV] = os.pathsep.join(current + added)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def outside(base_dir: Path, path: Path) -> bool:
    """True when `path` (symlinks followed) is neither under `base_dir` nor under an allowed folder."""
    real = Path(path).resolve()
    return not any(real.is_relative_to(root) for root in [Path(base_dir).resolve(), *allowed_roots()])
