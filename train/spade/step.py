"""The per-device SPADE training step, in the pmap programming model (collectives over axis 'data').

One call = NVlabs' iteration (`trainers/pix2pix_trainer.py`): a G step, then a D step on the same batch in which
the fake is generated again, without gradient, by the just-updated G (and E). Both G calls run in training mode,
so the batch-norm running statistics and the spectral-norm vectors move twice per step, as in PyTorch; so do
D's spectral vectors (D runs in training mode in both phases). Batch-norm statistics are synchronised over the
data axis (SyncBatchNorm). Fake and real go through D in one call, concatenated on the batch axis.

Randomness is a function of (seed, step, global sample index) only (train.steps.sample_keys): per sample, the G
phase's z (or VAE eps) and noise maps and the D phase's, so 1 device == N devices. The KL term is a sum over the
global batch (NVlabs KLDLoss), so each device's share enters its loss times the number of devices before the
gradients are averaged.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from nets import spade, vgg
from train import losses
from train.parallel import AXIS
from train.spade.config import VGG_TAPS, VGG_WEIGHTS, Hparams
from train.spade.state import TrainState, g_trainable, optimizers
from train.steps import adam_step, all_finite, global_index, sample_keys

Array = jax.Array
Z_G, NOISE_G, Z_D, NOISE_D = range(4)        # per-sample key streams


def _split(outs: list[list[Array]], n: int) -> tuple[list[list[Array]], list[list[Array]]]:
    """D outputs of [fake; real] -> (fake outputs, real outputs), per scale and layer."""
    return [[o[:n] for o in s] for s in outs], [[o[n:] for o in s] for s in outs]


def device_step(hp: Hparams, state: TrainState, batch: dict, seed: Array, frozen: dict | None = None
                ) -> tuple[TrainState, dict]:
    """batch {"image": [n,R,R,C], "cond": [n,R,R,Cc]} float32 in [-1, 1]; frozen: VGG params (or None)."""
    m, lo = hp.model, hp.loss
    real, cond = batch["image"], batch["cond"]
    n, ndev = real.shape[0], lax.axis_size(AXIS)
    keys = sample_keys(seed, state.step, global_index(n), 4)                          # [n,4]
    G = spade.Generator(m, axis_name=AXIS if m.norm == "batch" else None)
    D, E = spade.Discriminator(m), spade.Encoder(m)
    tx_g, tx_d = optimizers(hp)
    rest = lambda v: {k: x for k, x in v.items() if k != "params"}                    # noqa: E731

    def latent(e_params, e_rest, k):
        """(z [n,z_dim] | None, local KL sum, E's updated collections) for key stream k."""
        if not m.vae:
            z = jax.vmap(lambda kk: jax.random.normal(kk, (m.z_dim,)))(k) if m.input == "z" else None
            return z, jnp.zeros((), jnp.float32), e_rest
        (mu, logvar), upd = E.apply({"params": e_params, **e_rest}, real, train=True, mutable=list(e_rest))
        eps = jax.vmap(lambda kk: jax.random.normal(kk, (m.z_dim,)))(k)
        return mu + eps * jnp.exp(0.5 * logvar), losses.kld(mu, logvar), dict(upd)

    def generate(g_params, g_rest, z, k):
        fake, upd = G.apply({"params": g_params, **g_rest}, cond, z, k if m.noise else None, train=True,
                            mutable=list(g_rest))
        return fake, dict(upd)

    def discriminate(d_params, d_rest, fake):
        outs, upd = D.apply({"params": d_params, **d_rest}, jnp.concatenate([fake, real]),
                            jnp.concatenate([cond, cond]), train=True, mutable=list(d_rest))
        return _split(outs, n), dict(upd)

    # -- G step (G and E): hinge through D, + feature matching / VGG / pixel L1 / KL as configured.
    def g_loss(ge_params):
        gp, ep = ge_params
        z, kl, e_rest = latent(ep, rest(state.e), keys[:, Z_G])
        fake, g_rest = generate(gp, rest(state.g), z, keys[:, NOISE_G])
        (f_out, r_out), d_rest = discriminate(state.d["params"], rest(state.d), fake)
        terms = {"loss/G_gan": sum(losses.g_hinge(s[-1]) for s in f_out) / len(f_out)}
        if lo.lambda_feat:
            terms["loss/G_feat"] = lo.lambda_feat * losses.feature_matching(f_out, r_out)
        if lo.lambda_vgg:
            feats = lambda x: vgg.features(frozen, x, VGG_TAPS, input_range=None)    # noqa: E731  [-1, 1] in
            terms["loss/G_vgg"] = lo.lambda_vgg * losses.perceptual(feats, fake, real, VGG_TAPS, VGG_WEIGHTS)
        if lo.lambda_l1:
            terms["loss/G_l1"] = lo.lambda_l1 * jnp.mean(jnp.abs(fake - real))
        total = sum(terms.values())
        if m.vae:
            terms["loss/G_kld"] = lo.lambda_kld * kl                                   # this device's share
            total = total + ndev * terms["loss/G_kld"]
        return total, (terms, g_rest, e_rest, d_rest)

    (_, (terms, g_rest, e_rest, d_rest)), grads = jax.value_and_grad(g_loss, has_aux=True)(
        (state.g["params"], state.e.get("params", {})))
    mask = (g_trainable(state.g["params"], hp.finetune.freeze_g_res), jax.tree.map(lambda _: True, grads[1]))
    (g_params, e_params), g_opt = adam_step(tx_g, grads, state.g_opt, (state.g["params"], state.e.get("params", {})),
                                            mask)

    # -- D step: hinge on the fake regenerated (no gradient) by the updated G and E, and the real.
    z, _, e_rest = latent(e_params, e_rest, keys[:, Z_D])
    fake, g_rest = generate(g_params, g_rest, lax.stop_gradient(z) if z is not None else None, keys[:, NOISE_D])
    fake = lax.stop_gradient(fake)

    def d_loss(dp):
        (f_out, r_out), new_rest = discriminate(dp, d_rest, fake)
        parts = [losses.d_hinge(r[-1], f[-1]) for f, r in zip(f_out, r_out)]
        l_real = sum(p[0] for p in parts) / len(parts)
        l_fake = sum(p[1] for p in parts) / len(parts)
        return l_real + l_fake, (l_real, l_fake, f_out[0][-1], r_out[0][-1], new_rest)
    (_, (l_real, l_fake, fake_logits, real_logits, d_rest)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
        state.d["params"])
    d_params, d_opt = adam_step(tx_d, d_grads, state.d_opt, state.d["params"])

    new = TrainState(step=state.step + 1, g={"params": g_params, **g_rest}, d={"params": d_params, **d_rest},
                     e={"params": e_params, **e_rest} if m.vae else {}, g_opt=g_opt, d_opt=d_opt)
    pm = lambda x: lax.pmean(x, AXIS)                                                  # noqa: E731
    metrics = {k: pm(v) for k, v in terms.items()}
    if m.vae:
        metrics["loss/G_kld"] = metrics["loss/G_kld"] * ndev                          # the global sum
    metrics["loss/G"] = sum(metrics.values())
    metrics.update({"loss/D_real": pm(l_real), "loss/D_fake": pm(l_fake), "scores/real": pm(jnp.mean(real_logits)),
                    "scores/fake": pm(jnp.mean(fake_logits))})
    metrics["loss/D"] = metrics["loss/D_real"] + metrics["loss/D_fake"]
    metrics["finite"] = all_finite(list(metrics.values()), ravel_pytree(new.g)[0], ravel_pytree(new.d)[0],
                                   ravel_pytree(new.e)[0] if m.vae else jnp.zeros(()))
    return new, metrics
