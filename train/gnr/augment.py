"""GANs N' Roses' per-sample augmentation (mchong6/GANsNRoses train.py, kornia):

    RandomAffine(degrees=20, scale=(0.8, 1.2), translate=(0.1, 0.1), shear=0.15)   applied with p = 0.5
    -> Resize(R * 286/256) -> RandomCrop(R) -> RandomHorizontalFlip

as one inverse map per output pixel and one bilinear sample (the reference resamples twice: warp, then resize).
Outside the source the image is 0 (kornia's zero padding, mid-grey in [-1, 1]). kornia reads a float shear as an
x-shear angle range in degrees, so +-0.15 degrees (almost nothing), as the reference does. The randomness of a
sample is NUM_UNIFORM uniforms, drawn by the step from that sample's own key.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

from train.gnr.config import AugConfig

Array = jax.Array
NUM_UNIFORM = 9       # affine on/off, angle, tx, ty, scale, shear, crop x, crop y, flip


def _lerp(u: Array, lo: float, hi: float) -> Array:
    return lo + (hi - lo) * u


def source_coords(a: AugConfig, u: Array, res: int) -> tuple[Array, Array]:
    """Source pixel coordinates (y, x) [R,R] of every output pixel, for one sample's uniforms u [NUM_UNIFORM]."""
    big = round(res * a.resize)                                   # the resized side (286 at 256 px)
    span = big - res + 1
    ox = jnp.floor(u[6] * span).clip(0, span - 1)                 # RandomCrop offsets, integers in [0, big - R]
    oy = jnp.floor(u[7] * span).clip(0, span - 1)
    j, i = jnp.meshgrid(jnp.arange(res, dtype=jnp.float32), jnp.arange(res, dtype=jnp.float32))   # [R,R] each
    xc = jnp.where(u[8] < a.p_flip, res - 1 - j, j)               # the flip comes last: undo it first
    # Resize (bilinear, align_corners=False): resized pixel -> affine-output pixel.
    xa = (xc + ox + 0.5) * (res / big) - 0.5
    ya = (i + oy + 0.5) * (res / big) - 0.5
    # Affine about the centre: dst = A (src - c) + c + t with A = rotation * scale * x-shear; src = A^-1 (...).
    on = u[0] < a.p_affine
    theta = jnp.deg2rad(_lerp(u[1], -a.degrees, a.degrees))
    t = jnp.stack([_lerp(u[2], -a.translate, a.translate), _lerp(u[3], -a.translate, a.translate)]) * res
    s = _lerp(u[4], a.scale_min, a.scale_max)
    sh = jnp.tan(jnp.deg2rad(_lerp(u[5], -a.shear, a.shear)))
    rot = jnp.array([[jnp.cos(theta), -jnp.sin(theta)], [jnp.sin(theta), jnp.cos(theta)]])
    mat = jnp.where(on, s * rot @ jnp.array([[1.0, sh], [0.0, 1.0]]), jnp.eye(2))
    t = jnp.where(on, t, 0.0)
    c = (res - 1) / 2
    inv = jnp.linalg.inv(mat)
    dx, dy = xa - c - t[0], ya - c - t[1]
    xs = inv[0, 0] * dx + inv[0, 1] * dy + c
    ys = inv[1, 0] * dx + inv[1, 1] * dy + c
    return ys, xs


def augment_one(a: AugConfig, img: Array, u: Array) -> Array:
    """One image [R,R,C] -> its augmented copy [R,R,C] (bilinear, zeros outside)."""
    ys, xs = source_coords(a, u, img.shape[0])
    chan = lambda ch: map_coordinates(ch, [ys, xs], order=1, mode="constant", cval=0.0)   # noqa: E731
    return jax.vmap(chan, in_axes=2, out_axes=2)(img)


def augment(a: AugConfig, imgs: Array, u: Array) -> Array:
    """imgs [..., R, R, C] with uniforms u [..., NUM_UNIFORM] (one set per image) -> augmented [..., R, R, C]."""
    lead = imgs.shape[:-3]
    flat = jax.vmap(lambda x, uu: augment_one(a, x, uu))(imgs.reshape(-1, *imgs.shape[-3:]),
                                                          u.reshape(-1, NUM_UNIFORM))
    return flat.reshape(*lead, *imgs.shape[-3:])
