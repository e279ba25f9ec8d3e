"""The wheelhouse: every wheel `edgeship[agent]` needs, per board platform, built on this machine.

Boards are often offline, so nothing is fetched on the board: `pip download` here resolves the
agent's dependencies for the board's Python version and architecture (`--platform
manylinux_<glibc>_<arch> --python-version X.Y --only-binary=:all:`, so no sdist is ever built for a
foreign CPU) and `pip wheel --no-deps` builds edgeship itself from a checkout. Layout:

    <out>/cp311-aarch64/*.whl + wheelhouse.json   (python, arch, glibc, extras, wheels: {name: sha256})

Each folder holds exactly one resolution (stale wheels of an older one are dropped); wheels already
there are reused, so a rebuild downloads only what changed. pip itself is included: the board runs
it from its wheel (`python pip-*.whl/pip install ...`), so a board Python without ensurepip works.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeship import __version__
from edgeship.artifact import sha256_file
from edgeship.errors import UsageError

MANIFEST = "wheelhouse.json"
DEFAULT_GLIBC = "2.17"  # manylinux2014: what most boards' wheels are tagged with
_SAVED = re.compile(r"^(?:Saved|File was already downloaded) (.+\.whl)\s*$")


class WheelhouseError(UsageError):
    """pip could not build or resolve the wheels for a board platform."""


@dataclass(frozen=True)
class Platform:
    python: str  # "3.11"
    arch: str  # "aarch64"
    glibc: str = DEFAULT_GLIBC

    @property
    def tag(self) -> str:
        return f"cp{self.python.replace('.', '')}-{self.arch}"

    def pip_platforms(self) -> list[str]:
        """Every manylinux tag a board with this glibc can install: pip 23 does not widen
        `--platform manylinux_2_36_x86_64` to the older tags most wheels carry, so list them all."""
        major, minor = (_glibc_key(self.glibc) + (0, 0))[:2]
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 16, -1)] if major == 2 else []
        tags.append(f"manylinux2014_{self.arch}")
        if self.arch in ("x86_64", "i686"):
            tags += [f"manylinux2010_{self.arch}", f"manylinux1_{self.arch}"]
        return tags

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """`3.11:aarch64` or `3.11:aarch64:2.31` (Python version, machine, glibc)."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not re.fullmatch(r"3\.\d+", parts[0]) or not parts[1]:
            raise UsageError(f"--board {text!r}: use PYTHON:ARCH[:GLIBC], e.g. 3.11:aarch64:2.31")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else DEFAULT_GLIBC)


def source_checkout() -> Path | None:
    """The source tree this edgeship runs from, if it runs from one (an installed copy has none)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "fleet" / "bootstrap").is_dir() else None


def _pip(args: list[str], what: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        detail = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("ERROR")] or proc.stderr.strip().splitlines()[-1:]
        raise WheelhouseError(f"{what}: pip failed: {' '.join(detail)[:400]}")
    return proc.stdout


def build_edgeship_wheel(source: Path, out: Path) -> Path:
    """`pip wheel --no-deps` of a checkout: edgeship is pure Python, one wheel serves every board."""
    with tempfile.TemporaryDirectory() as tmp:
        _pip(["wheel", "--no-deps", "-q", "-w", tmp, str(source)], f"building the edgeship wheel from {source}")
        built = sorted(Path(tmp).glob("edgeship-*.whl"))
        if not built:
            raise WheelhouseError(f"building the edgeship wheel from {source}: no wheel was written")
        out.mkdir(parents=True, exist_ok=True)
        dest = out / built[0].name
        shutil.copyfile(built[0], dest)
        return dest


def build_platform(out: Path, platform: Platform, edgeship_wheel: Path | None, extras: str = "agent") -> dict:
    """Resolve and download the wheels for one platform into <out>/<tag>/ and write its manifest."""
    folder = out / platform.tag
    staging = out / f".{platform.tag}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if folder.is_dir():  # reuse what is there: pip says "already downloaded" instead of fetching again
        for wheel in folder.glob("*.whl"):
            if not wheel.name.startswith("edgeship-"):
                os.link(wheel, staging / wheel.name) if _same_fs(wheel, staging) else shutil.copyfile(wheel, staging / wheel.name)
    requirement = f"{edgeship_wheel}[{extras}]" if edgeship_wheel else f"edgeship[{extras}]=={__version__}"
    args = ["download", "-d", str(staging), "--only-binary=:all:", "--implementation", "cp",
            "--python-version", platform.python, *[a for tag in platform.pip_platforms() for a in ("--platform", tag)],
            requirement, "pip"]
    output = _pip(args, f"wheels for {platform.tag} (glibc {platform.glibc})")
    wanted = {Path(m.group(1)).name for line in output.splitlines() if (m := _SAVED.match(line.strip()))}
    if edgeship_wheel is not None:
        wanted.add(edgeship_wheel.name)
        if not (staging / edgeship_wheel.name).exists():
            shutil.copyfile(edgeship_wheel, staging / edgeship_wheel.name)
    for wheel in staging.glob("*.whl"):
        if wheel.name not in wanted:
            wheel.unlink()
    agent = [n for n in wanted if n.startswith("edgeship-")]
    pip_wheel = [n for n in wanted if n.startswith("pip-")]
    if not agent or not pip_wheel:
        raise WheelhouseError(f"wheels for {platform.tag}: pip resolved no {'edgeship' if not agent else 'pip'} wheel")
    manifest = {"python": platform.python, "arch": platform.arch, "glibc": platform.glibc, "extras": extras,
                "edgeship_wheel": agent[0], "pip_wheel": sorted(pip_wheel)[-1],
                "wheels": {w.name: sha256_file(w) for w in sorted(staging.glob("*.whl"))}}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    old = out / f".{platform.tag}.old"
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def build(out: Path, platforms: list[Platform], source: Path | None = None, extras: str = "agent") -> dict[str, dict]:
    """Build the wheelhouse for each distinct platform (the lowest glibc wins per Python and arch)."""
    lowest: dict[tuple[str, str], Platform] = {}
    for p in platforms:
        key = (p.python, p.arch)
        if key not in lowest or _glibc_key(p.glibc) < _glibc_key(lowest[key].glibc):
            lowest[key] = p
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = source or source_checkout()
    wheel = build_edgeship_wheel(source, out / ".edgeship") if source else None
    return {p.tag: build_platform(out, p, wheel, extras) for p in lowest.values()}


def _glibc_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split(".") if x.isdigit())


def load(out: Path, tag: str) -> dict:
    """The manifest of <out>/<tag>/, checked against the wheels beside it."""
    folder = Path(out) / tag
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise WheelhouseError(f"{folder}: no wheelhouse for {tag} (run `edgeship fleet wheelhouse` for these boards)") from None
    missing = [name for name in manifest.get("wheels", {}) if not (folder / name).is_file()]
    if missing:
        raise WheelhouseError(f"{folder}: {len(missing)} wheel(s) listed in {MANIFEST} are missing ({missing[0]}): rebuild it")
    return manifest
