"""The embedded demo: two related face domains built only from data inside installed packages (no download).

Domain A ("photo"): the 100 real LFW face crops bundled with scikit-image (`skimage.data.lfw_subset()`, 25x25
grey, aligned by LFW's face detector), upsampled to the demo resolution, each in `variants` slightly different
framings (sub-pixel shift and zoom, mild exposure change) so a GAN sees hundreds of aligned faces.
Domain B ("toon"): every A image rendered as a cartoon by `toonify_render`: smoothed, cel-shaded into four flat
tones of a warm palette, with dark ink outlines. B is a pure, deterministic function of A, so B shares A's
structure (pose, face layout: a model fine-tuned from A stays aligned with it) and differs only in rendering
(colour, flat shading, lines): the contrast Toonify-style blending needs.
A second look (`TOON_PALETTE_B`, `INK_B`; `cartoon_domains`): the same renderer with a cool palette (deep teal
hair and shadow, pale lilac skin, white highlight, navy ink). Both looks share every tone boundary, so a model
trained on one look can be fine-tuned to the other with the face layout unchanged (the SPADE demo).
Held-out photo: the face of scikit-image's `astronaut` (Eileen Collins, NASA, public domain), cropped to LFW's
framing and turned grey like domain A. It is in neither domain.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

N_FACES = 100
LFW_SIZE = 25
# Astronaut face box (left, top, right, bottom) in the 512x512 image, framed like the LFW crops
# (eyes at ~37 % of the height, eye distance ~38 % of the width).
ASTRONAUT_FACE_BOX = (174, 69, 274, 169)

# Cel-shading palette, dark to light (RGB): hair/shadow, skin, highlight; tone thresholds; the ink colour.
TOON_PALETTE = np.array([[120, 70, 110], [236, 160, 130], [255, 228, 204]], np.float32)   # [3,3]
TOON_THRESHOLDS = np.array([0.35, 0.65], np.float32)
INK = np.array([24, 16, 40], np.float32)
# The second look: same tones, cool colours (teal shadow, lilac skin, white highlight) and navy ink.
TOON_PALETTE_B = np.array([[28, 92, 118], [206, 188, 232], [255, 255, 255]], np.float32)  # [3,3]
INK_B = np.array([12, 22, 64], np.float32)


def lfw_faces() -> np.ndarray:
    """The 100 bundled LFW face crops as uint8 [100,25,25] (the other 100 entries of lfw_subset are non-faces)."""
    from skimage import data  # deferred: scikit-image is only needed for the demo

    faces = np.asarray(data.lfw_subset()[:N_FACES], np.float64)       # [100,25,25] in [0,1]
    return np.clip(np.rint(faces * 255.0), 0, 255).astype(np.uint8)


def _variant_params(n_faces: int, variants: int, seed: int = 0) -> np.ndarray:
    """[n_faces, variants, 4] = (dx, dy, zoom, gain); variant 0 is the unaltered framing."""
    rng = np.random.default_rng(seed)
    p = np.stack([rng.uniform(-0.75, 0.75, (n_faces, variants)),        # shift, in 25 px source pixels
                  rng.uniform(-0.75, 0.75, (n_faces, variants)),
                  rng.uniform(1.0, 1.12, (n_faces, variants)),          # zoom in (never out: no empty borders)
                  rng.uniform(0.9, 1.1, (n_faces, variants))], axis=-1)  # exposure gain
    p[:, 0] = (0.0, 0.0, 1.0, 1.0)
    return p.astype(np.float64)


def photo_domain(resolution: int = 32, variants: int = 8) -> np.ndarray:
    """Domain A: uint8 [100*variants, R, R, 3] grey faces (equal channels), face-major order."""
    if resolution < 8:
        raise ValueError(f"demo resolution must be >= 8; got {resolution}")
    if variants < 1:
        raise ValueError(f"variants must be >= 1; got {variants}")
    faces = lfw_faces()
    params = _variant_params(len(faces), variants)
    out = np.empty((len(faces), variants, resolution, resolution), np.uint8)
    for i, face in enumerate(faces):
        im = Image.fromarray(face)
        for v, (dx, dy, zoom, gain) in enumerate(params[i]):
            side = LFW_SIZE / zoom
            # The shift is limited by the zoom: the crop box always stays inside the 25 px face.
            x0 = float(np.clip((LFW_SIZE - side) / 2 + dx, 0.0, LFW_SIZE - side))
            y0 = float(np.clip((LFW_SIZE - side) / 2 + dy, 0.0, LFW_SIZE - side))
            up = im.resize((resolution, resolution), Image.Resampling.BICUBIC, box=(x0, y0, x0 + side, y0 + side))
            out[i, v] = np.clip(np.rint(np.asarray(up, np.float64) * gain), 0, 255).astype(np.uint8)
    out = out.reshape(-1, resolution, resolution)                                       # [N,R,R]
    return np.repeat(out[..., None], 3, axis=-1)                                        # [N,R,R,3]


def _blur(x: np.ndarray, passes: int) -> np.ndarray:
    """Separable [1,2,1]/4 blur over the two axes after the first, `passes` times, edge-replicated. [N,H,W]."""
    for _ in range(passes):
        p = np.pad(x, ((0, 0), (1, 1), (0, 0)), mode="edge")
        x = (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) * 0.25
        p = np.pad(x, ((0, 0), (0, 0), (1, 1)), mode="edge")
        x = (p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]) * 0.25
    return x


def _check_colours(name: str, colours: np.ndarray, shape: tuple[int, ...], owner: str = "toonify_render"
                   ) -> np.ndarray:
    """`colours` as float32 of `shape` with RGB values in [0, 255], else ValueError naming `owner` and `name`."""
    c = np.asarray(colours, np.float32)
    if c.shape != shape:
        raise ValueError(f"{owner} {name} must have shape {list(shape)} (RGB); got {list(c.shape)}")
    if not np.all((c >= 0) & (c <= 255)):                          # the comparison also refuses NaN
        raise ValueError(f"{owner} {name} must be RGB values in [0, 255]; got {c.tolist()}")
    return c


def _stretched_luminance(images: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,3] -> float32 [N,H,W] luminance in [0, 1], per-image contrast stretch (2nd..98th percentile)
    so every face uses the whole tone range."""
    lum = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)       # [N,H,W]
    lo = np.percentile(lum, 2, axis=(1, 2), keepdims=True)
    hi = np.percentile(lum, 98, axis=(1, 2), keepdims=True)
    return np.clip((lum - lo) / np.maximum(hi - lo, 1.0), 0.0, 1.0)


