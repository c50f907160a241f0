"""Translate with a GANs N' Roses model file (mchong6/GANsNRoses inference.ipynb, predict.py): one face, its
content code from G's encoder, decoded under several style codes.

Styles, per seed s: the prior code N(0, I) from numpy RandomState(s) times psi (nets.gnr.styles_from_seeds; the
reference draws torch.randn and leaves its truncation at 1). A reference image gives its own style instead: the
style encoder of the other direction (G_B2A reads toons), as the reference's training samples do. The encoder's
own style output for the face is ignored, as in the reference's inference.

Video (`video_files`): every frame is centre-cropped and resized to the model resolution, its content encoded and
decoded under S codes; `fixed` keeps the S codes of seeds style_seed .. style_seed+S-1 for the whole clip (the
stills of `translate_files` with --seed style_seed show the same styles), `drift` uses a temporally smoothed
random walk of the codes (interp.video.drift_codes, the notebook's "blend" mode). Frames go through the model in
batches of one compiled shape (the last batch padded).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from interp import video
from interp.toonify import face_crop, prepare_photo
from nets import gnr, images, lpips, registry
from nets.gnr import GNRConfig
from nets.layers import to_float

MODES = ("fixed", "drift")


@dataclasses.dataclass(frozen=True)
class Translator:
    """A GNR model file's A->B generator G and, when the file holds it, the B->A one (its encoder reads toons)."""
    cfg: GNRConfig
    g_vars: dict
    g_b2a_vars: dict | None
    path: Path


def load_translator(path: str | Path) -> Translator:
    arch, cfg, mf = registry.load(path, "gnr")
    return Translator(cfg, registry.generator_of(arch, mf), mf.variables.get("G_B2A"), mf.path)


@dataclasses.dataclass
class TranslateResult:
    face: np.ndarray               # uint8 [R,R,3], the prepared input
    outputs: np.ndarray            # uint8 [S,R,R,3]
    styles: np.ndarray             # float32 [S,latent_dim]
    reference: np.ndarray | None   # uint8 [R,R,3], the prepared style reference

    def figure(self, min_cell: int | None = None) -> np.ndarray:
        """One row: face | outputs (| reference); small cells nearest-upscaled (`images.make_grid`)."""
        cells = [self.face[None], self.outputs] + ([self.reference[None]] if self.reference is not None else [])
        return images.make_grid(np.concatenate(cells), rows=1, min_cell=min_cell)


def seed_styles(cfg: GNRConfig, seed: int, num: int, psi: float = 1.0) -> np.ndarray:
    """The prior codes of seeds seed .. seed+num-1: [num,latent_dim]."""
    if num < 1:
        raise ValueError(f"the number of styles must be >= 1; got {num}")
    return gnr.styles_from_seeds(cfg, range(seed, seed + num), psi)


def reference_style(t: Translator, ref: np.ndarray) -> np.ndarray:
    """The style code [1,latent_dim] of a toon image (any size: centre crop, resize), read by G_B2A's encoder."""
    if t.g_b2a_vars is None:
        raise ValueError(f"--style-from needs the B->A generator 'G_B2A' (its encoder reads toon styles), which "
                         f"model file {t.path} does not hold")
    x = to_float(prepare_photo(ref, t.cfg.resolution)[None])
    return np.asarray(gnr.style_encode_fn(t.cfg)(t.g_b2a_vars, x), np.float32)


def translate_image(t: Translator, photo: np.ndarray, styles: np.ndarray,
                    reference: np.ndarray | None = None) -> TranslateResult:
    """A photo (uint8, any size) under styles [S,latent_dim] -> TranslateResult."""
    face = prepare_photo(photo, t.cfg.resolution)
    out = gnr.translate(t.cfg, t.g_vars, face[None], styles)[0]
    ref = None if reference is None else prepare_photo(reference, t.cfg.resolution)
    return TranslateResult(face=face, outputs=out, styles=np.asarray(styles, np.float32), reference=ref)


def translate_files(source: str, model: str, out: str, *, num_styles: int = 8, seed: int = 0,
                    style_from: str | None = None, psi: float = 1.0, overwrite: bool = False, align: bool = False,
                    face: int | None = None, landmarks: str | None = None) -> tuple[Path, TranslateResult]:
    """`gafu gnr translate`: read and check everything, translate, write `out` (face | outputs | reference).
    The face is `face_crop` of the photo at the model resolution (FFHQ-aligned with `align`)."""
    out_path = images.check_output(out, overwrite=overwrite)
    t = load_translator(model)
    photo = face_crop(images.read_rgb(source, "image"), t.cfg.resolution, align=align, face=face,
                      landmarks=landmarks, what=f"image {source}")
    ref = images.read_rgb(style_from, "style image") if style_from is not None else None
    styles = reference_style(t, ref) if ref is not None else seed_styles(t.cfg, seed, num_styles, psi)
    res = translate_image(t, photo, styles, ref)
    return images.write_png(out_path, res.figure()), res


def video_codes(cfg: GNRConfig, mode: str, seed: int, num_styles: int, num_frames: int, fps: float) -> np.ndarray:
    """Per-frame style codes [T,S,latent_dim]: `fixed` repeats seed_styles, `drift` is interp.video.drift_codes."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if mode == "fixed":
        return np.broadcast_to(seed_styles(cfg, seed, num_styles)[None], (num_frames, num_styles, cfg.latent_dim))
    return video.drift_codes(seed, num_frames, num_styles, cfg.latent_dim, fps)


def frame_translator(t: Translator, codes: np.ndarray, batch: int) -> video.Translate:
    """interp.video's translate callback: frames [b,R,R,3] -> [b,S,R,R,3] under their frames' codes, every call
    padded to `batch` frames so that one program serves the whole clip."""
    fn = gnr.translate_fn(t.cfg)

    def run(frames: np.ndarray, index0: int) -> np.ndarray:
        padded, n = video.pad_batch(frames, batch)
        s = video.frame_codes(codes, index0, batch)                                   # [batch,S,d]
        out = fn(t.g_vars, to_float(padded), jnp.asarray(s, jnp.float32))
        return images.to_uint8(np.asarray(out))[:n]
    return run


def video_files(src: str, dst: str, model: str, *, num_styles: int = 1, style_seed: int = 0, mode: str = "fixed",
                batch: int = 8, overwrite: bool = False, progress: bool = True) -> video.VideoResult:
    """`gafu gnr video`: translate SRC frame by frame into DST (a grid with the input in the middle for S > 1)."""
    video.require_ffmpeg()
    video.check_video_output(dst, overwrite=overwrite)
    t = load_translator(model)
    info = video.probe(src)
    codes = video_codes(t.cfg, mode, style_seed, num_styles, info.frames or 1, info.fps)
    return video.translate_video(src, dst, frame_translator(t, codes, batch), resolution=t.cfg.resolution,
                                 num_styles=num_styles, batch=batch, overwrite=overwrite, progress=progress)


def consecutive_lpips(frames: np.ndarray, params: dict | None = None) -> float:
    """Mean LPIPS-VGG between consecutive frames uint8 [T,R,R,3] (T >= 2): a temporal-stability figure."""
    if len(frames) < 2:
        raise ValueError("temporal stability needs at least 2 frames")
    params = lpips.lpips_params() if params is None else params
    x = to_float(frames)
    return float(np.mean(np.asarray(lpips.lpips_distance(params, x[:-1], x[1:]))))
