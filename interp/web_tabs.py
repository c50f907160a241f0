"""What the tabs of `gafu serve` compute (interp/web.py lays them out): numpy images in, numpy images out.

Every tab's models are loaded once, when the page is built (`load_*`); a tab whose model files are missing or
unreadable gets a `Missing` record with a short message instead (which file, and how to make it), so that one bad
path does not take the whole page down. The run functions reuse the library calls the CLI commands make
(interp.toonify, interp.blend_files, interp.figure, interp.stylize, interp.feature_files, interp.paint,
interp.gnr) and raise their ValueError / OSError on bad input; web.py turns those into messages in the page.

Uploads are bounded first (`fit_upload`: long side at most `max_side`), so a 50-megapixel photo never reaches a
model or the face detector at full size.
"""
from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interp import feature_files, figure, gnr as translate, paint, stylize as S
from interp.blend_files import BlendSpec
from interp.project import ProjectConfig
from interp.toonify import prepare_photo, render_latent, toonify
from nets import images, lpips, registry
from nets.stylegan2 import StyleGAN2Config, without_noise

MAX_SIDE = 1024                 # uploads are shrunk to this long side before anything else sees them
RoughMaker = paint.RoughMaker


@dataclasses.dataclass(frozen=True)
class Missing:
    """A tab that cannot run: why (the missing or unreadable file) and how to fix it."""
    message: str


def load_or_missing(load: Callable[[], Any], needs: Sequence[Path], how: str) -> Any:
    """load(), or Missing naming the first absent path of `needs` (and `how` to make it), or the load error."""
    for p in needs:
        if not Path(p).exists():
            return Missing(f"{p} does not exist: {how}.")
    try:
        return load()
    except (ValueError, OSError) as e:
        return Missing(f"{e} ({how}).")


