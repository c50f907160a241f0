"""Image helpers shared by every method: reading image files, [-1, 1] float <-> uint8, PNG grids, atomic writes.

Every command that reads a user's image goes through `read_rgb` (one pixel-count limit, one kind of error), and
every library function that writes a command's outputs first calls `check_output` on them, so that an output path
that cannot be written fails before the (long) work starts, not after it.

Images people look at are shown at a size they can see: `make_grid` repeats the pixels of cells smaller than
VIEW_MIN (nearest neighbour, an integer factor, so every model pixel stays one sharp square) and `write_png` does
the same to a lone image. `gafu --native-size` (GAFU_NATIVE_SIZE=1) writes every PNG at the models' own
resolution instead.
"""
from __future__ import annotations

import io
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

# Pillow's own default (PIL.Image.MAX_IMAGE_PIXELS, about 89.5 megapixels): larger images are refused before they
# are decoded (a 196-megapixel photo needs 0.6 GB as RGB, and a few bytes of PNG header can claim any size).
MAX_PIXELS = 89_478_485
VIEW_MIN = 128          # images and grid cells with a side below this are nearest-upscaled for viewing
NATIVE_ENV = "GAFU_NATIVE_SIZE"


class ImageError(ValueError):
    """An image file cannot be read, or is larger than the pixel limit; the message names the file."""


def _pixels(n: int) -> str:
    return f"{n / 1e6:.1f} megapixels" if n >= 100_000 else f"{n} pixels"


def _too_large(path: Path, what: str, pixels: int, max_pixels: int,
               size: tuple[int, int] | None = None) -> ImageError:
    amount = f"{size[0]}x{size[1]} ({_pixels(pixels)})" if size else _pixels(pixels)
    return ImageError(f"{what} {path} is {amount}, above the limit of {_pixels(max_pixels)} (a guard against "
                      f"decompression bombs); downscale it first")


def read_rgb(path: str | os.PathLike, what: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file -> uint8 RGB [H,W,3] (EXIF orientation applied; grey, palette and alpha converted).

    `what` names the file in errors ("photo", "image", ...). Images of more than `max_pixels` pixels are refused
    from their header, before decoding (Pillow's own hard stop, twice PIL.Image.MAX_IMAGE_PIXELS, still applies
    to a larger `max_pixels`). Raises FileNotFoundError, or ImageError naming the file."""
    from PIL import Image, ImageOps  # deferred: only readers and writers need Pillow

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)    # the limit is checked below
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise _too_large(path, what, w * h, max_pixels, (w, h))
                return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except ImageError:
        raise
    except Image.DecompressionBombError as e:   # Pillow stops at twice its limit, before the size reaches us
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(path, what, int(found.group(1)) if found else 2 * Image.MAX_IMAGE_PIXELS,
                         max_pixels) from None
    except (OSError, ValueError, SyntaxError) as e:   # undecodable, truncated (Pillow's parsers raise all three)
        raise ImageError(f"cannot read {what} {path}: {e}") from None


def to_uint8(x) -> np.ndarray:
    """Images in about [-1, 1] (any leading dims, channels last) -> uint8 [0, 255]."""
    x = np.asarray(x, dtype=np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(x) -> np.ndarray:
    """uint8 [0, 255] -> float32 in [-1, 1]."""
    return np.asarray(x, dtype=np.float32) / 127.5 - 1.0


def view_min() -> int:
    """The smallest side shown without upscaling: VIEW_MIN, or 0 (never upscale) under GAFU_NATIVE_SIZE=1."""
    return 0 if os.environ.get(NATIVE_ENV, "").strip().lower() in ("1", "on", "true", "yes") else VIEW_MIN


def upscale_nearest(x: np.ndarray, min_size: int) -> np.ndarray:
    """[N,H,W,C] -> [N,fH,fW,C], each pixel repeated f x f, f = ceil(min_size / min(H, W)) (1 if large enough)."""
    f = max(1, -(-min_size // max(1, min(x.shape[1:3]))))       # max(1, .): an empty image stays empty
    return x if f == 1 else np.repeat(np.repeat(x, f, axis=1), f, axis=2)


def make_grid(images: np.ndarray, rows: int | None = None, pad: int = 2, pad_value: int = 255,
              min_cell: int | None = None) -> np.ndarray:
    """[N,H,W,C] uint8 (or [R,C,H,W,C]) -> one [rows*H', cols*W', C] uint8 mosaic, row-major.

    Cells whose smaller side is below `min_cell` (default `view_min()`; 0 keeps them as they are) are
    nearest-upscaled by an integer factor first."""
    images = np.asarray(images)
    if images.ndim == 5:
        rows = images.shape[0]
        images = images.reshape(-1, *images.shape[2:])
    if images.ndim != 4:
        raise ValueError(f"make_grid expects [N,H,W,C] or [R,C,H,W,C] images; got shape {images.shape}")
    images = upscale_nearest(images, view_min() if min_cell is None else min_cell)
    n, h, w, c = images.shape
    rows = rows or int(np.floor(np.sqrt(n)))
    cols = -(-n // rows)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def write_png(path: str | os.PathLike, image: np.ndarray, min_side: int | None = None) -> Path:
    """Write a uint8 [H,W,C] (C in 1, 3, 4) image atomically (temp file + rename).

    An image whose smaller side is below `min_side` (default `view_min()`; 0 writes it as it is) is
    nearest-upscaled by an integer factor first (a grid from `make_grid` is past that size already)."""
    from PIL import Image  # deferred: only writers need Pillow

    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"write_png({path}): expected uint8 [H,W,1|3|4]; got {image.dtype} {image.shape}")
    image = upscale_nearest(image[None], view_min() if min_side is None else min_side)[0]
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def check_output(path: str | os.PathLike, *, overwrite: bool = True, folder: bool = False) -> Path:
    """Fail at once, creating nothing, if `path` cannot be written later: it exists (and not `overwrite`), it is a
    folder where a file goes (or the reverse, `folder`: a model file is a folder), or the folder it would go in is
    under a regular file or not writable. Returns `path`."""
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")
        if path.is_dir() != folder:
            raise (NotADirectoryError if folder else IsADirectoryError)(
                f"{path} exists and is {'not ' if folder else ''}a folder; choose another output path")
    anc = path.absolute().parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent                                    # the nearest folder that exists (mkdir starts there)
    if not anc.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {anc} is a regular file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: the folder {anc} is not writable")
    return path


def fsync_dir(d: str | os.PathLike) -> None:
    """Make a rename or new entry in folder `d` durable (best effort: not every filesystem opens folders)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
