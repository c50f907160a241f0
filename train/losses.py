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


# ---- SPADE (NVlabs/SPADE models/networks/loss.py, models/pix2pix_model.py) -----------------------------------

def d_hinge(real_logits: Array, fake_logits: Array) -> tuple[Array, Array]:
    """Hinge D terms (mean relu(1 - D(real)), mean relu(1 + D(fake))); the loss is their sum."""
    return jnp.mean(jax.nn.relu(1.0 - real_logits)), jnp.mean(jax.nn.relu(1.0 + fake_logits))


def g_hinge(fake_logits: Array) -> Array:
    """Hinge G loss -mean(D(fake))."""
    return -jnp.mean(fake_logits)


def feature_matching(fake_feats: list[list[Array]], real_feats: list[list[Array]]) -> Array:
    """pix2pix-HD feature matching: sum over scales and over every D layer but the last of L1(fake, real
    detached), divided by the number of scales (the caller multiplies by lambda_feat)."""
    total = jnp.zeros((), jnp.float32)
    for fk, rl in zip(fake_feats, real_feats):
        for f, r in zip(fk[:-1], rl[:-1]):
            total = total + jnp.mean(jnp.abs(f - jax.lax.stop_gradient(r)))
    return total / len(fake_feats)


def kld(mu: Array, logvar: Array) -> Array:
    """KL(N(mu, exp(logvar)) || N(0, I)) = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)), a SUM over batch and dims
    (NVlabs KLDLoss)."""
    return -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar))


def perceptual(feats_fn: Callable[[Array], dict], x: Array, y: Array, taps: tuple[str, ...],
               weights: tuple[float, ...]) -> Array:
    """NVlabs VGGLoss: sum_i w_i * mean|f_i(x) - f_i(y) detached|, one backbone call on [x; y]."""
    n = x.shape[0]
    feats = feats_fn(jnp.concatenate([x, jax.lax.stop_gradient(y)]))
    return sum(w * jnp.mean(jnp.abs(feats[t][:n] - jax.lax.stop_gradient(feats[t][n:])))
               for t, w in zip(taps, weights))
