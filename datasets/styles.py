"""The embedded many-styles demo domain: the bundled faces, each rendered in one of eight distinct looks (no download).

Why: GANs N' Roses maps one face to many styles, so its target domain must show many looks of the same kind of
face; the toon domain of datasets/demo.py has one palette at a time (one look), which cannot show that.
Domain ("styled", `styled_domain`): every image of the photo domain (`demo.photo_domain`: the 100 LFW crops bundled
with scikit-image, upsampled, in `variants` framings) rendered by `style_render` in look k % len(LOOKS), k its flat
face-major index, so with variants >= 8 every face appears in every look. A look (`Look`, the table `LOOKS`) fixes
  - the flat tones: 2, 3 or 4 colours, dark (hair, shadow) to light (highlight), and the share of each face's
    pixels in each (the tone boundaries are quantiles of the face, so a look reads the same on every face);
  - the line weight: no ink, thin ink (the feature lines of `demo.toonify_render` and a 1 px face contour) or
    thick ink (the lines dilated by 1 px, the contour 2 px), the widths scaled with the resolution (per 32 px);
  - the background: one flat colour outside a fixed hard ellipse around the aligned face (`FACE_ELLIPSE`).
Where a pixel lands (tone, ink, background) depends only on the photo and the look's shares and line weight, its
colour only on the look: every image uses only its look's tones, ink and background colours, nothing blended,
so the look of an image can be read off its pixels. Pure, deterministic numpy like `demo.toonify_render`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.demo import _blur, _check_colours, _ink_lines, _stretched_luminance, photo_domain

RGB = tuple[int, int, int]
# The face region: a hard ellipse (centre y, centre x, radius y, radius x, as fractions of the image side) around
# the aligned LFW face, reaching past the top and bottom edges so hair and chin stay; outside it is the look's
# background (about a quarter of the image, every corner included).
FACE_ELLIPSE = (0.5, 0.5, 0.55, 0.44)


@dataclass(frozen=True)
class Look:
    """One rendering style. `palette` dark to light, one colour per flat tone (2..4); `thresholds` the len(palette)-1
    increasing tone boundaries as quantiles in (0, 1) of each face's smoothed luminance (0.3: the darkest 30 % of
    the face gets tone 0); `line_weight` 0 (no ink), 1 (thin) or 2 (thick); `ink` the colour of the lines and of
    the face contour; `background` the colour outside FACE_ELLIPSE."""
    name: str
    palette: tuple[RGB, ...]
    thresholds: tuple[float, ...]
    line_weight: int
    ink: RGB
    background: RGB

    def __post_init__(self) -> None:
        tones = len(self.palette)
        if not 2 <= tones <= 4:
            raise ValueError(f"Look {self.name!r}: palette must have 2..4 tones; got {tones}")
        _check_colours("palette", self.palette, (tones, 3), owner=f"Look {self.name!r}")
        _check_colours("ink", self.ink, (3,), owner=f"Look {self.name!r}")
        _check_colours("background", self.background, (3,), owner=f"Look {self.name!r}")
        t = np.asarray(self.thresholds, np.float64)
        if t.shape != (tones - 1,) or not (np.all(t > 0) and np.all(t < 1) and np.all(np.diff(t) > 0)):
            raise ValueError(f"Look {self.name!r}: thresholds must be {tones - 1} increasing values in (0, 1); "
                             f"got {self.thresholds}")
        if self.line_weight not in (0, 1, 2) or isinstance(self.line_weight, bool):
            raise ValueError(f"Look {self.name!r}: line_weight must be 0, 1 or 2; got {self.line_weight!r}")

    @property
    def tones(self) -> int:
        return len(self.palette)


# Eight looks, chosen to be told apart at a glance at 32 px: each differs from every other in background hue and
# in its face colours (the tests hold them to a measured margin), and they mix 2/3/4 tones and none/thin/thick ink.
LOOKS: tuple[Look, ...] = (
    Look("warm_anime", ((120, 50, 60), (250, 180, 165), (255, 235, 225)), (0.33, 0.66), 1,
         (60, 20, 20), (120, 195, 245)),
    Look("cool_pastel", ((110, 140, 200), (215, 200, 240), (250, 250, 255)), (0.3, 0.6), 0,
         (0, 0, 0), (185, 240, 210)),
    Look("ink_sketch", ((150, 150, 150), (250, 250, 250)), (0.35,), 1,
         (0, 0, 0), (250, 240, 200)),
    Look("comic", ((20, 20, 70), (255, 215, 0), (255, 255, 150)), (0.25, 0.85), 2,
         (0, 0, 0), (225, 30, 40)),
    Look("fantasy", ((90, 20, 140), (30, 150, 70), (110, 225, 80), (215, 255, 140)), (0.25, 0.5, 0.75), 1,
         (40, 0, 60), (20, 70, 75)),
    Look("sepia", ((60, 45, 35), (130, 105, 80), (195, 170, 135), (240, 228, 205)), (0.3, 0.6, 0.85), 0,
         (0, 0, 0), (120, 60, 20)),
    Look("pop_art", ((30, 40, 200), (255, 90, 170)), (0.4,), 2,
         (0, 0, 0), (255, 140, 0)),
    Look("night", ((20, 30, 80), (90, 110, 170), (190, 215, 255)), (0.35, 0.7), 1,
         (5, 5, 20), (10, 15, 40)),
)


def face_mask(height: int, width: int) -> np.ndarray:
    """bool [H,W]: True inside FACE_ELLIPSE (pixel centres)."""
    cy, cx, ry, rx = FACE_ELLIPSE
    y = (np.arange(height) + 0.5) / height                                               # [H]
    x = (np.arange(width) + 0.5) / width                                                 # [W]
    return ((y[:, None] - cy) / ry) ** 2 + ((x[None, :] - cx) / rx) ** 2 <= 1.0


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """bool [N,H,W]: True where any 4-neighbour of the pixel is True in `mask`; beyond the border counts as False."""
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)))                                          # [N,H+2,W+2]
    return p[:, :-2, 1:-1] | p[:, 2:, 1:-1] | p[:, 1:-1, :-2] | p[:, 1:-1, 2:]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """bool [N,H,W] grown by `radius` px (4-neighbourhood, `radius` times: a diamond, rounder than a square)."""
    for _ in range(radius):
        mask = mask | _neighbours(mask)
    return mask


def _resolve(look: Look | int) -> Look:
    """A Look, or the entry of LOOKS at an int index; else ValueError."""
    if isinstance(look, Look):
        return look
    if isinstance(look, (int, np.integer)) and not isinstance(look, bool):
        if not 0 <= look < len(LOOKS):
            raise ValueError(f"style_render look index must be in 0..{len(LOOKS) - 1}; got {look}")
        return LOOKS[int(look)]
    raise ValueError(f"style_render look must be a Look or an int index into LOOKS; got {type(look).__name__}")


def style_render(images: np.ndarray, look: Look | int) -> np.ndarray:
    """Render uint8 [N,H,W,3] photos in `look` (a Look or an index into LOOKS) -> uint8 [N,H,W,3]. Pure and
    deterministic; each image independently of the others in the batch.

    The steps of `demo.toonify_render` (luminance stretch, smoothing, flat tones, ink where a pixel is darker than
    its surround) with the look's tones (boundaries at the look's quantiles of the face) and ink colour. Line weight
    0: no ink; 1: the ink lines and a contour 1 px wide inside the ellipse; 2: the lines, lone specks dropped,
    dilated by 1 px, and a 2 px contour (widths per 32 px of resolution). Outside FACE_ELLIPSE: the background.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"style_render expects uint8 [N,H,W,3]; got {images.dtype} {images.shape}")
    if min(images.shape[1:3]) < 8:
        raise ValueError(f"style_render expects images of at least 8x8 px; got {images.shape[1]}x{images.shape[2]}")
    look = _resolve(look)
    _, h, w, _ = images.shape
    scale = max(1, h // 32)                                   # blur and line widths grow with resolution
    lum = _stretched_luminance(images)                                                   # [N,H,W]
    inside = face_mask(h, w)                                                             # [H,W]
    smooth = _blur(lum, 3 * scale)                                                       # [N,H,W]
    # Tone boundaries at quantiles of each face's own pixels: every face shows every tone in the same proportions,
    # so a look reads the same on a dark and on a pale face.
    bounds = np.quantile(smooth[:, inside], look.thresholds, axis=1).T                  # [N,tones-1]
    tone = (smooth[..., None] >= bounds[:, None, None, :]).sum(-1)                       # [N,H,W] in 0..tones-1
    rgb = np.asarray(look.palette, np.uint8)[tone]                                       # [N,H,W,3]
    if look.line_weight:
        width = look.line_weight * scale
        lines = _ink_lines(lum, scale)                                                   # [N,H,W]
        if look.line_weight == 2:                 # lone specks would grow into crosses: drop them, then thicken
            lines = _dilate(lines & _neighbours(lines), scale)
        rim = inside & _dilate(~inside[None], width)[0]            # a contour along the inside of the ellipse
        rgb = np.where((lines | rim)[..., None], np.asarray(look.ink, np.uint8), rgb)
    return np.where(inside[None, :, :, None], rgb, np.asarray(look.background, np.uint8)).astype(np.uint8)


def styled_domain(resolution: int = 32, variants: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [100*variants,R,R,3], look index int32 [100*variants]): photo_domain(resolution, variants)
    image k rendered in look k % len(LOOKS). With variants >= len(LOOKS), every face is in every look."""
    photos = photo_domain(resolution, variants)                                          # [N,R,R,3]
    index = (np.arange(len(photos)) % len(LOOKS)).astype(np.int32)                       # [N]
    out = np.empty_like(photos)
    for j, look in enumerate(LOOKS):             # one batch per look; the rendering is per image, so order is free
        out[index == j] = style_render(photos[index == j], look)
    return out, index
