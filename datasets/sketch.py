"""SPADE-AnimeFace "rough sketch" conditioning images (OpenCV), and an on-disk cache for them.

The preprocessing of imoken1122/SPADE-AnimeFace (`img_preprocessing.py`; its `test.py` runs the same steps
inline): resize to 256x256 (cv2.resize, bilinear), RGB->HSV, median blur 9, pyramid mean-shift filtering (spatial
radius 52, colour radius 52, OpenCV defaults maxLevel=1 and 5 iterations / eps 1), median blur 15, HSV->RGB. Mean
shift runs on HSV values as if hue were linear (no wrap-around), like the original. At 256 px it costs about 2-4 s
per image on one CPU core, so builds run it in a process pool and keep every result in a content-addressed cache:
an interrupted or repeated build never recomputes a sketch it has already made.

`work_size` other than 256 runs the same chain at another size with the spatial parameters (median kernels,
mean-shift spatial radius) scaled by work_size / 256, for tiny demo models; the cost falls about 10x per halving
of the size (fewer pixels and a smaller mean-shift window; measured 2.1 s / 0.19 s / 0.015 s at 256 / 128 / 64).
A model must be painted with roughs of the work size it was trained on.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np

from datasets.imageio import decode_png, encode_png

# Part of the cache key. v2: the input is resized to the work size first, as the reference does (v1 ran the
# chain at the input's own size).
SKETCH_VERSION = "animeface-v2:resize-median9-meanshift52x52-median15"
ROUGH_SIZE = 256            # the reference's work size; its parameters (9, 52, 52, 15) are for this size
MIN_ROUGH_SIZE = 16         # below this even 3x3 medians and a 3 px mean-shift radius erase a face


def check_work_size(work_size: int) -> int:
    """`work_size` if it is an int >= MIN_ROUGH_SIZE, else ValueError naming the value."""
    if isinstance(work_size, bool) or not isinstance(work_size, (int, np.integer)) or work_size < MIN_ROUGH_SIZE:
        raise ValueError(f"rough sketch work size must be an int >= {MIN_ROUGH_SIZE}; got {work_size!r}")
    return int(work_size)


def odd_kernel(size: float) -> int:
    """The odd integer nearest to `size` (ties up), at least 3: a median-blur aperture."""
    return max(3, int(size // 2) * 2 + 1)


def chain_params(work_size: int) -> tuple[int, float, int]:
    """(first median kernel, mean-shift spatial radius, second median kernel) at `work_size`.

    The reference's 9 / 52 / 15 are pixel sizes at 256 px and scale with the image; its colour radius 52 is a
    distance in HSV values and does not.
    """
    s = check_work_size(work_size) / ROUGH_SIZE
    return odd_kernel(9 * s), max(1.0, 52 * s), odd_kernel(15 * s)


def rough_sketch(rgb: np.ndarray, work_size: int = ROUGH_SIZE) -> np.ndarray:
    """uint8 [H,W,3] RGB -> uint8 [H,W,3] flat-colour rough sketch, computed at work_size^2. Deterministic."""
    import cv2  # deferred: only sketch builds need OpenCV

    rgb = np.ascontiguousarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rough_sketch expects uint8 [H,W,3]; got {rgb.dtype} {rgb.shape}")
    k1, sp, k2 = chain_params(work_size)
    h, w = rgb.shape[:2]
    x = rgb if (h, w) == (work_size, work_size) else cv2.resize(rgb, (work_size, work_size))   # bilinear, as ref
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)            # H in [0, 180)
    hsv = cv2.medianBlur(hsv, k1)
    hsv = cv2.pyrMeanShiftFiltering(hsv, sp, 52)
    hsv = cv2.medianBlur(hsv, k2)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if (h, w) == (work_size, work_size):
        return out
    # Area averaging when shrinking (no aliasing of the flat patches' edges); bilinear when any side grows.
    interp = cv2.INTER_AREA if h <= work_size and w <= work_size else cv2.INTER_LINEAR
    return cv2.resize(out, (w, h), interpolation=interp)


class SketchCache:
    """PNG files keyed by the sha256 of SKETCH_VERSION, the OpenCV version (its median blur and mean shift may
    change between releases), the work size and the source image's PNG bytes."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, source_png: bytes, work_size: int) -> Path:
        import cv2  # deferred, as in rough_sketch

        key = f"{SKETCH_VERSION}:opencv{cv2.__version__}:work{check_work_size(work_size)}".encode()
        digest = hashlib.sha256(key + b"\0" + source_png).hexdigest()
        return self.root / digest[:2] / f"{digest}.png"

    def get(self, source_png: bytes, *, work_size: int = ROUGH_SIZE) -> bytes | None:
        p = self._path(source_png, work_size)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            return None

    def put(self, source_png: bytes, sketch_png: bytes, *, work_size: int = ROUGH_SIZE) -> None:
        p = self._path(source_png, work_size)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.parent / f".{p.name}.tmp-{uuid.uuid4().hex[:8]}"   # atomic: a killed worker leaves no half file
        tmp.write_bytes(sketch_png)
        os.replace(tmp, p)


def sketch_png(source_png: bytes, cache: SketchCache | None, work_size: int = ROUGH_SIZE) -> tuple[bytes, bool]:
    """Rough sketch (at `work_size`) of a PNG-encoded image, as PNG bytes; returns (png, was_cached)."""
    check_work_size(work_size)
    if cache is not None:
        hit = cache.get(source_png, work_size=work_size)
        if hit is not None:
            return hit, True
    out = encode_png(rough_sketch(decode_png(source_png), work_size))
    if cache is not None:
        cache.put(source_png, out, work_size=work_size)
    return out, False
