"""Toonify yourself (Pinkney & Adler 2020): photo -> W+ latent of the base model -> blended model.

  1. crop the face as FFHQ's were (nets/align.py: dlib landmarks, NVlabs/ffhq-dataset's oriented crop) at the
     generator's resolution, or, without `align` (or the align extra), centre-crop and resize the photo
     (NV projector.py's crop), for faces that are FFHQ-style crops already;
  2. project it with the base (photo) generator, in W+ with 500 steps by default (JP's notebook);
  3. render the per-layer ws through the blended generator's synthesis network with ITS OWN const noise maps
     (the projector's optimised maps are not carried over, as in JP's notebook:
     `Gs_blended.components.synthesis.run(dlatents, randomize_noise=False)`).

The library functions take arrays and variable trees, so a pipeline can chain train -> blend -> toonify without
files; `project_file` / `toonify_files` are the CLI's file-level wrappers (outputs written atomically).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from interp import project as P
from nets import images, registry, sampling
from nets.stylegan2 import StyleGAN2Config

PyTree = Any
TOONIFY_PROJECTION = P.ProjectConfig(steps=500, w_plus=True)    # JP's Toonify notebook


# ----------------------------------------------------------------------------------------------------------------
# Photos


def prepare_photo(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H,W] / [H,W,1|3|4] -> uint8 [size,size,3]: centre square crop (NV projector.py), Lanczos resize."""
    from PIL import Image

    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"photo must be uint8; got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4) or min(img.shape[:2]) < 1:
        raise ValueError(f"photo must be [H,W], [H,W,1], [H,W,3] or [H,W,4]; got shape {list(img.shape)}")
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]          # [H,W,3]
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(img[top:top + s, left:left + s])                      # [s,s,3]
    if s == size:
        return crop
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.LANCZOS))


def face_crop(img: np.ndarray, size: int, *, align: bool = False, face: int | None = None,
              landmarks: str | None = None, what: str = "photo") -> np.ndarray:
    """uint8 photo -> uint8 [size,size,3]: the FFHQ-aligned face number `face` (largest first; or the one
    `landmarks` marks), or with align=False `prepare_photo`'s centre crop."""
    if not align:
        if face is not None or landmarks is not None:
            raise ValueError("a face (--face) or its landmarks (--landmarks) are chosen only with --align")
        return prepare_photo(img, size)
    from nets import align as A
    return A.align_faces(img, size, face=face, landmarks=landmarks, what=what)[0]


# ----------------------------------------------------------------------------------------------------------------
# Models


def check_renderable(base: StyleGAN2Config, other: StyleGAN2Config, what: str = "blended model") -> None:
    """The base's ws [1,num_ws,w_dim] must fit `other`'s synthesis network."""
    if (other.num_ws, other.w_dim) != (base.num_ws, base.w_dim):
        raise ValueError(f"the {what} takes ws [1, {other.num_ws}, {other.w_dim}] ({other.resolution} px) but the "
                         f"base model's latents are [1, {base.num_ws}, {base.w_dim}] ({base.resolution} px)")


def blend_for_toonify(base: dict, transfer: dict, resolution: int, level: int = 0,
                      blend_width: float | None = None) -> dict:
    """Pinkney's blend_models.py: base gives blocks up to `resolution`, mapping and noise; transfer the rest."""
    from interp.blend_files import BlendSpec

    spec = BlendSpec(mode="toonify", resolution=resolution, level=level, blend_width=blend_width)
    return spec.apply(base, transfer, names=("base", "transfer"))


def render_latent(cfg: StyleGAN2Config, g_vars: dict, ws: np.ndarray) -> np.ndarray:
    """ws [1,num_ws,w_dim] -> uint8 [R,R,3] through g_vars' synthesis with its own const noise."""
    ws = np.asarray(ws, np.float32)
    if ws.shape != (1, cfg.num_ws, cfg.w_dim):
        raise ValueError(f"ws must be [1, {cfg.num_ws}, {cfg.w_dim}]; got {list(ws.shape)}")
    return images.to_uint8(sampling.render_ws(cfg, g_vars, ws)[0])


# ----------------------------------------------------------------------------------------------------------------
# The pipeline


@dataclasses.dataclass
class ToonifyResult:
    target: np.ndarray                  # uint8 [R,R,3], the prepared photo
    projection: np.ndarray              # uint8 [R,R,3], ws through the base model
    toon: np.ndarray                    # uint8 [R,R,3], ws through the blended model
    ws: np.ndarray                      # [1,num_ws,w_dim]
    projected: P.Projection | None     # None when ws were given

    def figure(self) -> np.ndarray:
        """target | projection | toon in one row (equal num_ws means equal resolution)."""
        return images.make_grid(np.stack([self.target, self.projection, self.toon]), rows=1)


