"""Deep Feature Interpolation (Upchurch, Gardner et al., CVPR 2017, arXiv 1611.05507) on VGG features.

1. phi(x): VGG relu3_1, relu4_1, relu5_1 maps of an aligned face (all images share one working size).
2. Source set S (without the attribute) and target set T (with it): the K nearest neighbours of the input in
   attribute space (`attribute_masks` + `select_neighbours`; as dsanno/chainer-dfi `train_lfw.py` and
   paulu/deepfeatinterp do, on LFW's `lfw_attributes.txt` or CelebA's `list_attr_celeba.txt`).
3. w from mean_T phi - mean_S phi, normalised either as the authors' code does (paulu/deepfeatinterp
   `--scaling beta`: the concatenated difference divided by its mean square) or as dsanno/chainer-dfi does (per
   layer, unit L2 norm, then scaled by ||phi_l(x)||).
4. z = argmin loss(phi(z), phi(x) + alpha * w) + tv_weight * TV(z) by L-BFGS, starting from x; each further alpha
   starts from the previous result with half the iterations (as the authors' code does).

Feature scale. The authors used Gatys's *normalised* VGG-19 (every filter's mean activation 1); we approximate that
with per-channel scales measured on S and T themselves (`channel_scale`: the same per-filter normalisation,
computed on the neighbour images rather than ImageNet; nets/vgg.normalize_params shows the two are equivalent at the
taps), with a floor so that filters faces barely excite are not blown up. chainer-dfi used the raw Caffe VGG-19, so
its preset multiplies our torchvision-scale taps by stylize.FEATURE_SCALE instead. The images are floats in 0..255
throughout (both references' pixel scale).

The neighbour feature means are cached on disk keyed by the neighbour lists (`cached_means`): a second edit of the
same image and attribute (another alpha, more iterations) skips the 2K forward passes.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from interp.stylize import FEATURE_SCALE, LineSearch, init_state, lbfgs, optimizer_step, total_variation
from nets import vgg

Array = jax.Array
DFI_TAPS = ("relu3_1", "relu4_1", "relu5_1")


@dataclasses.dataclass(frozen=True)
class DFIConfig:
    k: int = 100                                        # neighbours per set
    alphas: tuple[float, ...] = (0.4,)                  # one output per alpha
    scaling: Literal["beta", "per-layer"] = "beta"      # authors' code / chainer-dfi
    normalize: bool = True                              # per-channel mean-activation normalisation of phi
    feature_scale: float = 1.0                          # multiplies phi (after normalisation, if any)
    reduce: Literal["sum", "mean"] = "sum"              # feature loss: 1/2 sum (authors) or sum of per-layer MSE
    tv_weight: float = 1e-3
    tv_reduce: Literal["sum", "mean"] = "sum"           # sum of squared differences, or their mean per element
    steps: int = 500
    color: Literal["global", "channel", "none"] = "global"   # match the result's mean/std to the input's
    pooling: vgg.Pooling = "max"
    lbfgs_memory: int = 10
    linesearch: LineSearch = "zoom"                     # authors: scipy L-BFGS-B (line search); chainer-dfi: none
    margin: float = 0.5                                 # T needs attr >= margin, S needs attr <= -margin
    residual: bool = False                              # subtract the drift of an alpha-0 reconstruction

    def replace(self, **kw: Any) -> "DFIConfig":
        return dataclasses.replace(self, **kw)


PRESETS = {
    # paulu/deepfeatinterp (LFW defaults): beta scaling, delta 0.4, 1/2 sum loss, TV 0.001, 500 iterations, colour
    "authors": DFIConfig(),
    # dsanno/chainer-dfi: per-layer unit w scaled by ||phi_l(x)||, per-layer MSE + 100 * mean TV, raw Caffe scale,
    # per-channel colour match, and only the change (minus a plain reconstruction's drift) added to the input.
    # It used 1000 iterations from random init; we start from the input, as the paper does.
    "chainer-dfi": DFIConfig(scaling="per-layer", normalize=False, feature_scale=FEATURE_SCALE, reduce="mean",
                             tv_weight=100.0, tv_reduce="mean", steps=500, color="channel", residual=True,
                             lbfgs_memory=5, linesearch="none"),
}


# ----------------------------------------------------------------------------------------------------------------
# Neighbours (numpy; the attribute table is small: 13k x 73 for LFW, 203k x 40 for CelebA)


def _norm_name(s: str) -> str:
    return s.strip().lower().replace("_", " ").replace("-", " ")


def resolve_attributes(names: Sequence[str], wanted: Sequence[str]) -> list[tuple[int, bool]]:
    """['Smiling', '~Eyeglasses'] -> [(column, sign)]; '~' asks for the attribute's absence. Spaces = underscores."""
    index = {_norm_name(n): i for i, n in enumerate(names)}
    out = []
    for w in wanted:
        neg = w.startswith(("~", "!"))
        key = _norm_name(w[1:] if neg else w)
        if key not in index:
            raise ValueError(f"unknown attribute {w!r}; the attribute file has: {', '.join(names)}")
        out.append((index[key], not neg))
    if not out:
        raise ValueError("give at least one attribute")
    return out


