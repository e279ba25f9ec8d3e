"""Content-defined chunking and the chunk store.

A bundle is cut where a rolling gear hash of the last 32 bytes hits a mask (FastCDC-style, with
normalized chunking: a stricter mask before the target size, a looser one after it). Boundaries
follow the content, not the offset, so a release that changes one layer of a model shares every
chunk before and after the change with the previous release, and a device fetches only chunks that
none of its kept releases already holds. Chunks are named by their sha256: verification is free.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ALGORITHM = "gear32-fastcdc-v1"
DEFAULT_AVG = 256 * 1024
FRAME_MAGIC = b"ESC1"


def _gear_table() -> np.ndarray:
    """256 fixed pseudo-random 32-bit values; manager and devices must agree on them."""
    values = [int.from_bytes(hashlib.sha256(b"edgeship-gear-%d" % i).digest()[:4], "big") for i in range(256)]
    return np.array(values, dtype=np.uint32)


_GEAR = _gear_table()


@dataclass(frozen=True)
class ChunkParams:
    avg: int = DEFAULT_AVG

    def __post_init__(self):
        if self.avg < 256:
            raise ValueError(f"chunk size must be at least 256 bytes, got {self.avg}")

    @property
    def min(self) -> int:
        return self.avg // 4

    @property
    def max(self) -> int:
        return self.avg * 8

    def masks(self) -> tuple[int, int]:
        """(strict mask before avg, loose mask after avg): normalization level 2."""
        bits = self.avg.bit_length() - 1

        def top(n: int) -> int:
            return ((1 << n) - 1) << (32 - n)

        return top(min(bits + 2, 31)), top(max(bits - 2, 1))

    def to_json(self) -> dict:
        return {"algorithm": ALGORITHM, "avg": self.avg}

    @classmethod
    def from_json(cls, data: dict) -> "ChunkParams":
        if data.get("algorithm") != ALGORITHM:
            raise ValueError(f"unknown chunking algorithm {data.get('algorithm')!r}")
        return cls(int(data["avg"]))


def _gear_hashes(data: bytes) -> np.ndarray:
    """h[i] = sum_k gear[data[i-k]] << k (mod 2^32): the gear hash ending at every byte, vectorized."""
    table = _GEAR[np.frombuffer(data, dtype=np.uint8)]
    h = table.copy()
    for k in range(1, 32):
        h[k:] += table[:-k] << np.uint32(k)
    return h


def cut_points(data: bytes, params: ChunkParams = ChunkParams()) -> list[int]:
    """End offsets of the chunks of `data` (the last one is len(data))."""
    n = len(data)
    if n == 0:
        return []
    strict, loose = params.masks()
    ends: list[int] = []
    # Work in windows so memory stays bounded on large bundles (the hash needs 31 bytes of history).
    window = 8 << 20
    strict_hits: list[np.ndarray] = []
    loose_hits: list[np.ndarray] = []
    for start in range(0, n, window):
        lo = max(0, start - 31)
        h = _gear_hashes(data[lo:start + window])[start - lo:]
        strict_hits.append(np.flatnonzero((h & np.uint32(strict)) == 0) + start)
        loose_hits.append(np.flatnonzero((h & np.uint32(loose)) == 0) + start)
    strict_pos = np.concatenate(strict_hits)
    loose_pos = np.concatenate(loose_hits)
    pos = 0
    while pos < n:
        if n - pos <= params.min:
            ends.append(n)
            break
        normal_end = min(pos + params.avg, n)
        hard_end = min(pos + params.max, n)
        cut = None
        i = np.searchsorted(strict_pos, pos + params.min)
        if i < len(strict_pos) and strict_pos[i] < normal_end:
            cut = int(strict_pos[i]) + 1
        else:
            j = np.searchsorted(loose_pos, normal_end)
            if j < len(loose_pos) and loose_pos[j] < hard_end:
                cut = int(loose_pos[j]) + 1
        ends.append(cut if cut is not None else hard_end)
        pos = ends[-1]
    return ends


@dataclass
class Recipe:
    """How to rebuild a bundle from chunks: the artifact digest, the tar's sha256, the chunk list."""

    digest: str
    sha256: str
    size: int
    params: ChunkParams
    chunks: list[tuple[str, int]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"digest": self.digest, "sha256": self.sha256, "size": self.size,
                "chunking": self.params.to_json(), "chunks": [[c, s] for c, s in self.chunks]}

    @classmethod
    def from_json(cls, data: dict) -> "Recipe":
        try:
            chunks = [(str(c), int(s)) for c, s in data["chunks"]]
            recipe = cls(str(data["digest"]), str(data["sha256"]), int(data["size"]),
                         ChunkParams.from_json(data["chunking"]), chunks)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed chunk recipe: {err}") from None
        if sum(s for _, s in chunks) != recipe.size or any(len(c) != 64 for c, _ in chunks):
            raise ValueError("malformed chunk recipe: sizes or chunk ids do not add up")
        if any(not 0 < s <= recipe.params.max for _, s in chunks):
            raise ValueError(f"malformed chunk recipe: a chunk is empty or over {recipe.params.max} bytes")
        return recipe

    def ids(self) -> list[str]:
        return [c for c, _ in self.chunks]


