"""StyleGAN2 training state, optimisers and freezing masks.

`TrainState` holds everything a resumed run needs besides the data position and the config: G, D, the G EMA,
both Adam states, the step, the running path-length mean and the ADA state. Randomness is not stored: it is
`fold_in(key(seed), step)`. Everything is replicated on every device.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from nets import paths
from nets.stylegan2 import StyleGAN2Config, init_discriminator, init_generator
from train.losses import lazy_adam
from train.stylegan2.config import Hparams

Array = jax.Array
PyTree = Any


@flax.struct.dataclass
class TrainState:
    step: Array          # int32 [], number of completed steps
    g: dict              # {"params", "buffers"} of the trained generator
    g_ema: dict          # {"params", "buffers"}: EMA of g's params, copy of its buffers
    d: dict              # {"params"}
    g_opt: PyTree        # Adam state of g params (over the flattened parameter vector)
    d_opt: PyTree        # Adam state of d params (same)
    pl_mean: Array       # float32 [], running mean path length (starts at 0)
    ada_p: Array         # float32 [], augmentation probability
    ada_acc: Array       # float32 [2]: sum of sign(D(real)) and count since the last p update


def g_reg_interval(hp: Hparams) -> int:
    """Lazy path-length interval, 0 when path-length regularisation is off."""
    return hp.loss.g_reg_every if hp.loss.pl_weight > 0 and hp.loss.g_reg_every > 0 else 0


def d_reg_interval(hp: Hparams) -> int:
    """Lazy R1 interval, 0 when R1 is off."""
    return hp.loss.d_reg_every if hp.loss.r1_gamma > 0 and hp.loss.d_reg_every > 0 else 0


def optimizers(hp: Hparams) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """One Adam each for G and D (G's mapping lr multiplier lives inside its layers), lazy-reg corrected."""
    o = hp.opt
    g_lr, g_b1, g_b2 = lazy_adam(o.g_lr, o.beta1, o.beta2, g_reg_interval(hp))
    d_lr, d_b1, d_b2 = lazy_adam(o.d_lr, o.beta1, o.beta2, d_reg_interval(hp))
    return (optax.adam(g_lr, b1=g_b1, b2=g_b2, eps=o.eps), optax.adam(d_lr, b1=d_b1, b2=d_b2, eps=o.eps))


# ----------------------------------------------------------------------------------------------------------------
# Freezing (fine-tuning): static masks of Python bools, True = trainable.


def d_layer_order(model: StyleGAN2Config) -> list[tuple[str, str]]:
    """D layers counted from the input side, as NV's `freeze_layers`: b{R}.fromrgb, conv0, conv1, skip, then
    b{R/2}.conv0, conv1, skip, ... The epilogue b4 is never frozen."""
    order = []
    for r in reversed(model.resolutions[1:]):
        names = (["fromrgb"] if r == model.resolution else []) + ["conv0", "conv1", "skip"]
        order += [(f"b{r}", n) for n in names]
    return order


def d_trainable(d_params: PyTree, model: StyleGAN2Config, freeze_d: int) -> PyTree:
    """Freeze-D mask: the first `freeze_d` layers of d_layer_order are frozen."""
    n_layers = len(d_layer_order(model))
    if not 0 <= freeze_d <= n_layers:
        raise ValueError(f"finetune.freeze_d must be in 0..{n_layers} for a {model.resolution} px D; "
                         f"got {freeze_d}")
    frozen = set(d_layer_order(model)[:freeze_d])
    return jax.tree_util.tree_map_with_path(
        lambda path, _: (f"b{paths.resolution_of(path)}", paths.layer_of(path)) not in frozen, d_params)


def g_trainable(g_params: PyTree, freeze_g_res: int, freeze_mapping: bool) -> PyTree:
    """Frozen low-resolution generator blocks: synthesis/b{r} for r <= freeze_g_res (and the mapping)."""
    def trainable(path, _):
        if paths.key_name(path[0]) == "mapping":
            return not freeze_mapping
        res = paths.resolution_of(path)
        return not (res is not None and res <= freeze_g_res)
    return jax.tree_util.tree_map_with_path(trainable, g_params)


# ----------------------------------------------------------------------------------------------------------------
# Initialisation


def init_state(hp: Hparams, key: Array, g_vars: dict | None = None, d_vars: dict | None = None,
               g_ema_vars: dict | None = None) -> TrainState:
    """A fresh state; pretrained G/D/EMA variables (fine-tuning) replace the random ones when given."""
    kg, kd = jax.random.split(key)
    g = g_vars if g_vars is not None else init_generator(hp.model, kg)
    d = d_vars if d_vars is not None else init_discriminator(hp.model, kd)
    g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), dict(g))
    d = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), {"params": d["params"]})
    ema = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), dict(g_ema_vars)) if g_ema_vars is not None else g
    tx_g, tx_d = optimizers(hp)
    return TrainState(step=jnp.zeros((), jnp.int32), g=g, g_ema=ema, d=d,
                      g_opt=tx_g.init(ravel_pytree(g["params"])[0]), d_opt=tx_d.init(ravel_pytree(d["params"])[0]),
                      pl_mean=jnp.zeros((), jnp.float32), ada_p=jnp.asarray(hp.ada.p_init, jnp.float32),
                      ada_acc=jnp.zeros((2,), jnp.float32))
