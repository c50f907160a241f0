"""The per-device training step, written once in the pmap programming model (collectives over axis 'data').

One call = NV's four phases in order: G main, G path-length reg (every g_reg_every steps), D main, D R1 reg
(every d_reg_every steps), then the G EMA and the ADA heuristic. Gradients are `pmean`ed over 'data'. Which
regularisation phases run is `due` (the names of `due_phases(hp, step)`, fixed when the step is traced: one
program per pattern), or, with due None, `lax.cond` branches on `state.step` (one program for every step).

Randomness is a function of (seed, step, phase, global sample index) only: sample j on device d has global
index i = j * num_devices + d, and all its draws in a phase (latents, mixing cutoff, noise maps, augmentation)
come from two keys fold_in(fold_in(key(seed), step), (i * NPHASE + phase) * 2 + {0, 1}) (a normal and a uniform
vector, sliced up; few threefry calls keep the compile small). This is the "fold_in(step) then
fold_in(axis_index)" rule with the axis index folded into the sample index, so the same global batch gives
the same update on 1 or 8 devices or processes. The minibatch-stddev groups of D agree too when each device
holds a multiple of the group size: NV's strided groups (i, i + N/G, ...) are exactly the groups of the
interleaved layout. The noise maps are fed to the generator as per-sample 'const' buffers of a vmapped
synthesis. References: NVlabs/stylegan2-ada-pytorch `training/loss.py`, `training/training_loop.py`.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from nets.stylegan2 import Discriminator, Generator
from train import losses
from train.augment import NUM_NORMAL, NUM_UNIFORM, augment
from train.parallel import AXIS
from train.stylegan2.config import Hparams
from train.stylegan2.state import TrainState, d_reg_interval, d_trainable, g_reg_interval, g_trainable, \
    optimizers
from train import steps
from train.steps import adam_step, all_finite, lazy_phase

Array = jax.Array
PHASE_G, PHASE_GREG, PHASE_D, PHASE_DREG = range(4)   # NV's phases Gmain, Greg, Dmain, Dreg
NPHASE = 4


class Draws(NamedTuple):
    """All randomness of one phase for this device's samples (two threefry calls per phase in total)."""
    z: Array | None          # [n,z_dim]
    z_mix: Array | None      # [n,z_dim]
    cutoff: Array | None     # int32 [n]: ws[:, cutoff:] come from z_mix (num_ws = no mixing)
    noise: dict | None       # like buffers['synthesis'], leaves [n,R,R]: the sample's noise maps
    aug_u: Array             # [n,n_aug,NUM_UNIFORM] uniforms for the augmentation of n_aug images
    aug_g: Array             # [n,n_aug,NUM_NORMAL] normals for the same
    extra: Array | None      # [n,*extra_shape] more normals (path-length noise)


def phase_keys(seed: Array, step: Array, global_index: Array) -> Array:
    """Keys [n,NPHASE,2] = fold_in(fold_in(key(seed), step), (index * NPHASE + phase) * 2 + {0: normal, 1: uniform})."""
    step_key = jax.random.fold_in(jax.random.key(seed), step)
    data = (global_index[:, None, None] * NPHASE + jnp.arange(NPHASE)[None, :, None]) * 2 \
        + jnp.arange(2)[None, None, :]                                                 # [n,NPHASE,2]
    flat = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(data.reshape(-1).astype(jnp.uint32))
    return flat.reshape(data.shape)


