"""Image helpers shared by every method: reading image files, [-1, 1] float <-> uint8, PNG grids, atomic writes."""
from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np


def read_rgb(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """An image file -> uint8 RGB [H,W,3] (EXIF orientation applied; grey, palette and alpha converted).

    `what` names the file in errors ("photo", "image", ...)."""
    from PIL import Image, ImageOps, UnidentifiedImageError  # deferred: only readers and writers need Pillow

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None


def to_uint8(x) -> np.ndarray:
    """Images in about [-1, 1] (any leading dims, channels last) -> uint8 [0, 255]."""
    x = np.asarray(x, dtype=np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(x) -> np.ndarray:
    """uint8 [0, 255] -> float32 in [-1, 1]."""
    return np.asarray(x, dtype=np.float32) / 127.5 - 1.0


def make_grid(images: np.ndarray, rows: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """[N,H,W,C] uint8 (or [R,C,H,W,C]) -> one [rows*H', cols*W', C] uint8 mosaic, row-major."""
    images = np.asarray(images)
    if images.ndim == 5:
        rows = images.shape[0]
        images = images.reshape(-1, *images.shape[2:])
    if images.ndim != 4:
        raise ValueError(f"make_grid expects [N,H,W,C] or [R,C,H,W,C] images; got shape {images.shape}")
    n, h, w, c = images.shape
    rows = rows or int(np.floor(np.sqrt(n)))
    cols = -(-n // rows)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a uint8 [H,W,C] (C in 1, 3, 4) image atomically (temp file + rename)."""
    from PIL import Image  # deferred: only writers need Pillow

    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"write_png({path}): expected uint8 [H,W,1|3|4]; got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call write(f) on a temp file beside `path`, fsync, then rename it into place (never a half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