def split(data: bytes, params: ChunkParams = ChunkParams()) -> list[tuple[str, bytes]]:
    """(sha256 hex, bytes) for every content-defined chunk of data."""
    out, start = [], 0
    view = memoryview(data)
    for end in cut_points(data, params):
        piece = bytes(view[start:end])
        out.append((hashlib.sha256(piece).hexdigest(), piece))
        start = end
    return out


def chunk_bundle(bundle: Path, digest: str, params: ChunkParams, store: "ChunkStore | None" = None) -> Recipe:
    """Cut a bundle into chunks (stored in `store` when given) and return its recipe."""
    data = Path(bundle).read_bytes()
    pieces = split(data, params)
    if store is not None:
        for cid, piece in pieces:
            store.put(cid, piece)
    return Recipe(digest, hashlib.sha256(data).hexdigest(), len(data), params, [(c, len(p)) for c, p in pieces])


def encode_frame(chunk_id: str, data: bytes) -> bytes:
    """A chunk message: magic, the raw 32-byte id, the data. Works the same on MQTT 3.1.1 and 5."""
    return FRAME_MAGIC + bytes.fromhex(chunk_id) + data


def decode_frame(payload: bytes) -> tuple[str, bytes]:
    if len(payload) < 36 or payload[:4] != FRAME_MAGIC:
        raise ValueError("not a chunk frame")
    return payload[4:36].hex(), payload[36:]


class ChunkStore:
    """A folder of verified chunks named by sha256. Writes are atomic: a crash leaves no half chunk."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, chunk_id: str) -> Path:
        return self.root / chunk_id[:2] / chunk_id

    def has(self, chunk_id: str) -> bool:
        return self.path(chunk_id).is_file()

    def put(self, chunk_id: str, data: bytes) -> bool:
        """Store data under its id after checking sha256(data) == id. False if the data is corrupt."""
        if hashlib.sha256(data).hexdigest() != chunk_id:
            return False
        target = self.path(chunk_id)
        if target.is_file():
            return True
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f"{chunk_id}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return True

    def get(self, chunk_id: str) -> bytes | None:
        try:
            data = self.path(chunk_id).read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != chunk_id:  # bit rot or tampering on disk: drop it
            self.path(chunk_id).unlink(missing_ok=True)
            return None
        return data

    def missing(self, recipe: Recipe) -> list[str]:
        seen, out = set(), []
        for cid in recipe.ids():
            if cid not in seen and not self.has(cid):
                out.append(cid)
            seen.add(cid)
        return out

    def assemble(self, recipe: Recipe, out: Path) -> bool:
        """Rebuild the bundle; True only when every chunk is present and the whole sha256 matches."""
        h = hashlib.sha256()
        tmp = Path(out).with_name(Path(out).name + ".part")
        with open(tmp, "wb") as fh:
            for cid, _size in recipe.chunks:
                data = self.get(cid)
                if data is None:
                    fh.close()
                    tmp.unlink(missing_ok=True)
                    return False
                h.update(data)
                fh.write(data)
        if h.hexdigest() != recipe.sha256:
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, out)
        return True

    def ids(self) -> set[str]:
        return {p.name for p in self.root.glob("??/*") if len(p.name) == 64}

    def retain(self, keep: set[str]) -> int:
        """Delete every chunk not in `keep`; return how many were deleted."""
        dropped = 0
        for cid in self.ids() - keep:
            self.path(cid).unlink(missing_ok=True)
            dropped += 1
        return dropped


def save_recipe(folder: Path, recipe: Recipe) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (recipe.digest.split(":", 1)[-1] + ".json")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(recipe.to_json()))
    os.replace(tmp, path)
    return path