def draw(hp: Hparams, keys: Array, noise_like: dict | None, n_aug: int,
         extra_shape: tuple[int, ...] = ()) -> Draws:
    """Per-sample draws from keys [n,2]: one normal vector and one uniform vector per sample, sliced up.

    The mixing cutoff is U{1..num_ws-1} with probability style_mixing, else num_ws (no mixing); NV draws it once
    per batch, here per sample, which keeps the draw independent of how the batch is split.
    """
    m = hp.model
    latents = noise_like is not None
    leaves, treedef = jax.tree.flatten(noise_like) if latents else ([], None)
    sizes = ([m.z_dim, m.z_dim] + [x.size for x in leaves] if latents else []) \
        + [n_aug * NUM_NORMAL, math.prod(extra_shape)]
    n_u = 2 + n_aug * NUM_UNIFORM

    def one(k):                                                                        # k [2]
        v = jax.random.normal(k[0], (sum(sizes),))
        return jnp.split(v, list(itertools.accumulate(sizes))[:-1]), jax.random.uniform(k[1], (n_u,))
    parts, u = jax.vmap(one)(keys)                                                     # u [n,n_u]
    n = keys.shape[0]
    z = z_mix = cutoff = noise = None
    if latents:
        z, z_mix, parts = parts[0], parts[1], parts[2:]
        noise = jax.tree.unflatten(treedef, [p.reshape((n,) + x.shape) for p, x in zip(parts, leaves)])
        parts = parts[len(leaves):]
        cut = 1 + jnp.floor(u[:, 1] * (m.num_ws - 1)).astype(jnp.int32)
        cutoff = jnp.where(u[:, 0] < hp.loss.style_mixing, jnp.minimum(cut, m.num_ws - 1), m.num_ws)
    aug_g = parts[0].reshape(n, n_aug, NUM_NORMAL)
    aug_u = u[:, 2:].reshape(n, n_aug, NUM_UNIFORM)
    extra = parts[1].reshape((n,) + extra_shape) if extra_shape else None
    return Draws(z, z_mix, cutoff, noise, aug_u, aug_g, extra)


def mapping(hp: Hparams, g_vars: dict, dr: Draws) -> tuple[Array, Array]:
    """Style-mixed ws [n,num_ws,w_dim] and the unmixed w [n,w_dim] of z (for the w_avg update).
    One mapping call on [z; z_mix]."""
    n = dr.z.shape[0]
    ws_all = Generator(hp.model).apply(g_vars, jnp.concatenate([dr.z, dr.z_mix]), method=Generator.map)
    ws, ws2 = ws_all[:n], ws_all[n:]                                                   # [n,num_ws,w_dim]
    mix = jnp.arange(hp.model.num_ws)[None, :] < dr.cutoff[:, None]                  # [n,num_ws]
    return jnp.where(mix[:, :, None], ws, ws2), ws[:, 0]


def synthesize(hp: Hparams, params: dict, buffers: dict, ws: Array, noise: dict) -> Array:
    """Images [n,R,R,C] with each sample's own noise maps, fed as the 'const' noise buffers of a vmapped
    single-sample synthesis (XLA folds the mapped axis back into the conv batch dimension)."""
    G = Generator(hp.model)

    def one(w, nz):                                                                    # w [num_ws,w_dim]
        v = {"params": params, "buffers": {"mapping": buffers["mapping"], "synthesis": nz}}
        return G.apply(v, w[None], noise_mode="const", method=Generator.synthesize)[0]
    return jax.vmap(one)(ws, noise)


def due_phases(hp: Hparams, step: int) -> tuple[str, ...]:
    """The lazy phases that run at a step number: "pl" (G path length) and "r1" (D), as NV's phase intervals."""
    return steps.due_phases({"pl": g_reg_interval(hp), "r1": d_reg_interval(hp)}, step)