def attribute_masks(attrs: np.ndarray, cols: Sequence[tuple[int, bool]], margin: float = 0.5
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) boolean masks [N]: T shows every requested attribute (>= margin), S shows none (<= -margin).

    Works for LFW's real-valued classifier scores (chainer-dfi's +-0.5) and CelebA's +-1 alike.
    """
    attrs = np.asarray(attrs, np.float32)
    src, tgt = np.ones(len(attrs), bool), np.ones(len(attrs), bool)
    for c, positive in cols:
        v = attrs[:, c] if positive else -attrs[:, c]
        tgt &= v >= margin
        src &= v <= -margin
    return src, tgt


def attribute_distance(attrs: np.ndarray, query: np.ndarray, metric: Literal["euclidean", "hamming"] = "euclidean"
                       ) -> np.ndarray:
    """Distance [N] of every row to `query` [A]: Euclidean (chainer-dfi) or Hamming of the signs (authors)."""
    attrs, query = np.asarray(attrs, np.float32), np.asarray(query, np.float32)
    if metric == "euclidean":
        return np.sqrt(np.sum(np.square(attrs - query[None]), axis=1))
    if metric == "hamming":
        return np.sum((attrs > 0) != (query[None] > 0), axis=1).astype(np.float32)
    raise ValueError(f"unknown metric {metric!r}; expected 'euclidean' or 'hamming'")


def pixel_distance(images: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sum of squared differences [N] between images [N,H,W,C] and x [H,W,C] (chainer-dfi's CelebA pre-ranking)."""
    d = np.asarray(images, np.float32) - np.asarray(x, np.float32)[None]
    return np.sum(np.square(d), axis=(1, 2, 3))


