"""GANs N' Roses' loss terms (mchong6/GANsNRoses train.py and util.py, main branch), over content groups.

Every batch-shaped array here is [G, g, ...]: G content groups of g members. Means over "the batch" in the
reference (one group of 4) become means over all members; batch statistics (style variance, R1 of the mean) are
taken inside each group, then averaged over groups, so one group is exactly the reference's batch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from train import losses

Array = jax.Array
Heads = Sequence[Array]


def d_logistic_heads(real: Heads, fake: Heads) -> tuple[Array, Array]:
    """util.d_logistic_loss: (sum over heads of mean softplus(-real), sum over heads of mean softplus(fake))."""
    parts = [losses.d_logistic(r, f) for r, f in zip(real, fake)]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def g_nonsaturating_heads(fake: Heads) -> Array:
    """util.g_nonsaturating_loss with unit weights: the mean over heads of mean softplus(-fake)."""
    return sum(losses.g_nonsaturating(f) for f in fake) / len(fake)


def style_consistency(s: Array) -> Array:
    """Sum over dimensions of the biased variance of the style codes of a group, averaged over groups. s [G,g,d]."""
    return jnp.mean(jnp.sum(jnp.var(s, axis=1), axis=-1))


def mse(a: Array, b: Array) -> Array:
    return jnp.mean(jnp.square(a - b))


def r1_groups(d_fn: Callable[[Array], Heads], x: Array, reduce: str = "mean") -> Array:
    """util.d_r1_loss per group: for each head, the gradient of the mean of its logits over a group (members and
    patches) w.r.t. that group's inputs, squared and summed per sample; the mean over samples, summed over heads.
    reduce='sample' drops the 1/g of the group mean (the per-sample R1 of the patch mean). x [G,g,...] -> [].

    Each head gets its own VJP of a function that returns only that head: one VJP of all heads with zero
    cotangents for the others runs the other heads' towers backward on zeros (and, under the outer gradient, their
    second-order pass too): 3x the time of the three separate ones at 256 px (185 s vs 64 s per image D on CPU).
    XLA merges the forward passes the heads share."""
    g = x.shape[1]
    scale = float(g) if reduce == "sample" else 1.0
    total = jnp.zeros((), jnp.float32)
    for h in range(_num_heads(d_fn, x)):
        out, pull = jax.vjp(lambda v, h=h: tuple(d_fn(v))[h], x)
        # d/dlogit of sum over groups of mean over the group's (g * patches) logits.
        (grad,) = pull(jnp.full_like(out, scale / out[0].size))                         # [G,g,...]
        total = total + jnp.mean(jnp.sum(jnp.square(grad).reshape(*x.shape[:2], -1), axis=-1))
    return total


def _num_heads(d_fn: Callable[[Array], Heads], x: Array) -> int:
    """How many heads d_fn returns (traced abstractly: nothing is computed)."""
    return len(jax.eval_shape(lambda v: tuple(d_fn(v)), x))
