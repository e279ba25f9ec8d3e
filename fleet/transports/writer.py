"""Who is uploading to a device: a stable id per manager state folder.

Two managers with different state folders pushing the same release to one device must not write
the same file; one manager whose upload was cut must still resume its own. So an upload goes to
`incoming/<hex>.tar.<writer>.part` (writer = this id) and is renamed to `incoming/<hex>.tar` only
once complete and checked; the rename is atomic, so the last complete copy wins and is whole.
"""

from __future__ import annotations

import os
import re
import secrets

from edgeship.paths import state_dir

_ID = re.compile(r"^[0-9a-f]{16}$")


def writer_id() -> str:
    """This state folder's writer id (made once, kept in `<state dir>/writer-id`)."""
    path = state_dir() / "writer-id"
    try:
        text = path.read_text().strip()
        if _ID.match(text):
            return text
        path.unlink()  # damaged: make a new one
    except OSError:
        pass
    token = secrets.token_hex(8)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another process of this manager made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def part_name(hexd: str, writer: str) -> str:
    """The file a writer uploads a bundle into, next to `<hex>.tar`."""
    return f"{hexd}.tar.{writer}.part"
