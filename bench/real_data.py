"""Realistic calibration and evaluation data for the trained models that ship inside PyPI packages.

Made in code, deterministically, from what is on this machine (no downloads):
- PP-OCR's text-direction classifier (rapidocr-onnxruntime): text lines rendered with Pillow's
  bundled font, preprocessed as PaddleOCR does (height 48, width <= 192, padded, scaled to [-1, 1]),
  half of them rotated 180 degrees - the two classes the model tells apart;
- magika's byte classifier: real files found in Python's own installation (source, bytecode,
  shared libraries, PNG, JSON, text...), turned into magika's features (the first and last 1024
  bytes after stripping whitespace, padded with token 256), int32.
Random inputs are no test of a quantizer: activation ranges of noise are not those of real data.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import numpy as np

OCR_SHAPE = (3, 48, 192)
WORDS = ("the quick brown fox jumps over the lazy dog invoice total amount due date 2024 paid receipt "
         "customer number street city postal code phone email order shipping address item price tax "
         "subtotal discount account balance reference bank transfer EUR USD 42.50 17:30 No. ID Ltd. "
         "Hello World Edge Model Build Report Target Latency Memory Accuracy Quantize Validate").split()


def ppocr_cls_model() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"


def magika_model() -> Path:
    import magika

    return Path(magika.__file__).parent / "models" / "standard_v3_3" / "model.onnx"


def _render_line(rng: np.random.Generator):
    from PIL import Image, ImageDraw, ImageFont

    text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 6))))
    size = int(rng.integers(22, 40))
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(2, 8))
    bg = int(rng.integers(170, 256))
    fg = int(rng.integers(0, 90))
    image = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), (bg, bg, bg))
    tint = tuple(int(np.clip(fg + rng.integers(-20, 20), 0, 255)) for _ in range(3))
    ImageDraw.Draw(image).text((pad - left, pad - top), text, fill=tint, font=font)
    return image


def _cls_preprocess(image) -> np.ndarray:
    """PaddleOCR's classifier input: height 48, width by aspect ratio (<= 192), right-padded with 0."""
    from PIL import Image

    c, h, w = OCR_SHAPE
    width = min(w, max(1, int(np.ceil(h * image.width / image.height))))
    resized = np.asarray(image.resize((width, h), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255.0
    out = np.zeros(OCR_SHAPE, dtype=np.float32)
    out[:, :, :width] = (resized - 0.5) / 0.5
    return out


def ocr_lines(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 3, 48, 192) float32, labels 0 upright / 1 rotated 180 degrees)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        image = _render_line(rng)
        rotated = i % 2 == 1
        images.append(_cls_preprocess(image.rotate(180) if rotated else image))
        labels.append(int(rotated))
    return np.stack(images), np.asarray(labels, dtype=np.int64)


# --- magika --------------------------------------------------------------------------------------

MAGIKA_BEG, MAGIKA_END, MAGIKA_BLOCK, MAGIKA_PAD = 1024, 1024, 4096, 256
FILE_KINDS = ("*.py", "*.pyc", "*.so", "*.png", "*.json", "*.txt", "*.html", "*.xml", "*.cfg", "*.h", "*.c", "*.csv",
              "*.gz", "*.zip", "*.toml", "*.pem", "*.rst", "*.md", "*.ini", "*.sh")


def magika_features(content: bytes) -> np.ndarray:
    """magika's model input for one file: stripped first/last bytes, padded with token 256, int32."""
    beg = content[:MAGIKA_BLOCK]
    end = content[-MAGIKA_BLOCK:]
    small = len(content) <= MAGIKA_BLOCK
    beg = beg.strip() if small else beg.lstrip()
    end = end.strip() if small else end.rstrip()
    beg_ints = list(beg[:MAGIKA_BEG]) + [MAGIKA_PAD] * max(0, MAGIKA_BEG - len(beg))
    end_ints = [MAGIKA_PAD] * max(0, MAGIKA_END - len(end)) + list(end[-MAGIKA_END:] if end else b"")
    return np.asarray(beg_ints[:MAGIKA_BEG] + end_ints[-MAGIKA_END:], dtype=np.int32)


def _search_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = [Path(paths["stdlib"]), Path(paths["purelib"]), Path(sys.prefix) / "include", Path("/usr/share/doc"),
             Path("/usr/share/pixmaps"), Path("/usr/share/icons"), Path("/etc")]
    return [r for r in roots if r.is_dir()]


def _files_by_kind(limit: int = 300) -> dict[str, list[Path]]:
    """One walk over the roots, files bucketed by extension (at most `limit` each), sorted."""
    wanted = {k[1:]: k for k in FILE_KINDS}
    per_kind: dict[str, list[Path]] = {}
    for root in _search_roots():
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                kind = wanted.get(Path(name).suffix)
                if kind is None or len(per_kind.setdefault(kind, [])) >= limit:
                    continue
                path = Path(folder) / name
                try:
                    if path.is_file() and not path.is_symlink() and 16 <= path.stat().st_size <= 8 * 2**20:
                        per_kind[kind].append(path)
                except OSError:
                    continue
    return {k: sorted(v) for k, v in per_kind.items() if v}


def real_files(n: int, seed: int) -> list[Path]:
    """`n` real files of varied kinds, chosen deterministically (sorted paths, seeded pick per kind)."""
    rng = np.random.default_rng(seed)
    per_kind = _files_by_kind()
    picked: list[Path] = []
    kinds = sorted(per_kind)
    for i in range(n * 4):
        if len(picked) >= n or not kinds:
            break
        files = per_kind[kinds[i % len(kinds)]]
        choice = files[int(rng.integers(0, len(files)))]
        if choice not in picked:
            picked.append(choice)
    return picked


def magika_inputs(n: int, seed: int) -> np.ndarray:
    """(n, 2048) int32 features of `n` real files on this machine."""
    rows = []
    for path in real_files(n, seed):
        try:
            rows.append(magika_features(path.read_bytes()))
        except OSError:
            continue
    return np.stack(rows)


# --- PP-OCR text detector ------------------------------------------------------------------------

DET_SIZE = 320  # a multiple of 32, as the DB detector needs
DET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
DET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def ppocr_det_model() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


def ocr_pages(n: int, seed: int) -> np.ndarray:
    """(n, 3, 320, 320) float32: pages with a few rendered text lines, normalised as PaddleOCR's detector expects."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pages = []
    for _ in range(n):
        shade = int(rng.integers(200, 256))
        page = Image.new("RGB", (DET_SIZE, DET_SIZE), (shade, shade, shade))
        y = int(rng.integers(4, 30))
        while y < DET_SIZE - 30:
            line = _render_line(rng)
            if line.width > DET_SIZE - 8:
                line = line.crop((0, 0, DET_SIZE - 8, line.height))
            page.paste(line, (int(rng.integers(0, max(1, DET_SIZE - line.width))), y))
            y += line.height + int(rng.integers(4, 40))
        arr = np.asarray(page, dtype=np.float32).transpose(2, 0, 1) / 255.0
        pages.append((arr - DET_MEAN) / DET_STD)
    return np.stack(pages).astype(np.float32)