def _ink_lines(lum: np.ndarray, scale: int) -> np.ndarray:
    """bool [N,H,W]: where the lightly smoothed image is darker than its wide surround (a difference of blurs, as
    in XDoG): eyes, brows, mouth, contours. `scale` (>= 1) grows the blurs with the resolution."""
    return (_blur(lum, scale) - _blur(lum, 4 * scale)) < -0.08


def toonify_render(images: np.ndarray, palette: np.ndarray = TOON_PALETTE, ink: np.ndarray = INK) -> np.ndarray:
    """Cartoon rendering of uint8 [N,R,R,3] photos -> uint8 [N,R,R,3]. Pure and deterministic.

    1. luminance, per-image contrast stretch (2nd..98th percentile) so every face uses the whole palette;
    2. smoothing (removes photo texture; the scale grows with resolution);
    3. cel shading: three flat tones, `palette` [3,3] RGB dark to light (default TOON_PALETTE);
    4. ink: pixels darker than their wider surround (a difference of blurs, as in XDoG) become outlines in `ink`.
    Where a pixel lands (tone 0..2 or ink) depends only on the photo, never on the colours.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"toonify_render expects uint8 [N,H,W,3]; got {images.dtype} {images.shape}")
    palette = _check_colours("palette", palette, (3, 3))
    ink_rgb = _check_colours("ink", ink, (3,))
    n, h, w, _ = images.shape
    scale = max(1, h // 32)                                   # blur passes grow with resolution
    lum = _stretched_luminance(images)                                                   # [N,H,W]
    tone = np.digitize(_blur(lum, 3 * scale), TOON_THRESHOLDS)                           # [N,H,W] in 0..2
    rgb = palette[tone]                                                                  # [N,H,W,3]
    rgb = np.where(_ink_lines(lum, scale)[..., None], ink_rgb, rgb)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def heldout_photo(resolution: int = 32, grey: bool = True) -> np.ndarray:
    """The astronaut's face, grey like domain A (or in colour, grey=False): uint8 [R,R,3]."""
    from skimage import data

    im = Image.fromarray(data.astronaut())
    face = (im.convert("L") if grey else im).resize((resolution, resolution), Image.Resampling.LANCZOS,
                                                    box=ASTRONAUT_FACE_BOX)
    face = np.asarray(face, np.uint8)
    return np.repeat(face[..., None], 3, axis=-1) if grey else face


def heldout_clip(resolution: int = 64, frames: int = 36, grey: bool = True) -> np.ndarray:
    """A short "video" of the astronaut's face: the crop box of `heldout_photo` panned (+-8 % of its side) and
    zoomed (+-8 %) along one smooth loop, uint8 [frames,R,R,3]. Frame t's box is a pure function of t."""
    from skimage import data

    im = Image.fromarray(data.astronaut())
    im = im.convert("L") if grey else im
    x0, y0, x1, y1 = ASTRONAUT_FACE_BOX
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    out = []
    for t in range(frames):
        a = 2 * np.pi * t / frames
        half = side * (1 + 0.08 * np.sin(a)) / 2
        dx, dy = 0.08 * side * np.sin(a), 0.05 * side * np.sin(2 * a)
        box = (cx + dx - half, cy + dy - half, cx + dx + half, cy + dy + half)
        out.append(np.asarray(im.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box), np.uint8))
    clip = np.stack(out)
    return np.repeat(clip[..., None], 3, axis=-1) if grey else clip


def cartoon_domains(resolution: int = 32, variants: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The photo domain rendered in both looks: (TOON_PALETTE/INK, TOON_PALETTE_B/INK_B), uint8 [100*variants,R,R,3]
    each, image i of one the same face and framing as image i of the other (one tone map, two colourings).

    The SPADE demo trains on rough sketches of the first look and fine-tunes on the second.
    """
    a = photo_domain(resolution, variants)
    return toonify_render(a), toonify_render(a, TOON_PALETTE_B, INK_B)


def load_demo_domains(resolution: int = 32, variants: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A photos uint8 [100*variants,R,R,3], B toons uint8 [same], held-out photo uint8 [R,R,3]); no files."""
    a = photo_domain(resolution, variants)
    return a, toonify_render(a), heldout_photo(resolution)
