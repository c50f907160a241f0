"""GANs N' Roses training state and optimisers.

`TrainState` holds both generators (G: A->B, G_B2A: B->A), their EMAs, the three discriminators (D_A faces, D_B
toons, D_L style codes), one Adam state over all generator params and one over all discriminator params (as the
reference's two optimisers), and the step. Randomness is not stored: it is a function of (seed, step, sample).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from nets import gnr
from train.gnr.config import Hparams

Array = jax.Array
PyTree = Any
GENERATORS = ("G", "G_B2A")
DISCRIMINATORS = ("D_A", "D_B", "D_L")


@flax.struct.dataclass
class TrainState:
    step: Array          # int32 [], completed steps
    g: dict              # {"G": {"params"}, "G_B2A": {"params"}}
    g_ema: dict          # the same, EMA of g's params
    d: dict              # {"D_A": {"params"}, "D_B": {"params"}, "D_L": {"params"}}
    g_opt: PyTree        # Adam over the flat vector of both generators' params
    d_opt: PyTree        # Adam over the flat vector of the three discriminators' params


def schedule(hp: Hparams) -> optax.Schedule | float:
    """The reference's StepLR: lr x decay_factor every decay_every steps."""
    o = hp.opt
    if not o.decay_every:
        return o.lr
    return lambda count: o.lr * o.decay_factor ** (count // o.decay_every)


def optimizers(hp: Hparams) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """G: Adam(lr, (beta1, beta2)); D: betas ** (every / (every + 1)), the lazy-R1 correction of the reference
    (which, unlike NVlabs' StyleGAN2, leaves D's learning rate as it is)."""
    o, every = hp.opt, hp.loss.r1_every
    ratio = every / (every + 1) if every else 1.0
    return (optax.adam(schedule(hp), b1=o.beta1, b2=o.beta2, eps=o.eps),
            optax.adam(schedule(hp), b1=o.beta1 ** ratio, b2=o.beta2 ** ratio, eps=o.eps))


def params_of(nets: dict, names: tuple[str, ...]) -> dict:
    return {k: nets[k]["params"] for k in names}


def init_state(hp: Hparams, key: Array, nets: dict | None = None, ema: dict | None = None) -> TrainState:
    """A fresh state; `nets` (some of gnr.NETWORKS, e.g. from a model file) replace the random ones, `ema` the
    EMA generators (default: copies of the generators)."""
    fresh = gnr.init_model(hp.model, key)
    nets = {**fresh, **(nets or {})}
    f32 = lambda t: {"params": jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t["params"])}   # noqa: E731
    g = {k: f32(gnr.network_vars(nets[k])) for k in GENERATORS}
    d = {k: f32(nets[k]) for k in DISCRIMINATORS}
    g_ema = {k: f32(gnr.network_vars((ema or {}).get(k, g[k]))) for k in GENERATORS}
    tx_g, tx_d = optimizers(hp)
    return TrainState(step=jnp.zeros((), jnp.int32), g=g, g_ema=g_ema, d=d,
                      g_opt=tx_g.init(ravel_pytree(params_of(g, GENERATORS))[0]),
                      d_opt=tx_d.init(ravel_pytree(params_of(d, DISCRIMINATORS))[0]))