def select_neighbours(dist: np.ndarray, source: np.ndarray, target: np.ndarray, k: int,
                      exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k nearest (by `dist`, ties by index) members of each mask, nearest first."""
    dist = np.asarray(dist)
    ok = np.ones(len(dist), bool)
    if exclude is not None:
        ok[exclude] = False                              # never the input itself
    out = []
    for mask, what in ((source & ok, "source (lacking)"), (target & ok, "target (showing)")):
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            raise ValueError(f"no {what} images for these attributes; relax the attribute list or the margin")
        out.append(idx[np.argsort(dist[idx], kind="stable")[:k]])
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------------------------
# Features


def feature_means(params: vgg.Params, batches: Iterable[np.ndarray], cfg: DFIConfig) -> dict[str, np.ndarray]:
    """Mean raw VGG taps {tap: [h,w,C]} over images given as batches [B,H,W,3] of 0..255 floats.

    Every batch is zero-padded to the first one's size with weight 0, so one compiled function serves them all.
    """
    fn = _sum_fn(cfg.pooling)
    total, count, size = None, 0, None
    for b in batches:
        b = np.asarray(b, np.float32)
        size = size or len(b)
        if len(b) > size:
            raise ValueError(f"batch of {len(b)} images after a first batch of {size}")
        wts = np.zeros(size, np.float32)
        wts[:len(b)] = 1.0
        pad = np.zeros((size - len(b), *b.shape[1:]), np.float32)
        s = fn(params, jnp.asarray(np.concatenate([b, pad])), jnp.asarray(wts))
        total = s if total is None else jax.tree.map(jnp.add, total, s)
        count += len(b)
    if total is None:
        raise ValueError("feature_means needs at least one image")
    return {t: np.asarray(v) / count for t, v in jax.device_get(total).items()}


@functools.lru_cache(maxsize=4)
def _sum_fn(pooling: str) -> Callable:
    def weighted_sum(p, x, wts):                                   # x [B,H,W,3], wts [B]
        f = vgg.features(p, x, DFI_TAPS, pooling=pooling, input_range=(0.0, 255.0))
        return {t: jnp.einsum("bhwc,b->hwc", v, wts) for t, v in f.items()}
    return jax.jit(weighted_sum)


def channel_scale(mean_s: dict, mean_t: dict, cfg: DFIConfig, floor: float = 0.1) -> dict[str, np.ndarray]:
    """Per-channel multipliers [C] applied to every tap: 1/(mean activation over S and T), times feature_scale.

    Filters that faces barely excite (means down to 1e-4 of the layer's) would be amplified by orders of magnitude
    and make the reconstruction ill-conditioned, so a filter's mean is floored at `floor` x the layer mean.
    """
    out = {}
    for t in DFI_TAPS:
        if cfg.normalize:
            m = 0.5 * (np.mean(mean_s[t], axis=(0, 1)) + np.mean(mean_t[t], axis=(0, 1)))   # [C]
            s = 1.0 / np.maximum(m, floor * max(float(m.mean()), 1e-12))
        else:
            s = np.ones(mean_s[t].shape[-1])
        out[t] = (s * cfg.feature_scale).astype(np.float32)
    return out


def _phi(params: vgg.Params, img255: Array, scale: dict, pooling: str) -> dict[str, Array]:
    f = vgg.features(params, img255, DFI_TAPS, pooling=pooling, input_range=(0.0, 255.0))
    return {t: f[t] * jnp.asarray(scale[t]).reshape(1, 1, 1, -1) for t in DFI_TAPS}


def feature_target(phi_x: dict[str, np.ndarray], mean_s: dict, mean_t: dict, scale: dict, alpha: float,
                   cfg: DFIConfig) -> dict[str, np.ndarray]:
    """phi(x) + alpha * w, with w normalised per `cfg.scaling`. phi_x is already scaled; means are raw."""
    d = {t: (mean_t[t] - mean_s[t]) * scale[t].reshape(1, 1, -1) for t in DFI_TAPS}   # [h,w,C] each
    if cfg.scaling == "beta":
        ms = float(np.mean(np.concatenate([v.ravel() for v in d.values()]).astype(np.float64) ** 2))
        w = {t: v / ms if ms > 0 else np.zeros_like(v) for t, v in d.items()}
        return {t: phi_x[t] + alpha * w[t][None] for t in DFI_TAPS}
    if cfg.scaling == "per-layer":
        out = {}
        for t, v in d.items():
            n = float(np.linalg.norm(v))
            w = v / n if n > 0 else np.zeros_like(v)
            out[t] = phi_x[t] + alpha * float(np.linalg.norm(phi_x[t])) * w[None]
        return out
    raise ValueError(f"unknown scaling {cfg.scaling!r}; expected 'beta' or 'per-layer'")


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction


def recon_loss(z: Array, params: vgg.Params, target: dict, scale: dict, cfg: DFIConfig) -> Array:
    f = _phi(params, z, scale, cfg.pooling)
    if cfg.reduce == "sum":
        feat = 0.5 * sum(jnp.sum(jnp.square(f[t] - target[t])) for t in DFI_TAPS)
    else:
        feat = sum(jnp.mean(jnp.square(f[t] - target[t])) for t in DFI_TAPS)
    tv = 2.0 * jnp.sum(total_variation(z))                       # sum of squared forward differences
    if cfg.tv_reduce == "mean":
        tv = tv / z.size
    return feat + cfg.tv_weight * tv


def make_step(cfg: DFIConfig) -> Callable:
    """jit(step)(z, opt_state, params, target, scale) -> (z, opt_state, loss): one L-BFGS iteration."""
    # Fields that do not enter the loss are blanked so that configs differing only in them share one compile.
    return _make_step(cfg.replace(k=0, alphas=(), steps=0, color="none", margin=0.0, residual=False))


@functools.lru_cache(maxsize=4)
def _make_step(cfg: DFIConfig) -> Callable:
    opt = lbfgs(cfg.lbfgs_memory, cfg.linesearch)

    def step(z, opt_state, params, target, scale):
        f = functools.partial(recon_loss, params=params, target=target, scale=scale, cfg=cfg)
        return optimizer_step(opt, f, z, opt_state, cfg.linesearch)

    return jax.jit(step, donate_argnums=(0, 1))


def match_color(z: np.ndarray, x: np.ndarray, mode: str) -> np.ndarray:
    """Shift/scale z's mean and std (over the whole image, or per channel) to x's."""
    if mode == "none":
        return z
    axes = (0, 1, 2) if mode == "global" else (0, 1)
    zm, zs = z.mean(axis=axes, keepdims=True), z.std(axis=axes, keepdims=True)
    xm, xs = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True)
    return (z - zm) * (xs / np.maximum(zs, 1e-6)) + xm


def edit(params: vgg.Params, x: np.ndarray, mean_s: dict, mean_t: dict, cfg: DFIConfig,
         progress: bool = True) -> list[np.ndarray]:
    """Apply the attribute change to x [H,W,3] (0..255, working size) once per alpha -> uint8 [H,W,3] each."""
    from tqdm.auto import tqdm

    x = np.asarray(x, np.float32)
    shape = next(iter(mean_s.values())).shape
    params = vgg.with_dx_kernels(jax.device_put(params))          # once, not on every step
    scale = channel_scale(mean_s, mean_t, cfg)
    phi_x = jax.device_get(jax.jit(_phi, static_argnums=3)(params, jnp.asarray(x)[None], scale, cfg.pooling))
    if phi_x[DFI_TAPS[0]].shape[1:] != shape:
        raise ValueError(f"input image {x.shape[:2]} does not match the neighbours' working size "
                         f"(feature maps {phi_x[DFI_TAPS[0]].shape[1:]} vs {shape})")
    step, scale_d = make_step(cfg), jax.device_put(scale)

    def run(z0: np.ndarray, alpha: float, n: int) -> np.ndarray:
        target = jax.device_put(feature_target(phi_x, mean_s, mean_t, scale, alpha, cfg))
        z = jnp.array(z0, jnp.float32)[None]                     # [1,H,W,3], a fresh buffer (it is donated)
        opt_state = init_state(lbfgs(cfg.lbfgs_memory, cfg.linesearch), z)
        for _ in tqdm(range(n), desc=f"dfi alpha={alpha:g}", unit="it", disable=not progress):
            z, opt_state, _ = step(z, opt_state, params, target, scale_d)
        return np.asarray(z[0])

    # chainer-dfi's residual trick: what a plain (alpha 0) reconstruction changes is an artifact of the
    # reconstruction (TV blur, VGG's blind spots), so it is subtracted from every edit.
    drift = run(x, 0.0, cfg.steps) - x if cfg.residual else 0.0
    z, outs = x, []
    for i, alpha in enumerate(cfg.alphas):
        z = run(z, float(alpha), cfg.steps if i == 0 else max(1, cfg.steps // 2))   # later alphas: warm start
        out = match_color(z - drift, x, cfg.color)
        outs.append(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    return outs


# ----------------------------------------------------------------------------------------------------------------
# Cache of neighbour feature means (a second edit with the same neighbours skips the 2K forward passes)


def cache_key(**fields: Any) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_means(cache_dir: str | Path | None, key: str, compute: Callable[[], tuple[dict, dict]]
                 ) -> tuple[dict, dict, bool]:
    """(mean_s, mean_t, hit): read `<cache_dir>/dfi-<key>.npz`, or compute and write it atomically."""
    from nets.images import atomic_write_bytes

    path = Path(cache_dir) / f"dfi-{key}.npz" if cache_dir else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return ({t: z[f"S/{t}"] for t in DFI_TAPS}, {t: z[f"T/{t}"] for t in DFI_TAPS}, True)
        except (OSError, KeyError, ValueError):
            pass                                               # unreadable: recompute and overwrite
    mean_s, mean_t = compute()
    if path is not None:
        buf = io.BytesIO()
        np.savez(buf, **{f"S/{t}": mean_s[t] for t in DFI_TAPS}, **{f"T/{t}": mean_t[t] for t in DFI_TAPS})
        atomic_write_bytes(path, buf.getvalue())
    return mean_s, mean_t, False
