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
           cwd: str | None = None, keep: int = 40, heartbeat_s: float | None = None) -> Finished:
    """Run `cmd`, call `on_line` for each output line (stdout and stderr merged), stop it after `timeout` s.

    heartbeat_s: when the child is silent that long (pip downloading a 780 MB wheel prints nothing until
    it is done), call `on_line` with a "still working" line, so a person watching knows it is alive.
    """
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=keep)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd, start_new_session=True, text=True, errors="replace", bufsize=1)

    count = [0]  # lines seen so far (the heartbeat speaks only when this stops moving)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\r\n")
            if line.strip():
                tail.append(line)
                count[0] += 1
                on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = started + timeout
    code: int | None = None
    seen = 0
    while True:
        step = max(0.0, deadline - time.monotonic())
        if heartbeat_s:
            step = min(step, heartbeat_s)
        try:
            code = proc.wait(timeout=step)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                stop(proc)
                code = None
                break
            if count[0] == seen and tail:
                on_line(f"... still working ({time.monotonic() - started:.0f} s since the step began): "
                        f"{tail[-1].strip()[:120]}")
            seen = count[0]
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
