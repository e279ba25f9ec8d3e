"""What a toolchain is: a name, the packages its vendor SDK needs, the Python it runs on, its worker.

A backend whose vendor SDK pins old dependencies (rknn-toolkit2: torch <= 2.4, numpy <= 1.26) declares
a `Toolchain`; edgeship builds a virtualenv for it under the state folder, keyed by a hash of the
requirement set, so changing one pin makes a new environment instead of mutating a working one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

WORKERS_DIR = Path(__file__).resolve().parent / "workers"


@dataclass(frozen=True)
class Toolchain:
    """One vendor SDK environment.

    requirements: pip requirement lines installed together (the resolver sees them all at once).
    no_deps: requirement lines installed afterwards with `--no-deps` (a vendor wheel whose declared
      dependencies would drag in something huge that it does not need for our use, said in `notes`).
    python: the CPython versions the vendor ships wheels for, as "3.10-3.12" or "3.11".
    worker: file name under targets/toolchains/workers/, run by the environment's interpreter; it may
      import only the standard library, its environment's packages and `_worker_io` beside it.
    probe: Python modules the doctor imports in the environment to prove it works.
    """

    name: str
    requirements: tuple[str, ...]
    python: str
    worker: str
    no_deps: tuple[str, ...] = ()
    pip_options: tuple[str, ...] = ()
    probe: tuple[str, ...] = ()
    description: str = ""
    notes: tuple[str, ...] = field(default=())

    def python_range(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(lowest, highest) (major, minor) this toolchain accepts."""
        low, _, high = self.python.partition("-")
        high = high or low
        return _version(low), _version(high)

    def accepts(self, version: tuple[int, int]) -> bool:
        low, high = self.python_range()
        return low <= tuple(version[:2]) <= high

    def key(self) -> str:
        """Short digest of everything that decides the environment's contents."""
        payload = {"requirements": sorted(self.requirements), "no_deps": sorted(self.no_deps),
                   "pip_options": list(self.pip_options), "python": self.python}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.key()}"

    @property
    def worker_path(self) -> Path:
        return WORKERS_DIR / self.worker


def _version(text: str) -> tuple[int, int]:
    parts = text.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise ValueError(f"python version must look like '3.11', not {text!r}")
    return int(parts[0]), int(parts[1])
