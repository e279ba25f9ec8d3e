"""Copy a built artifact out of the store to a folder of the user's choosing (`build -o DIR`).

OUT/<name>/ and OUT/<name>.tar replace an older build of the same name atomically enough that a
reader sees the old or the new artifact, never half of one; an unchanged rebuild copies nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _same_artifact(src_dir: Path, src_tar: Path, folder: Path, tar: Path) -> bool:
    """True when OUT already holds this artifact untouched: same SHA256SUMS, and every file (and the tar)
    with the size and mtime of the stored copy it was copied from (copies keep the mtime)."""

    def same(a: Path, b: Path) -> bool:
        sa, sb = a.stat(), b.stat()
        return sa.st_size == sb.st_size and sa.st_mtime_ns == sb.st_mtime_ns

    try:
        if (folder / "SHA256SUMS").read_bytes() != (src_dir / "SHA256SUMS").read_bytes() or not same(tar, src_tar):
            return False
        names = sorted(p.name for p in src_dir.iterdir())
        if names != sorted(p.name for p in folder.iterdir()):
            return False
        return all(same(folder / n, src_dir / n) for n in names)
    except OSError:
        return False


def export_artifact(artifact: dict, out_dir: Path, name: str) -> tuple[Path, Path]:
    """Copy a stored artifact to OUT/<name>/ and OUT/<name>.tar (replacing an older build of the same name)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    folder, tar = out_dir / name, out_dir / f"{name}.tar"
    if _same_artifact(Path(artifact["dir"]), Path(artifact["tar"]), folder, tar):
        return folder, tar  # an unchanged rebuild: nothing to copy
    tmp = out_dir / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(artifact["dir"], tmp)
    old = out_dir / f".{name}.{os.getpid()}.old"
    if folder.exists():
        os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    shutil.copy2(artifact["tar"], out_dir / f".{name}.tar.part")
    os.replace(out_dir / f".{name}.tar.part", tar)
    return folder, tar