def device_step(hp: Hparams, state: TrainState, batch: dict, seed: Array, frozen: None = None,
                due: tuple[str, ...] | None = None) -> tuple[TrainState, dict]:
    """One training step on this device's shard: batch {"image": [n,R,R,C] float32 in [-1, 1]}, seed uint32 [];
    due: the lazy phases to run (due_phases of state.step), or None to decide them on the device."""
    reals = batch["image"]
    D = Discriminator(hp.model)
    tx_g, tx_d = optimizers(hp)
    g_mask = g_trainable(state.g["params"], hp.finetune.freeze_g_res, hp.finetune.freeze_mapping)
    d_mask = d_trainable(state.d["params"], hp.model, hp.finetune.freeze_d)
    n, res, ch = reals.shape[0], hp.model.resolution, hp.model.img_channels
    ndev, dev = lax.axis_size(AXIS), lax.axis_index(AXIS)
    batch_size = n * ndev                                                              # global batch
    gidx = jnp.arange(n) * ndev + dev                                                  # global sample index
    keys = phase_keys(seed, state.step, gidx)                                           # [n,NPHASE,2]
    g_buf, d_params0 = state.g["buffers"], state.d["params"]
    noise_like = g_buf["synthesis"]

    def d_logits(d_params, img, u, g):
        if hp.ada.enabled:
            img = augment(img, u, g, state.ada_p)
        return D.apply({"params": d_params}, img)

    adam = adam_step

    # -- G main: non-saturating loss through the (augmented) discriminator.
    dr = draw(hp, keys[:, PHASE_G], noise_like, n_aug=1)

    def g_main_loss(gp):
        ws, _ = mapping(hp, {"params": gp, "buffers": g_buf}, dr)
        fake = synthesize(hp, gp, g_buf, ws, dr.noise)
        return losses.g_nonsaturating(d_logits(d_params0, fake, dr.aug_u[:, 0], dr.aug_g[:, 0]))
    loss_g, grads = jax.value_and_grad(g_main_loss)(state.g["params"])
    g_params, g_opt = adam(tx_g, grads, state.g_opt, state.g["params"], g_mask)

    # -- G reg: path length on batch // shrink samples (global indices j * ndev + dev, j < n // shrink).
    g_every = g_reg_interval(hp)
    pl_mean, pl_pen = state.pl_mean, jnp.zeros((), jnp.float32)
    did_g_reg = jnp.float32(0)
    if g_every:
        n_pl = max(n // hp.loss.pl_batch_shrink, 1)
        dr_pl = draw(hp, keys[:n_pl, PHASE_GREG], noise_like, n_aug=0, extra_shape=(res, res, ch))

        def g_reg(operand):
            gp, opt, _, _ = operand

            def pl_loss(gp):
                ws, _ = mapping(hp, {"params": gp, "buffers": g_buf}, dr_pl)
                lengths = losses.path_lengths(lambda w: synthesize(hp, gp, g_buf, w, dr_pl.noise), ws,
                                              dr_pl.extra / res)                       # noise / sqrt(H*W)
                new_mean = losses.pl_mean_update(state.pl_mean, lax.pmean(jnp.mean(lengths), AXIS),
                                                 hp.loss.pl_decay)
                pen = jnp.square(lengths - new_mean)                                   # [n_pl]
                return jnp.mean(pen) * hp.loss.pl_weight * g_every, (lax.stop_gradient(new_mean), pen)
            (_, (new_mean, pen)), grads = jax.value_and_grad(pl_loss, has_aux=True)(gp)
            gp, opt = adam(tx_g, grads, opt, gp, g_mask)
            return gp, opt, new_mean, lax.pmean(jnp.mean(pen), AXIS)
        (g_params, g_opt, pl_mean, pl_pen), did_g_reg = lazy_phase("pl", g_every, due, state.step, g_reg,
                                                                   (g_params, g_opt, pl_mean, pl_pen))

    # -- D main: logistic loss on generated and real images. w_avg tracks this phase's z (one update per
    # step, as StyleGAN3): lerp(batch mean, w_avg, beta), with the batch mean taken over all devices.
    dr = draw(hp, keys[:, PHASE_D], noise_like, n_aug=2)
    ws, w = mapping(hp, {"params": g_params, "buffers": g_buf}, dr)
    fake = lax.stop_gradient(synthesize(hp, g_params, g_buf, ws, dr.noise))
    w_mean = lax.pmean(jnp.mean(w, axis=0), AXIS)
    w_avg = w_mean + hp.model.w_avg_beta * (g_buf["mapping"]["w_avg"] - w_mean)
    new_buf = {**g_buf, "mapping": {**g_buf["mapping"], "w_avg": w_avg}}

    def d_main_loss(dp):
        fake_logits = d_logits(dp, fake, dr.aug_u[:, 0], dr.aug_g[:, 0])
        real_logits = d_logits(dp, reals, dr.aug_u[:, 1], dr.aug_g[:, 1])
        l_real, l_fake = losses.d_logistic(real_logits, fake_logits)
        return l_real + l_fake, (l_real, l_fake, real_logits, fake_logits)
    (_, (l_real, l_fake, real_logits, fake_logits)), grads = jax.value_and_grad(d_main_loss, has_aux=True)(
        d_params0)
    d_params, d_opt = adam(tx_d, grads, state.d_opt, d_params0, d_mask)

    # -- D reg: lazy R1 on (augmented) reals, gradient w.r.t. the non-augmented image (as NV).
    d_every = d_reg_interval(hp)
    r1 = jnp.zeros((), jnp.float32)
    did_d_reg = jnp.float32(0)
    if d_every:
        dr_r1 = draw(hp, keys[:, PHASE_DREG], None, n_aug=1)

        def d_reg(operand):
            dp, opt, _ = operand

            def r1_loss(dp):
                pen = losses.r1_penalty(lambda x: d_logits(dp, x, dr_r1.aug_u[:, 0], dr_r1.aug_g[:, 0]), reals)
                return jnp.mean(pen) * (hp.loss.r1_gamma / 2) * d_every, pen          # pen [n]
            (_, pen), grads = jax.value_and_grad(r1_loss, has_aux=True)(dp)
            dp, opt = adam(tx_d, grads, opt, dp, d_mask)
            return dp, opt, lax.pmean(jnp.mean(pen), AXIS)
        (d_params, d_opt, r1), did_d_reg = lazy_phase("r1", d_every, due, state.step, d_reg, (d_params, d_opt, r1))

    # -- G EMA (params averaged with a half-life in kimg, buffers copied).
    beta = losses.ema_beta(batch_size, hp.ema.kimg, hp.ema.rampup, state.step * batch_size)
    flat_ema, unravel_g = ravel_pytree(state.g_ema["params"])
    flat_ema = losses.ema_update(flat_ema, ravel_pytree(g_params)[0], beta)
    ema = {"params": unravel_g(flat_ema), "buffers": new_buf}

    # -- ADA heuristic: accumulate sign(D(real)); every `interval` steps move p towards the target.
    signs = jnp.stack([lax.psum(jnp.sum(jnp.sign(real_logits)), AXIS), lax.psum(jnp.float32(n), AXIS)])
    acc = state.ada_acc + signs
    rt = acc[0] / jnp.maximum(acc[1], 1.0)
    ada_p = state.ada_p
    if hp.ada.enabled:
        update = (state.step + 1) % hp.ada.interval == 0
        ada_p = jnp.where(update, losses.ada_adjust(ada_p, rt, hp.ada.target, batch_size, hp.ada.interval,
                                                    hp.ada.kimg), ada_p)
        acc = jnp.where(update, jnp.zeros_like(acc), acc)

    new = TrainState(step=state.step + 1, g={"params": g_params, "buffers": new_buf}, g_ema=ema,
                     d={"params": d_params}, g_opt=g_opt, d_opt=d_opt, pl_mean=pl_mean, ada_p=ada_p,
                     ada_acc=acc)
    pm = lambda x: lax.pmean(x, AXIS)                                                  # noqa: E731
    metrics = {"loss/G": pm(loss_g), "loss/D_real": pm(l_real), "loss/D_fake": pm(l_fake),
               "scores/real": pm(jnp.mean(real_logits)), "scores/fake": pm(jnp.mean(fake_logits)),
               "reg/pl": pl_pen, "reg/r1": r1, "pl_mean": pl_mean, "ada/p": ada_p, "ada/rt": rt,
               "did_g_reg": did_g_reg, "did_d_reg": did_d_reg}
    metrics["loss/D"] = metrics["loss/D_real"] + metrics["loss/D_fake"]
    metrics["finite"] = all_finite([metrics[k] for k in ("loss/G", "loss/D", "reg/pl", "reg/r1")],
                                   ravel_pytree(g_params)[0], ravel_pytree(d_params)[0], flat_ema)
    return new, metrics
