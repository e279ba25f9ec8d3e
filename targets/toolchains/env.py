"""Toolchain environments on disk: create (python -m venv + pip), inspect, remove.

Layout: `<root>/<name>-<hash of the requirement set>/` is a virtualenv with `edgeship-toolchain.json`
written last, so a half-built environment (killed install, full disk) is never taken for a working
one. `<root>` is `$EDGESHIP_TOOLCHAIN_CACHE` when set (CI keeps it between runs on one machine), else
`state_dir()/toolchains`. An install builds in `<dir>.partial` and renames it into place; a file lock
keeps two installs of the same environment from racing.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from edgeship.errors import ToolchainError
from edgeship.paths import state_dir, tree_bytes
from edgeship.targets.toolchains.interpreter import find_python
from edgeship.targets.toolchains.process import stream
from edgeship.targets.toolchains.spec import Toolchain

CACHE_ENV = "EDGESHIP_TOOLCHAIN_CACHE"
MARKER = "edgeship-toolchain.json"
INSTALL_TIMEOUT_S = 3600.0
HEARTBEAT_S = 15.0  # a "still working" progress line after this long without output from pip


def root() -> Path:
    env = os.environ.get(CACHE_ENV)
    path = Path(env) if env else state_dir() / "toolchains"
    path.mkdir(parents=True, exist_ok=True)
    return path


def install_command(name: str) -> str:
    return f"edgeship toolchain install {name}"


@dataclass
class ToolchainEnv:
    """One toolchain's environment under the cache root."""

    toolchain: Toolchain

    @property
    def path(self) -> Path:
        return root() / self.toolchain.dirname

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def installed(self) -> bool:
        return (self.path / MARKER).is_file() and self.python.exists()

    def record(self) -> dict:
        """What the install wrote about itself (empty when not installed)."""
        try:
            return json.loads((self.path / MARKER).read_text())
        except (OSError, ValueError):
            return {}

    def stale(self) -> list[Path]:
        """Environments of the same toolchain with another requirement hash (left by an older pin set)."""
        return sorted(p for p in root().glob(f"{self.toolchain.name}-*")
                      if p.is_dir() and p.name != self.toolchain.dirname and not p.name.endswith(".partial")
                      and p.name[len(self.toolchain.name) + 1:].isalnum())

    def require(self) -> None:
        """ToolchainError with the exact install command when the environment is not there."""
        if not self.installed:
            raise ToolchainError(self.toolchain.name, f"not installed: run `{install_command(self.toolchain.name)}` "
                                 f"(creates {self.path})", stage="lower")

    # -- install / remove ------------------------------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        lock_path = root() / f".{self.toolchain.name}.lock"
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def install(self, progress: Callable[[str], None] = lambda line: None, force: bool = False,
                timeout: float = INSTALL_TIMEOUT_S) -> dict:
        """Create the environment (no-op when already installed, unless force). Returns its record."""
        with self._lock():
            if self.installed and not force:
                return self.record()
            python, version = find_python(self.toolchain)
            partial = self.path.with_name(self.path.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            started = time.monotonic()
            deadline = started + timeout
            progress(f"creating virtualenv with {python} (CPython {version[0]}.{version[1]}) in {self.path}")
            self._run([python, "-m", "venv", str(partial)], progress, deadline)
            pip = [str(partial / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off",
                   "--disable-pip-version-check", *self.toolchain.pip_options]
            if self.toolchain.requirements:
                progress(f"pip install {' '.join(self.toolchain.requirements)}")
                self._run([*pip, *self.toolchain.requirements], progress, deadline)
            if self.toolchain.no_deps:
                progress(f"pip install --no-deps {' '.join(self.toolchain.no_deps)}")
                self._run([*pip, "--no-deps", *self.toolchain.no_deps], progress, deadline)
            freeze = subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "freeze", "--all"],
                                    capture_output=True, text=True, timeout=120).stdout.split()
            record = {"toolchain": self.toolchain.name, "key": self.toolchain.key(),
                      "requirements": list(self.toolchain.requirements), "no_deps": list(self.toolchain.no_deps),
                      "python": f"{version[0]}.{version[1]}", "base_python": python,
                      "install_seconds": round(time.monotonic() - started, 1),
                      "size_bytes": tree_bytes(partial), "packages": freeze,
                      "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (partial / MARKER).write_text(json.dumps(record, indent=2))
            shutil.rmtree(self.path, ignore_errors=True)
            partial.rename(self.path)
            _fix_venv_paths(partial, self.path)
            progress(f"installed {self.toolchain.name} in {record['install_seconds']} s, "
                     f"{record['size_bytes'] / 1e6:.0f} MB")
            return record

    def _run(self, cmd: list[str], progress: Callable[[str], None], deadline: float) -> None:
        """Run an install step, passing each output line to `progress`; ToolchainError naming the step."""
        env = {**os.environ, "PIP_NO_INPUT": "1", "PYTHONNOUSERSITE": "1"}
        done = stream(cmd, progress, timeout=max(1.0, deadline - time.monotonic()), env=env, heartbeat_s=HEARTBEAT_S)
        step = " ".join(Path(cmd[0]).name.split() + cmd[1:4])
        if done.timed_out:
            raise ToolchainError(self.toolchain.name, f"install ran out of time and was stopped during `{step} ...` "
                                 f"(retry with `{install_command(self.toolchain.name)}`)")
        if done.returncode != 0:
            errors = [t for t in done.tail if "error" in t.lower()] or done.tail or ["no output"]
            raise ToolchainError(self.toolchain.name, f"install failed at `{step} ...` (exit {done.returncode}): "
                                 f"{errors[-1].strip()[:300]} (retry with `{install_command(self.toolchain.name)} --force`)")

    def remove(self) -> list[Path]:
        """Delete this environment and stale ones of the same toolchain; the folders removed."""
        with self._lock():
            gone = [p for p in [self.path, self.path.with_name(self.path.name + ".partial"), *self.stale()] if p.exists()]
            for path in gone:
                shutil.rmtree(path)
            return gone


def _fix_venv_paths(old: Path, new: Path) -> None:
    """A venv records its folder in bin/activate* and script shebangs; rewrite them after the rename.

    edgeship always runs `bin/python` directly (which finds its prefix from pyvenv.cfg), so this only
    keeps `bin/pip` and `source bin/activate` usable for a person debugging the environment.
    """
    for script in (new / "bin").iterdir():
        if script.is_symlink() or not script.is_file() or script.stat().st_size > 1_000_000:
            continue
        try:
            text = script.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if str(old) in text:
            script.write_text(text.replace(str(old), str(new)))