def fit_upload(img: np.ndarray | None, max_side: int = MAX_SIDE, what: str = "image") -> np.ndarray:
    """An uploaded image (uint8 [H,W], [H,W,3|4]) -> uint8 [h,w,3] with max(h, w) <= max_side (Lanczos, aspect
    kept); alpha is composited onto white (a drawing's transparent canvas is paper, not black)."""
    from PIL import Image

    if img is None:
        raise ValueError(f"no {what}: upload one first")
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"the {what} must be 8-bit (uint8) pixels; got {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4) or min(img.shape[:2]) < 1:
        raise ValueError(f"the {what} must be an RGB or grey picture; got an array of shape {list(img.shape)}")
    if img.shape[-1] == 4:
        a = img[..., 3:].astype(np.float32) / 255.0                                # [H,W,1]
        img = np.rint(img[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return np.ascontiguousarray(img)
    s = max_side / max(h, w)
    return np.asarray(Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS))


def show(img: np.ndarray) -> np.ndarray:
    """A lone model image [R,R,C] as people should see it: nearest-upscaled when small (as images.write_png)."""
    return images.upscale_nearest(np.asarray(img)[None], images.view_min())[0]


def face_crop(photo: np.ndarray, resolution: int) -> tuple[np.ndarray, str]:
    """(uint8 [R,R,3] face, a note for the page): FFHQ alignment with nets.align when the align extra is
    installed and finds a face, else the centre square (interp.toonify.prepare_photo), saying why."""
    try:
        from nets import align
    except ModuleNotFoundError as e:
        if e.name != "nets.align":
            raise
        align = None
    if align is None or not align.available():
        return prepare_photo(photo, resolution), ("No face alignment (`pip install 'gafu[align]'` adds it): the "
                                                  "photo's centre square was used.")
    try:
        return align.align_faces(photo, resolution, what="the photo")[0], "Face aligned as FFHQ's (dlib landmarks)."
    except align.AlignError as e:
        return prepare_photo(photo, resolution), f"{str(e).split(';')[0]}: the photo's centre square was used."


# ----------------------------------------------------------------------------------------------------------------
# Toonify: project with the photo model, render through a layer swap with the toon model


@dataclasses.dataclass(frozen=True)
class Toonifier:
    cfg: StyleGAN2Config
    base: dict                     # G variables of the photo model (projects)
    transfer: dict                 # G variables of the model fine-tuned from it (the toon look)
    lpips_params: dict

    @property
    def swaps(self) -> tuple[int, ...]:
        """Swap resolutions offered: r = the first block taken from the toon model (8 .. R, as gafu demo)."""
        return tuple(r for r in self.cfg.resolutions if r > 4)


def load_toonifier(base: str | Path, transfer: str | Path) -> Toonifier:
    _, cfg, g_base = registry.load_generator(base, "stylegan2")
    _, t_cfg, g_t = registry.load_generator(transfer, "stylegan2")
    registry.check_same_arch(cfg, t_cfg, (f"base {base}", f"transfer {transfer}"))
    return Toonifier(cfg, g_base, g_t, lpips.lpips_params())


def _parents(m: Toonifier, noise: bool) -> tuple[dict, dict]:
    return (m.base, m.transfer) if noise else (without_noise(m.base), without_noise(m.transfer))


def check_swap(m: Toonifier, swap: int) -> int:
    if int(swap) not in m.swaps:
        raise ValueError(f"swap resolution {swap} is not one of this model's {', '.join(map(str, m.swaps))}")
    return int(swap)


def toon_at(m: Toonifier, ws: np.ndarray, swap: int, noise: bool = True) -> np.ndarray:
    """ws [1,num_ws,w_dim] rendered through the swap blend (blocks >= swap from the toon model): uint8 [R,R,3].
    Every blend is one tree structure, so moving the swap resolution never recompiles the renderer."""
    base, transfer = _parents(m, noise)
    return render_latent(m.cfg, BlendSpec(mode="swap", resolution=check_swap(m, swap)).apply(base, transfer), ws)


def swap_row(m: Toonifier, ws: np.ndarray, noise: bool = True) -> np.ndarray:
    """One row: ws through the photo model | the swap blend at every r (photo-most first) | the toon model."""
    base, transfer = _parents(m, noise)
    variants = [base] + [BlendSpec(mode="swap", resolution=r).apply(base, transfer) for r in m.swaps[::-1]]
    rows = figure.render_rows(lambda g: render_latent(m.cfg, g, ws)[None], variants + [transfer])  # [n,1,R,R,3]
    return images.make_grid(rows[:, 0], rows=1)


@dataclasses.dataclass
class ToonifyOutput:
    face: np.ndarray               # uint8 [R,R,3], what was projected
    projection: np.ndarray         # uint8 [R,R,3]
    toon: np.ndarray               # uint8 [R,R,3]
    grid: np.ndarray               # uint8, swap_row
    ws: np.ndarray                 # [1,num_ws,w_dim]
    note: str                      # alignment and LPIPS, for the page


def run_toonify(m: Toonifier, photo: np.ndarray, steps: int, swap: int, noise: bool = True, *,
                max_side: int = MAX_SIDE, seed: int = 0) -> ToonifyOutput:
    """Upload -> face crop -> W+ projection with the photo model (Toonify's schedule, `steps` steps) -> toon."""
    if not 1 <= int(steps) <= 100_000:
        raise ValueError(f"projection steps must be in 1 .. 100000; got {steps}")
    spec = BlendSpec(mode="swap", resolution=check_swap(m, swap))
    face, note = face_crop(fit_upload(photo, max_side, "photo"), m.cfg.resolution)
    base, transfer = _parents(m, noise)
    pc = ProjectConfig(steps=int(steps), w_plus=True, optimize_noise=noise)     # noise off: nothing to optimise
    res = toonify(face, m.cfg, base, m.cfg, spec.apply(base, transfer), pc, lpips_params=m.lpips_params, seed=seed)
    p = res.projected
    note += f" LPIPS {p.lpips_start:.3f} (average face) -> {p.lpips_final:.3f} after {steps} steps."
    return ToonifyOutput(res.target, res.projection, res.toon, swap_row(m, res.ws, noise), res.ws, note)


# ----------------------------------------------------------------------------------------------------------------
# Style transfer and DFI (VGG-16 features)


def load_vgg() -> dict:
    return feature_files.vgg_params(None)


def run_stylize(params: dict, content: np.ndarray, style: np.ndarray, preset: str, steps: int, size: int,
                preserve_color: bool = False, *, max_side: int = MAX_SIDE, seed: int = 0) -> np.ndarray:
    """Content + style upload -> the stylised image uint8 [h,w,3] (long side `size`), a preset's loss."""
    if preset not in S.PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(S.PRESETS)}")
    if not 16 <= int(size) <= max_side:
        raise ValueError(f"the output size must be in 16 .. {max_side} px; got {size}")
    c, s = fit_upload(content, max_side, "content image"), fit_upload(style, max_side, "style image")
    cfg = S.PRESETS[preset].replace(steps=int(steps), size=int(size), preserve_color=bool(preserve_color))
    feature_files.check_layers(params, cfg)
    return S.stylize(params, c, [s], cfg, seed=seed).image


