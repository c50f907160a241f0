"""Paint a rough with a SPADE generator (Park et al. 2019), as imoken1122/SPADE-AnimeFace `test.py` does: one
flat-colour rough, several seeds, one painting per seed; optionally guided by a style image through the VAE
encoder (NVlabs/SPADE `--use_vae`, `models/pix2pix_model.py` encode_z / reparameterize).

Latents, per seed s with eps_s = N(0, I) from numpy RandomState(s) (nets.spade.seed_inputs, as nets.sampling):
  no style     z_s = psi * eps_s                                  (the prior; AnimeFace always starts from z)
  style image  z_s = mu + psi * exp(0.5 logvar) * eps_s           (mu, logvar = E(style))
The style path keeps NVlabs' reparameterisation at test time (`pix2pix_model.py` generate_fake draws
z = mu + eps * std even in test.py), so several seeds give several paintings in the style instead of one painting
repeated; the seed fixes eps, so a painting is still a function of (rough, style, seed). psi truncates towards the
posterior mean: psi 0 paints mu itself, the encoder's deterministic reading of the style.

This module takes arrays: making a rough from a photo is datasets/sketch.py's job, which an interp/ library may
not import, so `paint_files` takes the rough maker as an argument (the command passes datasets.sketch.rough_sketch).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from interp.toonify import prepare_photo
from nets import images, modelfile, registry, spade
from nets.spade import SPADEConfig

RoughMaker = Callable[[np.ndarray, int], np.ndarray]   # (photo uint8 [R,R,3], work size) -> rough uint8 [R,R,3]


@dataclasses.dataclass(frozen=True)
class Painter:
    """A SPADE model file's generator (with its previews) and, for a VAE model, its encoder."""
    cfg: SPADEConfig
    g_vars: dict
    e_vars: dict | None            # None: the file has no encoder 'E'
    path: Path


@dataclasses.dataclass
class PaintResult:
    rough: np.ndarray              # uint8 [R,R,3], the condition the generator painted
    paintings: np.ndarray          # uint8 [N,R,R,C], one per seed
    seeds: tuple[int, ...]
    z: np.ndarray | None           # float32 [N,z_dim], the latents painted (None: a model without z)
    style: np.ndarray | None       # uint8 [R,R,3], the prepared style image (the figure's reference)

    def figure(self, min_cell: int | None = None) -> np.ndarray:
        """One row: rough | paintings (| reference); small cells nearest-upscaled (`images.make_grid`)."""
        cells = [self.rough[None], to_rgb(self.paintings)] + ([self.style[None]] if self.style is not None else [])
        return images.make_grid(np.concatenate(cells), rows=1, min_cell=min_cell)


def to_rgb(x: np.ndarray) -> np.ndarray:
    """[..., 1 | 3] -> [..., 3] (a grey painting repeated), so every figure cell has three channels."""
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


# ----------------------------------------------------------------------------------------------------------------
# Models and inputs


def load_painter(path: str | Path) -> Painter:
    """A SPADE model file -> Painter; a file of another family, or one whose generator is not conditioned on an
    RGB rough, is one ModelFileError naming the file."""
    arch, cfg, mf = registry.load(path, "spade")
    if cfg.cond_channels != 3:
        raise modelfile.ModelFileError(
            f"model file {mf.path} is conditioned on {cfg.cond_channels}-channel label maps; painting needs a "
            f"model conditioned on RGB roughs (cond_channels 3)")
    e_vars = mf.variables.get("E") if cfg.vae else None
    return Painter(cfg, registry.generator_of(arch, mf), e_vars, mf.path)


def check_rough(rough: np.ndarray, cfg: SPADEConfig, what: str = "rough") -> np.ndarray:
    """`rough` if it is uint8 [R,R,3] at the model's resolution R, else a ValueError naming both sizes."""
    rough = np.asarray(rough)
    r = cfg.resolution
    if rough.dtype != np.uint8 or rough.ndim != 3 or rough.shape[-1] != 3:
        raise ValueError(f"{what} must be uint8 [H,W,3]; got {rough.dtype} {list(rough.shape)}")
    if rough.shape[:2] != (r, r):
        raise ValueError(f"{what} is {rough.shape[1]}x{rough.shape[0]} but the model paints {r}x{r} roughs; give "
                         f"a {r}x{r} rough, or the photo itself without --rough (its rough is made at that size)")
    return rough


