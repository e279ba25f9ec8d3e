"""Find a CPython the toolchain accepts: this one if it fits, else `python3.X` on PATH.

Vendor wheels exist for a few CPython versions only (rknn-toolkit2 2.5.0: 3.10-3.12), so the
environment may need another interpreter than edgeship's own. uv is not assumed; `python -m venv`
with the found interpreter is what builds the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgeship.errors import ToolchainError
from edgeship.targets.toolchains.spec import Toolchain

ENV_PYTHON = "EDGESHIP_TOOLCHAIN_PYTHON"  # force one interpreter (path), e.g. in CI images


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        major, minor = out.split(".")
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def candidates(toolchain: Toolchain) -> list[str]:
    """Interpreters to try, in order: the forced one, this one, python3.X for each accepted X (newest first)."""
    forced = os.environ.get(ENV_PYTHON)
    if forced:
        return [forced]
    (low_major, low_minor), (high_major, high_minor) = toolchain.python_range()
    found = [sys.executable]
    if low_major == high_major:
        pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
        for minor in range(high_minor, low_minor - 1, -1):
            name = f"python{low_major}.{minor}"
            path = shutil.which(name)
            if path:
                found.append(path)
            # pyenv's shims fail for versions that are installed but not selected: ask the versions directly
            found.extend(str(p) for p in sorted(pyenv.glob(f"{low_major}.{minor}.*/bin/{name}"), reverse=True))
    return found


def find_python(toolchain: Toolchain) -> tuple[str, tuple[int, int]]:
    """(interpreter path, (major, minor)) that the toolchain accepts; ToolchainError saying what to install."""
    seen = []
    for python in candidates(toolchain):
        version = _version_of(python)
        seen.append(f"{python} ({'%d.%d' % version if version else 'does not run'})")
        if version and toolchain.accepts(version) and _has_venv(python):
            return python, version
    raise ToolchainError(toolchain.name, f"needs CPython {toolchain.python} with the venv module; found only "
                         f"{', '.join(seen)} (install python{toolchain.python.split('-')[-1]} and its venv "
                         f"package, or set {ENV_PYTHON}=/path/to/python)")


def _has_venv(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import venv, ensurepip"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
