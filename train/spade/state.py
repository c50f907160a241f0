"""SPADE training state, optimisers and the frozen-block mask.

`TrainState` holds G (params, batch-norm running statistics, spectral-norm vectors), D, the VAE encoder E (empty
without the VAE), both Adam states and the step. E trains with G's optimiser (NVlabs pix2pix_model.py
create_optimizers). Randomness is not stored: it is `fold_in(key(seed), step)`. Everything is replicated.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from nets import paths, spade
from train.spade.config import Hparams

Array = jax.Array
PyTree = Any


@flax.struct.dataclass
class TrainState:
    step: Array          # int32 [], completed steps
    g: dict              # {"params", "batch_stats", "spectral"} (collections present per config)
    d: dict              # {"params", "spectral"}
    e: dict              # {"params", "spectral"} of the VAE encoder, {} without it
    g_opt: PyTree        # Adam state over the flat vector of (G params, E params)
    d_opt: PyTree        # Adam state over D's flat params


def schedule(lr: float, hp: Hparams) -> optax.Schedule | float:
    """Constant lr, or NVlabs' linear decay to 0 over opt.decay_steps from opt.decay_start on."""
    o = hp.opt
    if not o.decay_steps:
        return lr
    return lambda count: lr * jnp.clip(1.0 - (count - o.decay_start) / o.decay_steps, 0.0, 1.0)


def optimizers(hp: Hparams) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    o = hp.opt
    return (optax.adam(schedule(o.g_lr, hp), b1=o.beta1, b2=o.beta2, eps=o.eps),
            optax.adam(schedule(o.d_lr, hp), b1=o.beta1, b2=o.beta2, eps=o.eps))


def g_trainable(g_params: PyTree, freeze_g_res: int) -> PyTree:
    """Fine-tuning mask (True = trainable): blocks b{R} with R <= freeze_g_res (the first holds the input layer)
    are frozen."""
    def trainable(path, _):
        res = paths.resolution_of(path)
        return res is None or res > freeze_g_res
    return jax.tree_util.tree_map_with_path(trainable, g_params)


def init_state(hp: Hparams, key: Array, nets: dict | None = None) -> TrainState:
    """A fresh state; `nets` ({"G", "D"(, "E")} variables, e.g. from a model file) replace the random ones."""
    fresh = spade.init_model(hp.model, key)
    nets = {**fresh, **(nets or {})}
    f32 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), dict(t))         # noqa: E731
    g, d = f32(spade.network_vars(nets["G"])), f32(nets["D"])
    e = f32(nets["E"]) if hp.model.vae else {}
    tx_g, tx_d = optimizers(hp)
    g_flat = ravel_pytree((g["params"], e.get("params", {})))[0]
    return TrainState(step=jnp.zeros((), jnp.int32), g=g, d=d, e=e, g_opt=tx_g.init(g_flat),
                      d_opt=tx_d.init(ravel_pytree(d["params"])[0]))