def rough_from_photo(photo: np.ndarray, cfg: SPADEConfig, make_rough: RoughMaker) -> np.ndarray:
    """A photo or drawing of any size -> a rough as the model's training data made them: centre square crop and
    Lanczos resize to the model resolution (interp.toonify.prepare_photo; the dataset builder's square_resize up
    to its sub-pixel centring of odd crops), then `make_rough` at cfg.rough_size, the work size of the training
    roughs (datasets/build.py runs the rough maker on the prepared image the same way; the maker itself resizes
    to the work size and back, as SPADE-AnimeFace test.py resizes to 256)."""
    rough = make_rough(prepare_photo(photo, cfg.resolution), cfg.rough_size)
    return check_rough(rough, cfg, "the rough made from the photo")


def check_style_model(painter: Painter) -> None:
    """A style image needs the VAE encoder: a ValueError naming the file otherwise."""
    if not painter.cfg.vae:
        raise ValueError(f"--style needs a VAE model (a SPADE model trained with an encoder, vae=True); model file "
                         f"{painter.path} has vae=False")
    if painter.e_vars is None:
        raise ValueError(f"--style needs the VAE encoder 'E', which model file {painter.path} does not hold")


def style_latents(cfg: SPADEConfig, e_vars: dict, style: np.ndarray, seeds: Sequence[int],
                  psi: float = 1.0) -> np.ndarray:
    """z_s = mu + psi * exp(0.5 logvar) * eps_s for each seed (module doc); style uint8 [R,R,C] -> [N,z_dim]."""
    mu, logvar = spade.encode_fn(cfg)(e_vars, spade.to_float(style[None]))          # [1,z_dim] each
    eps, _ = spade.seed_inputs(cfg, seeds, psi=psi, noise=False)                     # psi * eps_s, [N,z_dim]
    return np.asarray(mu + np.exp(0.5 * np.asarray(logvar)) * eps, np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Painting


def paint_figure(cfg: SPADEConfig, g_vars: dict, rough: np.ndarray, seeds: Sequence[int], *,
                 style: np.ndarray | None = None, e_vars: dict | None = None, psi: float = 1.0) -> PaintResult:
    """Paint one rough uint8 [R,R,3] once per seed (each seed its own z and noise), in one batch.

    `style` (uint8, any size; centre-cropped and resized to R) sets the latents through `e_vars`, the encoder. A
    model from the rough alone (input 'cond') has no z: its seeds differ only in the noise inputs, if any."""
    rough = check_rough(rough, cfg)
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("no seeds to paint")
    ref = None
    if style is None:
        z, _ = spade.seed_inputs(cfg, seeds, psi=psi, noise=False)    # None for input 'cond' (NVlabs without VAE)
    else:
        if e_vars is None:
            raise ValueError("a style image needs the VAE encoder's variables (e_vars)")
        if cfg.img_channels != 3:
            raise ValueError(f"the encoder reads {cfg.img_channels}-channel images; a style image is RGB")
        ref = prepare_photo(style, cfg.resolution)
        z = style_latents(cfg, e_vars, ref, seeds, psi)
    cond = np.broadcast_to(rough, (len(seeds), *rough.shape))
    out = spade.paint(cfg, g_vars, cond, list(seeds), psi=psi, z=z)
    return PaintResult(rough=rough, paintings=out, seeds=seeds, z=z, style=ref)


def paint_files(source: str, model: str, out: str, seeds: Sequence[int], *, make_rough: RoughMaker | None,
                style: str | None = None, psi: float = 1.0, overwrite: bool = False) -> tuple[Path, PaintResult]:
    """`gafu spade paint`: read, check, paint, then write `out` (rough | paintings | reference) atomically.

    `source` is a photo or drawing turned into a rough by `make_rough` (rough_from_photo), or, with make_rough
    None, already a rough at the model's resolution. Every input is read and checked before painting."""
    out_path = images.check_output(out, overwrite=overwrite)
    painter = load_painter(model)
    if style is not None:
        check_style_model(painter)
    img = images.read_rgb(source, "rough" if make_rough is None else "image")
    ref = images.read_rgb(style, "style image") if style is not None else None
    rough = check_rough(img, painter.cfg, f"rough {source}") if make_rough is None else \
        rough_from_photo(img, painter.cfg, make_rough)
    res = paint_figure(painter.cfg, painter.g_vars, rough, seeds, style=ref, e_vars=painter.e_vars, psi=psi)
    return images.write_png(out_path, res.figure()), res