def toonify(photo: np.ndarray, base_cfg: StyleGAN2Config, base: dict, blended_cfg: StyleGAN2Config,
            blended: dict, pc: P.ProjectConfig = TOONIFY_PROJECTION, *, ws: np.ndarray | None = None,
            lpips_params: dict | None = None, seed: int = 0, progress: bool = True) -> ToonifyResult:
    """Photo (uint8, any size) -> projection with `base` (or given ws) -> toon rendered with `blended`."""
    check_renderable(base_cfg, blended_cfg)
    target = prepare_photo(photo, base_cfg.resolution)
    proj = None
    if ws is None:
        proj = P.project(base_cfg, base, target, pc, lpips_params=lpips_params, seed=seed, progress=progress)
        ws, projection = proj.ws, proj.image
    else:
        projection = render_latent(base_cfg, base, ws)
    return ToonifyResult(target=target, projection=projection, toon=render_latent(blended_cfg, blended, ws),
                         ws=np.asarray(ws, np.float32), projected=proj)


# ----------------------------------------------------------------------------------------------------------------
# Files


def project_file(photo: str, model: str, out_dir: str, pc: P.ProjectConfig = P.ProjectConfig(), *, seed: int = 0,
                 overwrite: bool = False, progress: bool = True, align: bool = False, face: int | None = None,
                 landmarks: str | None = None) -> tuple[Path, Path, P.Projection]:
    """`gafu project`: write out_dir/projected_w.npz and out_dir/proj.png (target | projection); the target is
    `face_crop` of the photo (FFHQ-aligned with `align`)."""
    out = Path(out_dir)
    npz, png = (images.check_output(out / n, overwrite=overwrite) for n in ("projected_w.npz", "proj.png"))
    img = images.read_rgb(photo, "photo")
    _, cfg, g = registry.load_generator(model, "stylegan2")
    target = face_crop(img, cfg.resolution, align=align, face=face, landmarks=landmarks, what=f"photo {photo}")
    proj = P.project(cfg, g, target, pc, seed=seed, progress=progress)
    P.save_latent(npz, proj)
    images.write_png(png, images.make_grid(np.stack([proj.target, proj.image]), rows=1))
    return npz, png, proj


def toonify_files(photo: str, base: str, out: str, *, blended: str | None = None, transfer: str | None = None,
                  resolution: int | None = None, level: int = 0, blend_width: float | None = None,
                  latent: str | None = None, latent_out: str | None = None,
                  pc: P.ProjectConfig = TOONIFY_PROJECTION, seed: int = 0, overwrite: bool = False,
                  progress: bool = True, align: bool = False, face: int | None = None,
                  landmarks: str | None = None) -> tuple[Path, Path | None, ToonifyResult]:
    """`gafu toonify`: write `out` (target | projection | toon) and, when projecting, the latent .npz.
    The target is `face_crop` of the photo at the base model's resolution (FFHQ-aligned with `align`).

    The toon model is `blended` (a model file), or base blended with `transfer` at `resolution` on the fly.
    Everything is read and checked before the (long) projection starts.
    """
    if (blended is None) == (transfer is None):
        raise ValueError("give exactly one of --blended CKPT or --transfer CKPT (with --resolution R)")
    if transfer is not None and resolution is None:
        raise ValueError("--transfer needs --resolution R (the last block the base model keeps)")
    if blended is not None and (resolution is not None or blend_width is not None or level != 0):
        raise ValueError("--resolution, --level and --blend-width apply to --transfer only")
    if latent is not None and latent_out is not None:
        raise ValueError("--latent reuses a projection; --latent-out applies only when projecting")
    out_path = Path(out)
    if latent is None and latent_out is None:
        latent_out = str(out_path.with_name(out_path.stem + "_w.npz"))
    for p in [out_path] + ([Path(latent_out)] if latent_out else []):
        images.check_output(p, overwrite=overwrite)

    img = images.read_rgb(photo, "photo")
    _, base_cfg, g_base = registry.load_generator(base, "stylegan2")
    if blended is not None:
        _, toon_cfg, g_toon = registry.load_generator(blended, "stylegan2")
    else:
        _, t_cfg, g_t = registry.load_generator(transfer, "stylegan2")
        registry.check_same_arch(base_cfg, t_cfg, (f"base {base}", f"transfer {transfer}"))
        toon_cfg, g_toon = base_cfg, blend_for_toonify(g_base, g_t, resolution, level, blend_width)
    check_renderable(base_cfg, toon_cfg, f"model {blended}" if blended else "blended model")
    ws = P.load_latent(latent, base_cfg) if latent is not None else None
    img = face_crop(img, base_cfg.resolution, align=align, face=face, landmarks=landmarks, what=f"photo {photo}")

    res = toonify(img, base_cfg, g_base, toon_cfg, g_toon, pc, ws=ws, seed=seed, progress=progress)
    lat_path = P.save_latent(latent_out, res.projected) if res.projected is not None else None
    return images.write_png(out_path, res.figure()), lat_path, res
