"""The per-device GANs N' Roses training step, in the pmap programming model (collectives over axis 'data').

One call = one iteration of mchong6/GANsNRoses train.py (main), both directions at once:
  1. batches: each content group is one image of A (and one of B) in g independently augmented copies; the reals
     are the g distinct images of the group, augmented; prior codes z ~ N(0, I) per sample;
  2. G forward (both generators): encode the copies (content, style) and the reals (style only, with the other
     direction's encoder: G_B2A encodes toons, G encodes faces); each fake's target style is drawn without
     replacement from the group's pool [z; encoded real styles of the target domain]; decode;
  3. D step (D_A, D_B, D_L, one Adam): logistic loss over the three heads on reals vs the (detached) fakes, the
     latent D on z vs encoded styles; lazy R1 every r1_every steps, added to the same update (as the reference;
     `due` as in train/stylegan2/step.py: ("r1",) / () fixed at trace time, or None for a lax.cond on the step);
  4. G step with the updated Ds: adversarial + style consistency + cycle (MSE, LPIPS) + style reconstruction;
     the G forward of (2) is reused through its VJP (no second forward);
  5. EMA of both generators.

Layout: this device's n samples form n / g groups; local sample j is member j // (n/g) of group j % (n/g). With
the interleaved device layout (train.steps.global_index) global sample i then belongs to group i mod (N/g) on
every device count, and a group never spans devices, so batch statistics stay inside groups and 1 device == N
devices. A group's content image is its member 0 (the data order is random). Per-sample randomness comes from
train.steps.sample_keys; a group's permutations from its member 0's key.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from nets import gnr, lpips
from train.gnr import losses as L
from train.gnr.augment import NUM_UNIFORM, augment
from train.gnr.config import Hparams
from train.gnr.state import DISCRIMINATORS, GENERATORS, TrainState, optimizers, params_of
from train.losses import ema_update
from train.parallel import AXIS
from train import steps
from train.steps import adam_step, all_finite, global_index, lazy_phase, sample_keys

Array = jax.Array
AUG_CA, AUG_RA, AUG_CB, AUG_RB, Z_AB, Z_BA, PERM = range(7)     # per-sample key streams
NSTREAMS = 7


def grouped(x: Array, g: int) -> Array:
    """[n,...] -> [n/g, g, ...]: local sample j becomes member j // (n/g) of group j % (n/g)."""
    return x.reshape(g, x.shape[0] // g, *x.shape[1:]).swapaxes(0, 1)


def _flat(x: Array) -> Array:
    return x.reshape(-1, *x.shape[2:])


def _pick(pool_a: Array, pool_b: Array, idx: Array) -> Array:
    """Per group, rows idx [G,g] of the pool [pool_a; pool_b] (each [G,g,d]) -> [G,g,d]."""
    pool = jnp.concatenate([pool_a, pool_b], axis=1)                                   # [G,2g,d]
    return jnp.take_along_axis(pool, idx[..., None], axis=1)


def _split_heads(heads, n_groups: int) -> tuple[tuple, tuple]:
    """D outputs of [first; second] stacked on the group axis -> (first's heads, second's heads)."""
    return tuple(h[:n_groups] for h in heads), tuple(h[n_groups:] for h in heads)


def due_phases(hp: Hparams, step: int) -> tuple[str, ...]:
    """The lazy phases that run at a step number: ("r1",) every r1_every steps."""
    return steps.due_phases({"r1": hp.loss.r1_every}, step)


def device_step(hp: Hparams, state: TrainState, batch: dict, seed: Array, frozen: dict | None = None,
                due: tuple[str, ...] | None = None) -> tuple[TrainState, dict]:
    """batch {"A": [n,R,R,3], "B": [n,R,R,3]} float32 in [-1, 1]; frozen: LPIPS params (or None); due: the lazy
    phases to run (due_phases of state.step), or None to decide them on the device."""
    m, lo, g = hp.model, hp.loss, hp.group
    n = batch["A"].shape[0]
    keys = grouped(sample_keys(seed, state.step, global_index(n), NSTREAMS), g)          # [G,g,NSTREAMS]
    ng = keys.shape[0]
    uniforms = lambda k: jax.vmap(jax.vmap(lambda kk: jax.random.uniform(kk, (NUM_UNIFORM,))))(k)  # noqa: E731
    normals = lambda k: jax.vmap(jax.vmap(lambda kk: jax.random.normal(kk, (m.latent_dim,))))(k)  # noqa: E731
    ori_a, ori_b = grouped(batch["A"], g), grouped(batch["B"], g)                        # [G,g,R,R,3]
    copies = lambda x: jnp.broadcast_to(x[:, :1], x.shape)                                 # noqa: E731
    content_a = augment(hp.aug, copies(ori_a), uniforms(keys[..., AUG_CA]))
    content_b = augment(hp.aug, copies(ori_b), uniforms(keys[..., AUG_CB]))
    real_a = augment(hp.aug, ori_a, uniforms(keys[..., AUG_RA]))
    real_b = augment(hp.aug, ori_b, uniforms(keys[..., AUG_RB]))
    z_ab, z_ba = normals(keys[..., Z_AB]), normals(keys[..., Z_BA])                      # [G,g,d]
    gk = jax.vmap(lambda k: jax.random.split(k, 4))(keys[:, 0, PERM])                    # [G,4]
    perm = lambda k, size: jax.vmap(lambda kk: jax.random.permutation(kk, size))(k)    # noqa: E731
    pool_ab, pool_ba = perm(gk[:, 0], 2 * g)[:, :g], perm(gk[:, 1], 2 * g)[:, :g]       # [G,g]
    shuffle_a, shuffle_b = perm(gk[:, 2], g), perm(gk[:, 3], g)

    G, D, DL = gnr.Generator(m), gnr.Discriminator(m), gnr.LatentDiscriminator(m)
    tx_g, tx_d = optimizers(hp)
    unflat = lambda x: x.reshape(-1, g, *x.shape[1:])                                    # noqa: E731

    def encode(p, x):                                                                  # x [G',g,...]
        c, s = G.apply({"params": p}, _flat(x), method=gnr.Generator.encode)
        return unflat(c), unflat(s)

    def decode(p, c, s):
        return unflat(G.apply({"params": p}, _flat(c), _flat(s), method=gnr.Generator.decode))

    def d_img(p, x):
        return D.apply({"params": p}, x)

    def d_lat(p, s):
        return (DL.apply({"params": p}, s),)

    # -- 2. G forward, kept as a VJP for the G step.
    def forward(gp):
        pa, pb = gp["G"], gp["G_B2A"]
        c_a, s_a = encode(pa, jnp.concatenate([content_a, real_a]))     # one call: copies and reals
        c_b, s_b = encode(pb, jnp.concatenate([content_b, real_b]))
        out = {"s_a": s_a[:ng], "s_real_a": s_a[ng:], "s_b": s_b[:ng], "s_real_b": s_b[ng:]}
        out["t_ab"] = _pick(z_ab, out["s_real_b"], pool_ab)             # A->B styles: prior or encoded toons
        out["t_ba"] = _pick(z_ba, out["s_real_a"], pool_ba)
        out["fake_ab"] = decode(pa, c_a[:ng], out["t_ab"])
        out["fake_ba"] = decode(pb, c_b[:ng], out["t_ba"])
        return out

    gp0 = params_of(state.g, GENERATORS)
    outs, forward_vjp = jax.vjp(forward, gp0)

    # -- 3. D step.
    o = lax.stop_gradient(outs)

    def d_loss(dp):
        real_ha, fake_ha = _split_heads(d_img(dp["D_A"], jnp.concatenate([real_a, o["fake_ba"]])), ng)
        real_hb, fake_hb = _split_heads(d_img(dp["D_B"], jnp.concatenate([real_b, o["fake_ab"]])), ng)
        lat = d_lat(dp["D_L"], jnp.concatenate([z_ab, o["s_real_b"], z_ba, o["s_real_a"]]))[0]   # [4G,g]
        la = L.d_logistic_heads(real_ha, fake_ha)
        lb = L.d_logistic_heads(real_hb, fake_hb)
        ll = [L.d_logistic_heads((lat[i * ng:(i + 1) * ng],), (lat[(i + 1) * ng:(i + 2) * ng],)) for i in (0, 2)]
        terms = {"loss/D_A": la[0] + la[1], "loss/D_B": lb[0] + lb[1],
                 "loss/D_L": sum(x[0] + x[1] for x in ll),
                 "scores/real_B": jnp.mean(real_hb[0]), "scores/fake_B": jnp.mean(fake_hb[0])}
        return terms["loss/D_A"] + terms["loss/D_B"] + terms["loss/D_L"], terms

    dp0 = params_of(state.d, DISCRIMINATORS)
    (_, d_terms), d_grads = jax.value_and_grad(d_loss, has_aux=True)(dp0)
    every = lo.r1_every
    r1, did_r1 = jnp.zeros((), jnp.float32), jnp.float32(0)
    if every:
        def r1_loss(dp):
            pen = (L.r1_groups(lambda x: d_img(dp["D_A"], x), real_a, lo.r1_reduce)
                   + L.r1_groups(lambda x: d_img(dp["D_B"], x), real_b, lo.r1_reduce)
                   + L.r1_groups(lambda s: d_lat(dp["D_L"], s), z_ab, lo.r1_reduce)
                   + L.r1_groups(lambda s: d_lat(dp["D_L"], s), z_ba, lo.r1_reduce))
            return lo.r1_gamma / 2 * pen * every, pen

        def with_r1(operand):
            grads, _ = operand
            (_, pen), r1_grads = jax.value_and_grad(r1_loss, has_aux=True)(dp0)
            return jax.tree.map(jnp.add, grads, r1_grads), pen
        (d_grads, r1), did_r1 = lazy_phase("r1", every, due, state.step, with_r1, (d_grads, r1))
    dp1, d_opt = adam_step(tx_d, d_grads, state.d_opt, dp0)

    # -- 4. G step through the updated Ds.
    def g_loss(out, gp):
        ns = L.g_nonsaturating_heads
        adv = ns(d_img(dp1["D_B"], out["fake_ab"])) + ns(d_img(dp1["D_A"], out["fake_ba"]))
        adv_lat = ns(d_lat(dp1["D_L"], out["s_real_b"])) + ns(d_lat(dp1["D_L"], out["s_real_a"]))
        terms = {"loss/G_adv": adv + lo.lambda_adv_latent * adv_lat,
                 "loss/G_scon": lo.lambda_scon * (L.style_consistency(out["s_a"]) + L.style_consistency(out["s_b"]))}
        # Cycle: back through the other direction, with the style of another member of the group.
        c2a, s2a = encode(gp["G_B2A"], out["fake_ab"])
        c2b, s2b = encode(gp["G"], out["fake_ba"])
        take = lambda s, idx: jnp.take_along_axis(s, idx[..., None], axis=1)            # noqa: E731
        rec_a = decode(gp["G_B2A"], c2a, take(out["s_a"], shuffle_a))
        rec_b = decode(gp["G"], c2b, take(out["s_b"], shuffle_b))
        terms["loss/G_cycle"] = lo.lambda_cycle * (L.mse(rec_a, content_a) + L.mse(rec_b, content_b))
        if lo.lambda_lpips:
            dist = lambda x, y: jnp.mean(lpips.lpips_distance(frozen, _flat(x), _flat(y)))  # noqa: E731
            terms["loss/G_lpips"] = lo.lambda_lpips * (dist(rec_a, content_a) + dist(rec_b, content_b))
        terms["loss/G_style"] = lo.lambda_style * (L.mse(s2a, out["t_ab"]) + L.mse(s2b, out["t_ba"]))
        return sum(terms.values()), terms

    (_, g_terms), (d_out, g_direct) = jax.value_and_grad(g_loss, argnums=(0, 1), has_aux=True)(outs, gp0)
    (g_via_forward,) = forward_vjp(d_out)
    g_grads = jax.tree.map(jnp.add, g_via_forward, g_direct)
    gp1, g_opt = adam_step(tx_g, g_grads, state.g_opt, gp0)

    # -- 5. EMA (per step, over params, as util.accumulate).
    flat_ema, unravel = ravel_pytree(params_of(state.g_ema, GENERATORS))
    flat_ema = ema_update(flat_ema, ravel_pytree(gp1)[0], jnp.float32(hp.opt.ema))
    ema = unravel(flat_ema)

    wrap = lambda p: {k: {"params": v} for k, v in p.items()}                          # noqa: E731
    new = TrainState(step=state.step + 1, g=wrap(gp1), g_ema=wrap(ema), d=wrap(dp1), g_opt=g_opt, d_opt=d_opt)
    pm = lambda x: lax.pmean(x, AXIS)                                                   # noqa: E731
    metrics = {k: pm(v) for k, v in {**g_terms, **d_terms}.items()}
    metrics["loss/G"] = sum(metrics[k] for k in g_terms)
    metrics["loss/D"] = metrics["loss/D_A"] + metrics["loss/D_B"] + metrics["loss/D_L"]
    metrics["reg/r1"] = pm(r1)
    metrics["did_r1"] = did_r1
    metrics["finite"] = all_finite([metrics["loss/G"], metrics["loss/D"], metrics["reg/r1"]],
                                   ravel_pytree(gp1)[0], ravel_pytree(dp1)[0], flat_ema)
    return new, metrics
