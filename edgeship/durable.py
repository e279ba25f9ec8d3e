"""Make several freshly written files durable with as few filesystem journal commits as possible.

Why: unpacking a release writes a handful of small files and must fsync each before the release is
renamed into place. fsync-ing each right after writing it costs one journal commit per file (with
delayed allocation the next file's blocks are not even allocated yet), which on a busy disk is
tens of milliseconds each. Starting the writeback of every file first (Linux `sync_file_range`)
lets the first fsync commit them all; the later fsyncs still run, each file is still on disk
before this returns, and they find little left to do. Where `sync_file_range` is missing (not
Linux, no libc), each file is simply fsynced.
"""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path

_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of dirty pages, do not wait
_FSYNC_OPEN = os.O_RDONLY if os.name == "posix" else os.O_RDWR  # Windows fsyncs only a writable handle
_UNSET = object()
_sync_file_range = _UNSET  # looked up on first use (tests set None to take the portable path)


@lru_cache(maxsize=1)
def _load_sync_file_range():
    """libc's sync_file_range from the running process's own symbols (no library search: that
    spawns ldconfig); None where there is none (not Linux)."""
    if os.name != "posix":
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _writeback_call():
    return _load_sync_file_range() if _sync_file_range is _UNSET else _sync_file_range


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages now (a hint: errors are ignored;
    the fsync that follows is what guarantees durability)."""
    call = _writeback_call()
    if call is not None:
        call(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def fsync_all(paths: list[Path]) -> None:
    """fsync every file in `paths` (written and closed by the caller), writeback started for all
    first. One file open at a time: a bundle may hold many members."""
    if _writeback_call() is not None:
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                start_writeback(fd)
            finally:
                os.close(fd)
    for path in paths:
        fd = os.open(path, _FSYNC_OPEN)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
