"""GAN losses and the small formulas of the StyleGAN2 recipe, as pure functions (shared by the families).

Reference: NVlabs/stylegan2-ada-pytorch `training/loss.py` (StyleGAN2Loss) and `training/training_loop.py`
(lazy regularisation, EMA, ADA heuristic); Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN", Appendix B.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def g_nonsaturating(fake_logits: Array) -> Array:
    """Generator loss mean(softplus(-D(G(z))))."""
    return jnp.mean(jax.nn.softplus(-fake_logits))


def d_logistic(real_logits: Array, fake_logits: Array) -> tuple[Array, Array]:
    """Discriminator loss terms (mean softplus(-D(x)), mean softplus(D(G(z)))); the loss is their sum."""
    return jnp.mean(jax.nn.softplus(-real_logits)), jnp.mean(jax.nn.softplus(fake_logits))


def r1_penalty(d_fn: Callable[[Array], Array], reals: Array) -> Array:
    """Per-sample R1 = sum over pixels of (d sum(D(x)) / dx)^2 on real images. reals [N,H,W,C] -> [N].

    The loss is mean(r1) * gamma / 2 (times the lazy interval).
    """
    grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(reals)                    # [N,H,W,C]
    return jnp.sum(jnp.square(grads), axis=(1, 2, 3))


def path_lengths(synth_fn: Callable[[Array], Array], ws: Array, pl_noise: Array) -> Array:
    """|J_w^T y| per sample: y = pl_noise (N(0,1)/sqrt(H*W) images), J the Jacobian of synth at ws.

    ws [N,num_ws,w_dim], pl_noise [N,H,W,C] -> [N]: sqrt(mean over ws of the squared gradient norm), as NV
    (`pl_grads.square().sum(2).mean(1).sqrt()`). Differentiable in the synthesis parameters (double backprop).
    """
    _, vjp = jax.vjp(synth_fn, ws)
    (g,) = vjp(pl_noise)                                                    # [N,num_ws,w_dim]
    return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(g), axis=2), axis=1))


def pl_mean_update(pl_mean: Array, mean_length: Array, decay: float) -> Array:
    """Running mean of path lengths: lerp(pl_mean, mean_length, decay) (NV keeps the gradient through it)."""
    return pl_mean + decay * (mean_length - pl_mean)


def lazy_adam(lr: float, beta1: float, beta2: float, interval: int) -> tuple[float, float, float]:
    """Adam hyperparameters corrected for lazy regularisation every `interval` steps (NV `mb_ratio`).

    c = interval / (interval + 1): lr * c, beta ** c. interval 0 means no lazy regularisation (c = 1).
    """
    c = interval / (interval + 1) if interval > 0 else 1.0
    return lr * c, beta1 ** c, beta2 ** c


def ema_beta(batch: int, ema_kimg: float, rampup: float | None, cur_nimg: Array) -> Array:
    """Per-step EMA decay 0.5 ** (batch / ema_nimg), with ema_nimg <= cur_nimg * rampup when ramping up."""
    ema_nimg = jnp.asarray(ema_kimg * 1000.0, jnp.float32)
    if rampup is not None:
        ema_nimg = jnp.minimum(ema_nimg, cur_nimg.astype(jnp.float32) * rampup)
    return jnp.power(0.5, batch / jnp.maximum(ema_nimg, 1e-8))


def ema_update(ema: Array, new: Array, beta: Array) -> Array:
    """new.lerp(ema, beta), written as beta * ema + (1 - beta) * new so that beta = 0 copies `new` and
    beta = 1 keeps `ema` bit-exactly."""
    return beta * ema + (1.0 - beta) * new


def ada_adjust(p: Array, rt: Array, target: float, batch: int, interval: int, ada_kimg: float) -> Array:
    """NV ADA heuristic: p += sign(r_t - target) * batch * interval / (ada_kimg * 1000), kept in [0, 1]."""
    step = batch * interval / (ada_kimg * 1000.0)
    return jnp.clip(p + jnp.sign(rt - target) * step, 0.0, 1.0)
