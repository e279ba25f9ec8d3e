"""Which toolchains exist: the built-in backends' and third parties' (entry-point group `edgeship.toolchains`).

A third-party entry point names a `Toolchain` object: `mychip = "mychip_edgeship.backend:TOOLCHAIN"`.
Built-in ones are declared by their backend module (light to import: the vendor SDK lives in the
toolchain's own environment, never in edgeship's).
"""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata

from edgeship.errors import UsageError
from edgeship.targets.toolchains.spec import Toolchain

ENTRY_POINT_GROUP = "edgeship.toolchains"
BUILTIN = {"rknn": ("edgeship.targets.backends.rknn", "TOOLCHAIN")}


def _entry_points() -> dict[str, Toolchain]:
    found: dict[str, Toolchain] = {}
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # pragma: no cover - broken metadata must not hide the built-ins
        return found
    for ep in eps:
        try:
            obj = ep.load()
        except Exception as err:
            raise UsageError(f"toolchain {ep.name!r} ({ep.value}) failed to load: {err}") from None
        if not isinstance(obj, Toolchain) or obj.name != ep.name:
            raise UsageError(f"entry point {ep.name!r} ({ep.value}) is not a Toolchain named {ep.name!r}")
        found[ep.name] = obj
    return found


def toolchains() -> dict[str, Toolchain]:
    """name -> Toolchain, built-ins first."""
    found = {name: getattr(importlib.import_module(module), attr) for name, (module, attr) in BUILTIN.items()}
    for name, obj in _entry_points().items():
        found.setdefault(name, obj)
    return found


def get_toolchain(name: str) -> Toolchain:
    known = toolchains()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
        raise UsageError(f"unknown toolchain {name!r} ({hint})")
    return known[name]
