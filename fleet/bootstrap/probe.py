"""What a board is, asked over SSH with its own Python: the facts wheels and installs depend on."""

from __future__ import annotations

import json
from dataclasses import dataclass

MIN_PYTHON = (3, 10)

# Runs on the board with its system Python (any 3.x): prints one JSON line.
PROBE = r"""
import json, os, platform, shutil, sys
def free(p):
    while p and not os.path.exists(p):
        p = os.path.dirname(p)
    return shutil.disk_usage(p or "/").free
libc = platform.libc_ver()
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "implementation": sys.implementation.name,
                  "arch": platform.machine(), "libc": libc[0], "libc_version": libc[1],
                  "free_bytes": free(sys.argv[1]), "systemd": os.path.isdir("/run/systemd/system"),
                  "uid": os.getuid()}))
"""


@dataclass(frozen=True)
class Board:
    python: str  # "3.11.7"
    arch: str  # platform.machine(): x86_64, aarch64, armv7l
    libc: str  # "glibc" or "" (musl)
    libc_version: str  # "2.36"
    free_bytes: int
    systemd: bool
    uid: int
    implementation: str = "cpython"

    @classmethod
    def from_json(cls, text: str) -> "Board":
        data = json.loads(text.strip().splitlines()[-1])
        return cls(python=data["python"], arch=data["arch"], libc=data.get("libc") or "",
                   libc_version=data.get("libc_version") or "", free_bytes=int(data["free_bytes"]),
                   systemd=bool(data.get("systemd")), uid=int(data.get("uid", -1)),
                   implementation=data.get("implementation", "cpython"))

    @property
    def python_minor(self) -> str:
        return ".".join(self.python.split(".")[:2])

    @property
    def tag(self) -> str:
        """The wheelhouse folder for this board: `cp311-x86_64`."""
        return f"cp{self.python_minor.replace('.', '')}-{self.arch}"

    def problems(self, min_free_bytes: int) -> list[str]:
        found = []
        version = tuple(int(x) for x in self.python.split(".")[:2])
        if self.implementation != "cpython":
            found.append(f"Python is {self.implementation}, the agent's wheels are for CPython")
        if version < MIN_PYTHON:
            found.append(f"Python {self.python} is too old (the agent needs {'.'.join(map(str, MIN_PYTHON))}+)")
        if self.libc != "glibc":
            found.append("no glibc found (musl boards need wheels built for them: not supported)")
        if self.free_bytes < min_free_bytes:
            found.append(f"{self.free_bytes / 2**20:.0f} MB free where the agent goes, under the "
                         f"{min_free_bytes / 2**20:.0f} MB an install needs")
        return found
