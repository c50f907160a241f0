"""Losses, recipe formulas, ADA augmentation and freezing masks on small hand-computed cases."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from nets.stylegan2 import init_discriminator, init_generator, preset as model_preset
from train import losses
from train.augment import NUM_NORMAL, NUM_UNIFORM, augment
from train.steps import mask_grads
from train.stylegan2.state import d_layer_order, d_trainable, g_trainable


def test_nonsaturating_and_logistic_losses():
    logits = jnp.array([0.0, math.log(3.0)])
    # softplus(-0) = ln 2, softplus(-ln 3) = ln(1 + 1/3)
    assert float(losses.g_nonsaturating(logits)) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, rel=1e-6)
    real, fake = losses.d_logistic(jnp.array([math.log(3.0)]), jnp.array([0.0, -math.log(3.0)]))
    assert float(real) == pytest.approx(math.log(4 / 3), rel=1e-6)
    assert float(fake) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, rel=1e-6)


def test_r1_of_linear_and_quadratic_discriminators():
    x = jnp.asarray(np.random.RandomState(0).randn(3, 4, 4, 2), jnp.float32)
    w = jnp.asarray(np.random.RandomState(1).randn(4, 4, 2), jnp.float32)
    # D(x) = <w, x>: the gradient is w for every sample, so R1 = |w|^2.
    r1 = losses.r1_penalty(lambda v: jnp.sum(v * w[None], axis=(1, 2, 3)), x)
    np.testing.assert_allclose(np.asarray(r1), np.full(3, float(jnp.sum(w * w))), rtol=1e-5)
    # D(x) = |x|^2: the gradient is 2x, so R1 = 4 |x_i|^2.
    r1 = losses.r1_penalty(lambda v: jnp.sum(v * v, axis=(1, 2, 3)), x)
    np.testing.assert_allclose(np.asarray(r1), 4 * np.sum(np.asarray(x) ** 2, axis=(1, 2, 3)), rtol=1e-5)


def test_path_length_of_a_linear_synthesis():
    rs = np.random.RandomState(0)
    a = rs.randn(3, 5, 4, 4, 3).astype(np.float32)           # ws [N,3,5] -> img [N,4,4,3]
    ws = rs.randn(2, 3, 5).astype(np.float32)
    y = rs.randn(2, 4, 4, 3).astype(np.float32)
    synth = lambda w: jnp.einsum("nlk,lkhwc->nhwc", w, a)   # noqa: E731
    got = losses.path_lengths(synth, jnp.asarray(ws), jnp.asarray(y))
    g = np.einsum("lkhwc,nhwc->nlk", a, y)                   # J^T y
    want = np.sqrt(np.mean(np.sum(g ** 2, axis=2), axis=1))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    assert float(losses.pl_mean_update(jnp.float32(2.0), jnp.float32(4.0), 0.01)) == pytest.approx(2.02)


def test_lazy_regularisation_adam_correction():
    # NV: G every 4 -> lr 0.0016, beta2 0.99^0.8; D every 16 -> lr 0.002*16/17, beta2 0.99^(16/17).
    lr, b1, b2 = losses.lazy_adam(0.002, 0.0, 0.99, 4)
    assert (lr, b1) == (pytest.approx(0.0016), 0.0) and b2 == pytest.approx(0.991992, abs=1e-6)
    lr, _, b2 = losses.lazy_adam(0.002, 0.0, 0.99, 16)
    assert lr == pytest.approx(0.00188235, rel=1e-5) and b2 == pytest.approx(0.99**(16 / 17)) and b2 == pytest.approx(0.99058, abs=1e-5)
    assert losses.lazy_adam(0.002, 0.5, 0.99, 0) == (0.002, 0.5, 0.99)


def test_ema_beta_half_life_and_rampup():
    assert float(losses.ema_beta(32, 10.0, None, jnp.int32(0))) == pytest.approx(0.5 ** (32 / 10000), rel=1e-6)
    # Ramp-up: half-life <= 5% of the images seen; at the start the EMA copies G.
    assert float(losses.ema_beta(32, 10.0, 0.05, jnp.int32(0))) == 0.0
    assert float(losses.ema_beta(32, 10.0, 0.05, jnp.int32(1000))) == pytest.approx(0.5 ** (32 / 50), rel=1e-6)
    # After 10 kimg of half-life, the weight of old parameters has halved.
    beta = float(losses.ema_beta(32, 10.0, None, jnp.int32(10 ** 6)))
    assert beta ** (10000 / 32) == pytest.approx(0.5, rel=1e-4)


@settings(deadline=None, max_examples=25)
@given(st.floats(-100, 100, width=32, allow_subnormal=False),   # XLA:CPU flushes subnormals to zero
       st.floats(-100, 100, width=32, allow_subnormal=False))
def test_ema_update_copies_at_zero_and_holds_at_one(ema, new):
    assert float(losses.ema_update(jnp.float32(ema), jnp.float32(new), jnp.float32(0.0))) == np.float32(new)
    assert float(losses.ema_update(jnp.float32(ema), jnp.float32(new), jnp.float32(1.0))) == np.float32(ema)


def test_ada_controller():
    step = 32 * 4 / 500_000
    assert float(losses.ada_adjust(jnp.float32(0.1), jnp.float32(0.7), 0.6, 32, 4, 500.0)) == \
        pytest.approx(0.1 + step, abs=1e-7)
    assert float(losses.ada_adjust(jnp.float32(0.1), jnp.float32(0.5), 0.6, 32, 4, 500.0)) == \
        pytest.approx(0.1 - step, abs=1e-7)
    assert float(losses.ada_adjust(jnp.float32(0.0), jnp.float32(-1.0), 0.6, 32, 4, 500.0)) == 0.0
    assert float(losses.ada_adjust(jnp.float32(1.0), jnp.float32(1.0), 0.6, 32, 4, 500.0)) == 1.0


# -- augmentation


_aug = jax.jit(augment)


def _draws(n, seed):
    rs = np.random.RandomState(seed)
    return rs.uniform(size=(n, NUM_UNIFORM)).astype(np.float32), rs.randn(n, NUM_NORMAL).astype(np.float32)


@settings(deadline=None, max_examples=10)
@given(st.integers(0, 2 ** 31 - 1))
def test_augment_with_p0_is_the_identity(seed):
    x = np.random.RandomState(seed).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
    u, g = _draws(4, seed)
    np.testing.assert_array_equal(np.asarray(_aug(x, u, g, 0.0)), x)


def test_augment_ops_individually():
    x = np.random.RandomState(0).uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
    never = np.ones((1, NUM_UNIFORM), np.float32)           # u >= p: nothing selected
    g = np.array([[0.5, 1.0, -1.0]], np.float32)

    def only(i, **vals):
        u = never.copy()
        u[0, i] = 0.0
        for k, v in vals.items():
            u[0, int(k[1:])] = v
        return np.asarray(_aug(x, u, g, 0.5))[0]

    np.testing.assert_array_equal(only(0, u1=0.2), x[0, :, ::-1])           # flip selected and drawn
    np.testing.assert_array_equal(only(0, u1=0.7), x[0])                    # selected, but no flip drawn
    # translation by round((2u - 1) * 0.125 * 8) = +1 row, -1 column, reflect padding
    moved = only(2, u3=1.0, u4=0.0)
    np.testing.assert_array_equal(moved[1:, :-1], x[0, :-1, 1:])
    np.testing.assert_array_equal(moved[0, :-1], x[0, 1, 1:])               # row -1 reflects to row 1
    np.testing.assert_allclose(only(5), x[0] + 0.5 * 0.2, rtol=1e-6)        # brightness
    np.testing.assert_allclose(only(6), x[0] * 2 ** 0.5, rtol=1e-6)         # contrast, log2 std 0.5
    m = x[0].mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(only(7), m + (x[0] - m) * 0.5, rtol=1e-5, atol=1e-6)  # saturation, 2^-1


def test_augment_is_differentiable():
    x = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (2, 8, 8, 3)), jnp.float32)
    u, g = _draws(2, 1)
    u[:, [0, 2, 5, 6, 7]] = 0.0                              # select every op
    grad = jax.grad(lambda v: jnp.sum(augment(v, u, g, 1.0) ** 2))(x)
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).sum()) > 0


# -- freezing


@pytest.fixture(scope="module")
def nets16():
    cfg = model_preset("tiny", resolution=16)
    return cfg, init_generator(cfg, jax.random.key(0))["params"], init_discriminator(cfg, jax.random.key(1))["params"]


def test_freeze_d_counts_layers_from_the_input_side(nets16):
    cfg, _, d = nets16
    assert d_layer_order(cfg) == [("b16", "fromrgb"), ("b16", "conv0"), ("b16", "conv1"), ("b16", "skip"),
                                  ("b8", "conv0"), ("b8", "conv1"), ("b8", "skip")]
    mask = d_trainable(d, cfg, 5)
    assert not any(jax.tree.leaves(mask["b16"])) and not any(jax.tree.leaves(mask["b8"]["conv0"]))
    assert all(jax.tree.leaves(mask["b8"]["conv1"])) and all(jax.tree.leaves(mask["b4"]))
    assert all(jax.tree.leaves(d_trainable(d, cfg, 0)))
    with pytest.raises(ValueError, match="freeze_d must be in 0..7"):
        d_trainable(d, cfg, 8)


def test_frozen_generator_blocks(nets16):
    _, g, _ = nets16
    mask = g_trainable(g, 8, freeze_mapping=True)
    synth = mask["synthesis"]
    assert not any(jax.tree.leaves(synth["b4"])) and not any(jax.tree.leaves(synth["b8"]))
    assert all(jax.tree.leaves(synth["b16"])) and not any(jax.tree.leaves(mask["mapping"]))
    assert all(jax.tree.leaves(g_trainable(g, 0, False)))


def test_masked_adam_never_moves_frozen_leaves():
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    tx = optax.adam(0.1, b1=0.5, b2=0.99)
    opt = tx.init(params)
    for i in range(3):
        grads = mask_grads({"a": jnp.full(3, 1.0 + i), "b": jnp.full(2, -2.0)}, {"a": True, "b": False})
        upd, opt = tx.update(grads, opt, params)
        params = optax.apply_updates(params, upd)
    np.testing.assert_array_equal(np.asarray(params["b"]), np.ones(2))
    assert np.all(np.asarray(params["a"]) < 1.0)


# ---- SPADE's losses (NVlabs/SPADE models/networks/loss.py) on hand-computed cases ------------------------------

def test_hinge_losses_on_known_logits():
    real = jnp.array([2.0, 0.5, -1.0])          # relu(1 - x): 0, 0.5, 2     -> mean 5/6
    fake = jnp.array([-2.0, 0.0, 1.0])          # relu(1 + x): 0, 1, 2       -> mean 1
    l_real, l_fake = losses.d_hinge(real, fake)
    assert float(l_real) == pytest.approx(2.5 / 3) and float(l_fake) == pytest.approx(1.0)
    assert float(losses.g_hinge(fake)) == pytest.approx(1.0 / 3)          # -mean(fake)


def test_feature_matching_skips_the_logits_and_averages_scales():
    f = [[jnp.full((1, 2), 1.0), jnp.full((1, 2), 5.0), jnp.zeros((1, 1))],
         [jnp.full((1, 3), 2.0), jnp.full((1, 1), 9.0)]]
    r = [[jnp.full((1, 2), 0.0), jnp.full((1, 2), 2.0), jnp.ones((1, 1)) * 100],
         [jnp.full((1, 3), 0.0), jnp.full((1, 1), -9.0)]]
    # scale 0: |1-0| + |5-2| = 4 (logits ignored); scale 1: |2-0| = 2; / 2 scales = 3
    assert float(losses.feature_matching(f, r)) == pytest.approx(3.0)
    g = jax.grad(lambda rr: losses.feature_matching(f, [[rr, r[0][1], r[0][2]], r[1]]))(r[0][0])
    assert not np.any(np.asarray(g))                                     # the real features are detached


def test_kld_is_a_sum_and_zero_at_the_prior():
    assert float(losses.kld(jnp.zeros((4, 3)), jnp.zeros((4, 3)))) == 0.0
    mu, logvar = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, np.log(2.0)]])
    # -0.5 * [(1 + 0 - 1 - 1) + (1 + log 2 - 0 - 2)] = -0.5 * (log 2 - 2)
    assert float(losses.kld(mu, logvar)) == pytest.approx(-0.5 * (np.log(2.0) - 2.0))
    assert float(losses.kld(jnp.tile(mu, (3, 1)), jnp.tile(logvar, (3, 1)))) == pytest.approx(
        -1.5 * (np.log(2.0) - 2.0))                                       # batch of 3: 3x (a sum, not a mean)


def test_perceptual_loss_weights_taps_and_detaches_the_target():
    feats = lambda x: {"a": x * 2.0, "b": x[:, ::2] - 1.0}                  # noqa: E731  a tiny "backbone"
    x, y = jnp.ones((2, 4)), jnp.zeros((2, 4))
    # a: mean |2 - 0| = 2, weight 0.5; b: mean |0 - (-1)| = 1, weight 3 -> 1 + 3
    assert float(losses.perceptual(feats, x, y, ("a", "b"), (0.5, 3.0))) == pytest.approx(4.0)
    gy = jax.grad(lambda yy: losses.perceptual(feats, x, yy, ("a", "b"), (0.5, 3.0)))(y)
    assert not np.any(np.asarray(gy))