@dataclasses.dataclass(frozen=True)
class DFIData:
    table: feature_files.AttributeRows
    images_dir: Path
    size: int = 200                 # working size (square), as `gafu dfi`
    cache_dir: str | None = "~/.cache/gafu/dfi"


def run_dfi(data: DFIData, face: np.ndarray, attribute: str, remove: bool, alpha: float,
            steps: int, k: int, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """A face upload -> the face with `attribute` added (or removed) at strength alpha: uint8 [size,size,3].

    `gafu dfi`'s own file-level driver runs on a temporary copy of the upload (so its neighbour search, feature
    cache and reconstruction are the CLI's exactly). Its VGG weights are read once per process (nets.vgg caches
    the checkpoint)."""
    from interp import dfi

    if attribute not in data.table.names:
        raise ValueError(f"unknown attribute {attribute!r}; the attribute file has {', '.join(data.table.names)}")
    cfg = dfi.PRESETS["authors"].replace(alphas=(float(alpha),), steps=int(steps), k=int(k))
    img = fit_upload(face, max_side, "face")
    with tempfile.TemporaryDirectory(prefix="gafu-web-dfi-") as tmp:
        src = images.write_png(Path(tmp) / "face.png", img, min_side=0)
        out = feature_files.dfi_files(str(src), data.table, str(data.images_dir), str(Path(tmp) / "out.png"), cfg,
                                      attributes=[("~" if remove else "") + attribute], size=data.size,
                                      cache_dir=data.cache_dir)
        return images.read_rgb(out[0], "DFI result")


# ----------------------------------------------------------------------------------------------------------------
# SPADE paint and GANs N' Roses


def run_paint(p: paint.Painter, picture: np.ndarray, is_rough: bool, num: int, seed: int,
              make_rough: RoughMaker, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """A photo (its rough is made as the training roughs were) or a drawn rough -> rough | paintings."""
    if not 1 <= int(num) <= 16:
        raise ValueError(f"the number of paintings must be in 1 .. 16; got {num}")
    img = fit_upload(picture, max_side, "rough" if is_rough else "picture")
    if is_rough:                   # drawn at any size: the model's square, as a photo would be cropped
        rough = paint.check_rough(prepare_photo(img, p.cfg.resolution), p.cfg)
    else:
        rough = paint.rough_from_photo(img, p.cfg, make_rough)
    seeds = range(int(seed), int(seed) + int(num))
    return paint.paint_figure(p.cfg, p.g_vars, rough, seeds).figure()


def run_gnr(t: translate.Translator, photo: np.ndarray, num: int, seed: int, psi: float = 1.0, *,
            max_side: int = MAX_SIDE) -> tuple[np.ndarray, str]:
    """One face -> (face | the face under `num` sampled styles, the alignment note)."""
    if not 1 <= int(num) <= 16:
        raise ValueError(f"the number of styles must be in 1 .. 16; got {num}")
    face, note = face_crop(fit_upload(photo, max_side, "photo"), t.cfg.resolution)
    styles = translate.seed_styles(t.cfg, int(seed), int(num), float(psi))
    return translate.translate_image(t, face, styles).figure(), note
