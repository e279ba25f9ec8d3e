"""Run a child process with its output streamed line by line and a hard time limit.

Shared by environment installs (pip's lines become progress) and worker runs (the vendor's log
streams to the user). The child gets its own process group so a timeout stops it and everything it
started (pip's build backends, a vendor's compiler subprocesses).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Finished:
    returncode: int | None  # None: stopped at the time limit
    seconds: float
    tail: list[str] = field(default_factory=list)  # the last output lines (for one-line errors)

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def stream(cmd: list[str], on_line: Callable[[str], None], timeout: float, env: dict | None = None,
           cwd: str | None = None, keep: int = 40) -> Finished:
    """Run `cmd`, call `on_line` for each output line (stdout and stderr merged), stop it after `timeout` s."""
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=keep)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd, start_new_session=True, text=True, errors="replace", bufsize=1)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\r\n")
            if line.strip():
                tail.append(line)
                on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        stop(proc)
        code = None
    reader.join(timeout=10)
    return Finished(code, time.monotonic() - started, list(tail))


def stop(proc: subprocess.Popen) -> None:
    """TERM the child's process group, KILL it if still there after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
