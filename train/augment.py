"""A minimal ADA (Karras et al. 2020, "Training GANs with limited data"): differentiable per-sample augmentation.

Reference: NVlabs/stylegan2-ada-pytorch `training/augment.py` (pipeline 'bgc'), reduced to its ops that need no
resampling filter: x-flip, integer translation (reflect padding), brightness, contrast and saturation. Each op is
applied to a sample with probability p, with NV's strengths. Applied to every image D sees, and differentiable,
so G and R1 gradients pass through it. Not-selected samples are returned bit-exactly (`where`, not a blend), so
p = 0 is the identity.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

XINT_MAX = 0.125          # integer translation, fraction of the image size
BRIGHTNESS_STD = 0.2      # additive, in [-1, 1] image units
CONTRAST_STD = 0.5        # log2 of the multiplicative contrast
SATURATION_STD = 1.0      # log2 of the saturation factor


def _reflect(i: Array, n: int) -> Array:
    """Reflect-pad indexing (edge sample not repeated, torch 'reflect'): any integer -> [0, n)."""
    if n == 1:
        return jnp.zeros_like(i)
    period = 2 * (n - 1)
    i = jnp.mod(i, period)
    return jnp.where(i > n - 1, period - i, i)


NUM_UNIFORM = 8           # uniform draws per sample (selections, flip, translation)
NUM_NORMAL = 3            # normal draws per sample (brightness, contrast, saturation)


def _augment_one(x: Array, u: Array, g: Array, p: Array) -> Array:
    """x [H,W,C] in about [-1, 1]; u [NUM_UNIFORM] ~ U(0,1), g [NUM_NORMAL] ~ N(0,1) for this sample."""
    h, w, c = x.shape
    # x-flip: when selected, flip with probability 1/2 (NV draws i in {0, 1}).
    x = jnp.where((u[0] < p) & (u[1] < 0.5), x[:, ::-1], x)

    # Integer translation by round(t * size), t ~ U(-0.125, 0.125) per axis.
    ty = jnp.round((u[3] * 2.0 - 1.0) * XINT_MAX * h).astype(jnp.int32)
    tx = jnp.round((u[4] * 2.0 - 1.0) * XINT_MAX * w).astype(jnp.int32)
    moved = x[_reflect(jnp.arange(h) - ty, h)][:, _reflect(jnp.arange(w) - tx, w)]
    x = jnp.where(u[2] < p, moved, x)

    # Colour: brightness (add), contrast (scale about 0, i.e. mid-grey), saturation (about the channel mean).
    x = jnp.where(u[5] < p, x + g[0] * BRIGHTNESS_STD, x)
    x = jnp.where(u[6] < p, x * jnp.exp2(g[1] * CONTRAST_STD), x)
    if c > 1:
        m = jnp.mean(x, axis=-1, keepdims=True)                                 # [H,W,1]
        x = jnp.where(u[7] < p, m + (x - m) * jnp.exp2(g[2] * SATURATION_STD), x)
    return x


def augment(images: Array, u: Array, g: Array, p: Array) -> Array:
    """Augment each image with its own random numbers: images [N,H,W,C], u [N,NUM_UNIFORM] uniform,
    g [N,NUM_NORMAL] normal, p scalar probability -> [N,H,W,C]. The draws come from the caller (the training
    step draws all of a sample's randomness at once, keyed by its global index)."""
    return jax.vmap(_augment_one, in_axes=(0, 0, 0, None))(images, u, g, jnp.asarray(p, jnp.float32))
