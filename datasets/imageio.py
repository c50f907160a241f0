"""Reading arbitrary image files into clean square RGB uint8 arrays, and PNG bytes in and out.

Everything here is a pure function of its inputs (numpy + Pillow only), so it can run in worker processes of a
build. Bad files never raise out of `prepare_file`: it returns a `Prepared` that says whether the image was kept,
what had to be converted and, if skipped, why; the build counts those reasons in its summary.
"""
from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

_EXIF_ORIENTATION = 0x0112
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """How every image of a dataset is brought to one shape."""
    resolution: int                 # output side, a power of two
    min_size: int | None = None     # shorter sides below this are skipped as too small (default resolution // 2)
    max_aspect: float = 2.0         # long/short side ratios above this are skipped (centre crop would lose too much)
    crop_fraction: float = 1.0      # keep this centred fraction of the square crop (e.g. LFW's 250 px frames)

    def __post_init__(self):
        r = self.resolution
        if not (isinstance(r, int) and r >= 4 and r & (r - 1) == 0):
            raise ValueError(f"resolution must be a power of two >= 4; got {r!r}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1]; got {self.crop_fraction!r}")
        if self.max_aspect < 1.0:
            raise ValueError(f"max_aspect must be >= 1; got {self.max_aspect!r}")

    @property
    def min_side(self) -> int:
        return self.min_size if self.min_size is not None else max(self.resolution // 2, 1)


@dataclasses.dataclass
class Prepared:
    """Outcome of preparing one file: PNG bytes of the [R,R,3] image, or the reason it was skipped."""
    key: str
    png: bytes | None = None
    converted: tuple[str, ...] = ()     # reasons the image needed conversion (kept anyway)
    skipped: str | None = None          # reason it was dropped (a short category, counted in the summary)
    detail: str = ""                    # e.g. the decoder's message for an unreadable file
    extra: dict = dataclasses.field(default_factory=dict)   # derived features (e.g. the rough sketch)


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H,W,3] -> PNG bytes (lossless, so a read-back equals the input)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"encode_png expects uint8 [H,W,3]; got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)   # fast; size matters less than build time
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def to_rgb(im: Image.Image) -> tuple[Image.Image, list[str]]:
    """Any PIL mode -> 8-bit RGB; returns the notes of what was converted."""
    notes: list[str] = []
    mode = im.mode
    if mode == "RGB":
        return im, notes
    if mode == "P":
        # Palette images may carry transparency; expand it first so it is composited below.
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        notes.append("palette->RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, the usual background of aligned face sets.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba).convert("RGB")
        notes.append(f"{mode}->RGB (alpha composited on white)")
    elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8)
        im = Image.fromarray(a, "L").convert("RGB")
        notes.append(f"{mode} (high bit depth grayscale)->RGB")
    elif mode in ("L", "1"):
        im = im.convert("RGB")
        notes.append("grayscale->RGB")
    elif mode == "CMYK":
        im = im.convert("RGB")
        notes.append("CMYK->RGB")
    elif mode != "RGB":
        im = im.convert("RGB")
        notes.append(f"{mode}->RGB")
    return im, notes


def square_resize(im: Image.Image, spec: ImageSpec) -> tuple[np.ndarray, list[str]]:
    """Centre-crop to a square (times crop_fraction) and resize to spec.resolution. -> uint8 [R,R,3]."""
    w, h = im.size
    notes: list[str] = []
    side = min(w, h) * spec.crop_fraction
    if w != h:
        notes.append("cropped non-square")
    left, top = (w - side) / 2.0, (h - side) / 2.0
    r = spec.resolution
    if side < r:
        notes.append("upscaled")
    # box= crops and resizes in one resampling pass (sub-pixel exact centre).
    out = im.resize((r, r), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
    return np.asarray(out, dtype=np.uint8), notes


def load_image(source: str | Path | bytes | np.ndarray) -> tuple[Image.Image, list[str]]:
    """Open and fully decode an image (raises OSError / ValueError on corrupt or truncated data).

    `source` is a path, encoded bytes, or an in-memory uint8 array [H,W] / [H,W,3] / [H,W,4].
    """
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise ValueError(f"in-memory images must be uint8 [H,W(,C)]; got {source.dtype} {source.shape}")
        return Image.fromarray(source[..., 0] if source.ndim == 3 and source.shape[-1] == 1 else source), []
    src = io.BytesIO(source) if isinstance(source, bytes) else source
    notes: list[str] = []
    with warnings.catch_warnings():
        # Pillow warns (DecompressionBombWarning, "Truncated File Read", palette transparency) instead of
        # raising for some bad files; treat every such warning as an error so the file is skipped, not kept.
        warnings.simplefilter("error")
        with Image.open(src) as opened:
            opened.load()                                   # decode now: corrupt / truncated data raises here
            if getattr(opened, "n_frames", 1) > 1:
                notes.append("first frame of animation")
            if opened.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                im = ImageOps.exif_transpose(opened)
                notes.append("EXIF orientation applied")
            else:
                im = opened.copy()                          # detached from the file, which is closed on exit
    return im, notes


def prepare_image(key: str, source: str | Path | bytes | np.ndarray, spec: ImageSpec) -> Prepared:
    """Load + convert + crop + resize one image; never raises for bad data (returns a skip reason instead)."""
    try:
        im, notes = load_image(source)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"; the reason is recorded
        return Prepared(key, skipped="unreadable (corrupt or truncated)", detail=f"{type(e).__name__}: {_short(e)}")
    w, h = im.size
    if min(w, h) < spec.min_side:
        return Prepared(key, skipped=f"too small (shorter side < {spec.min_side} px)", detail=f"{w}x{h}")
    if max(w, h) / min(w, h) > spec.max_aspect:
        return Prepared(key, skipped=f"aspect ratio above {spec.max_aspect:g}", detail=f"{w}x{h}")
    try:
        im, mode_notes = to_rgb(im)
        array, size_notes = square_resize(im, spec)                 # [R,R,3] uint8
    except Exception as e:  # noqa: BLE001
        return Prepared(key, skipped="unconvertible", detail=f"{type(e).__name__}: {_short(e)}")
    return Prepared(key, png=encode_png(array), converted=tuple(notes + mode_notes + size_notes))


def prepare_file(key: str, path: str | Path, spec: ImageSpec) -> Prepared:
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return Prepared(key, skipped=f"not an image file ({path.suffix or 'no suffix'})")
    return prepare_image(key, path, spec)


def list_images(folder: str | Path) -> list[tuple[str, Path]]:
    """All non-hidden files under `folder`, recursively, as (relative posix key, path), sorted by key.

    Files of any suffix are listed so that the summary can count what was not an image.
    Raises FileNotFoundError for a missing folder and ValueError for one without files.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    items = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        items.append((rel.as_posix(), p))
    if not items:
        raise ValueError(f"image folder {folder} is empty")
    return sorted(items)


def _short(e: Exception, n: int = 80) -> str:
    s = str(e).splitlines()[0] if str(e) else ""
    return s if len(s) <= n else s[: n - 3] + "..."
