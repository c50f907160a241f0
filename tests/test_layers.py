"""The shared layer library against direct numpy implementations of the reference semantics.

Convolutions with gradients run jitted: eagerly every op of a Winograd forward and backward compiles on its own,
several times the cost of compiling the whole function once.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import layers

F2D = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0


def np_upfirdn2d(x, f2d, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    """Direct NV upfirdn2d on NHWC: zero-insert, pad/crop, 2-D true convolution, subsample."""
    n, h, w, c = x.shape
    y = np.zeros((n, h * up, w * up, c), x.dtype)
    y[:, ::up, ::up] = x
    px0, px1, py0, py1 = pad
    y = np.pad(y, ((0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0)), (0, 0)))
    y = y[:, max(-py0, 0):y.shape[1] - max(-py1, 0), max(-px0, 0):y.shape[2] - max(-px1, 0)]
    f = f2d[::-1, ::-1] * gain
    kh, kw = f.shape
    out = np.zeros((n, y.shape[1] - kh + 1, y.shape[2] - kw + 1, c), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += f[i, j] * y[:, i:i + out.shape[1], j:j + out.shape[2]]
    return out[:, ::down, ::down]


def np_conv(x, w, pad):
    """Cross-correlation, NHWC x HWIO, symmetric zero padding."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = w.shape[0]
    ho, wo = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nhwi,io->nhwo", x[:, i:i + ho, j:j + wo], w[i, j])
    return out


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


@functools.partial(jax.jit, static_argnums=0)
def conv_and_grads(conv, x, w, ct):
    """conv(x, w) and the gradients (dx, dw) of sum(conv(x, w) * ct), as one program."""
    return (conv(x, w),) + jax.grad(lambda x, w: jnp.sum(conv(x, w) * ct), (0, 1))(x, w)


@functools.partial(jax.jit, static_argnums=0)
def r1_grads(conv, x, w, ct):
    """d(x) and d(w) of |d/dx sum(tanh(conv(x, w)) * ct)|^2: the double backprop of R1 and path length."""
    def loss(x, w):
        gx = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w)) * ct))(x)
        return jnp.sum(jnp.square(gx))
    return jax.grad(loss, (0, 1))(x, w)


def xla_conv(x, w):
    return layers.conv2d(x, w, impl="xla")


def run(fn, *arrays, **settings):
    """fn(*arrays, **settings) as one compiled program (settings are baked into it)."""
    return jax.jit(functools.partial(fn, **settings))(*arrays)


@pytest.mark.parametrize("up,down,pad,gain", [
    (1, 1, (1, 2, 2, 1), 1.0),
    (2, 1, (2, 1, 2, 1), 4.0),    # ToRGB skip upsample
    (1, 2, (1, 1, 1, 1), 1.0),    # D skip blur
    (1, 1, (2, 2, 2, 2), 1.0),    # D down-conv blur
    (2, 1, (1, 1, 1, 1), 4.0),    # after the transposed conv
    (1, 1, (-1, 0, 0, -1), 1.0),  # negative padding crops
])
def test_upfirdn2d_matches_direct_numpy(rng, up, down, pad, gain):
    x = rng.standard_normal((2, 9, 7, 3)).astype(np.float32)
    got = run(layers.upfirdn2d, x, up=up, down=down, pad=pad, gain=gain)
    want = np_upfirdn2d(x.astype(np.float64), F2D, up, down, pad, gain)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_upsample_and_downsample_shapes_and_dc_gain():
    x = jnp.ones((1, 8, 8, 2))
    up, down = run(layers.upsample2d, x), run(layers.downsample2d, x)
    assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2)
    # Interior pixels keep a constant image constant (filter normalised, gain = up^2).
    np.testing.assert_allclose(np.asarray(up[0, 2:-2, 2:-2]), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(down[0, 1:-1, 1:-1]), 1.0, atol=1e-6)


def test_upconv_matches_nv_generic_reference(rng):
    """Transposed conv + FIR == NV's generic path: zero-insert, pad (3,2), FIR x4, flipped 3x3 conv, no padding."""
    x = rng.standard_normal((2, 5, 5, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 6)).astype(np.float32)
    got = run(layers.conv2d, x, w, up=2)
    y = np_upfirdn2d(x.astype(np.float64), F2D, up=2, pad=(3, 2, 3, 2), gain=4.0)  # [N,2H+2,...]
    want = np_conv(y, w[::-1, ::-1].astype(np.float64), pad=0)
    assert got.shape == (2, 10, 10, 6) == want.shape
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_downconv_matches_blur_then_strided_conv(rng, k):
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    w = rng.standard_normal((k, k, 3, 5)).astype(np.float32)
    got = run(layers.conv2d, x, w, down=2)
    p = 2 if k == 3 else 1
    blurred = np_upfirdn2d(x.astype(np.float64), F2D, pad=(p, p, p, p))
    want = np_conv(blurred, w.astype(np.float64), pad=0)[:, ::2, ::2]
    assert got.shape == (2, 4, 4, 5) == want.shape
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


@pytest.mark.parametrize("up,demod,k", [(1, True, 3), (2, True, 3), (1, False, 1)])
def test_fused_and_nonfused_modconv_agree(rng, up, demod, k):
    x = jnp.asarray(rng.standard_normal((3, 8, 8, 16)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 16, 12)) / np.sqrt(16 * k * k), jnp.float32)
    s = jnp.asarray(rng.standard_normal((3, 16)) + 1.0, jnp.float32)
    a = run(layers.modulated_conv2d, x, w, s, demodulate=demod, up=up, fused=False)
    b = run(layers.modulated_conv2d, x, w, s, demodulate=demod, up=up, fused=True)
    assert a.shape == b.shape == (3, 8 * up, 8 * up, 12)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_demodulation_gives_unit_output_variance(rng):
    """With demodulation each output channel has unit expected variance for unit-variance inputs."""
    x = jnp.asarray(rng.standard_normal((4, 32, 32, 64)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 64, 32)), jnp.float32)
    s = jnp.asarray(rng.uniform(0.1, 3.0, (4, 64)), jnp.float32)
    y = run(layers.modulated_conv2d, x, w, s)
    assert abs(float(jnp.std(y[:, 2:-2, 2:-2])) - 1.0) < 0.05


def test_minibatch_std_uses_strided_groups(rng):
    x = rng.standard_normal((8, 4, 4, 6)).astype(np.float32)
    y = np.asarray(run(layers.minibatch_std, x, group_size=4))
    assert y.shape == (8, 4, 4, 7)
    np.testing.assert_array_equal(y[..., :6], x)
    for i in range(8):
        group = x[i % 2::2]                                      # N/G = 2: sample i is with i +- 2
        want = np.sqrt(group.var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(y[i, :, :, 6], want, rtol=1e-5)
    with pytest.raises(ValueError, match="not divisible"):
        layers.minibatch_std(jnp.zeros((6, 4, 4, 2)), group_size=4)


def test_bias_act_lrelu_gain_and_clamp():
    x = jnp.asarray([-2.0, 0.5, 300.0])
    y = layers.bias_act(x, jnp.asarray([1.0]), "lrelu", clamp=256.0)
    np.testing.assert_allclose(np.asarray(y), [-0.2 * np.sqrt(2), 1.5 * np.sqrt(2), 256.0], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown activation"):
        layers.bias_act(x, None, "gelu")


def test_equalized_dense_uses_runtime_gain():
    """Stored kernel ~ N(0, 1/lr_mul^2); the effective weight is kernel * lr_mul / sqrt(fan_in)."""
    m = layers.Dense(256, lr_mul=0.01)
    v = jax.jit(m.init)(jax.random.key(0), jnp.zeros((1, 512)))
    assert abs(float(jnp.std(v["params"]["kernel"])) - 100.0) < 2.0
    x = jnp.asarray(np.random.default_rng(1).standard_normal((64, 512)), jnp.float32)
    y = jax.jit(m.apply)(v, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x @ (v["params"]["kernel"] * 0.01 / np.sqrt(512))),
                               rtol=1e-4, atol=1e-5)


def test_inject_noise_modes():
    x = jnp.zeros((2, 4, 4, 3))
    const = jnp.arange(16.0).reshape(4, 4)
    y = run(layers.inject_noise, x, jnp.asarray(0.5), noise_mode="const", const=const)
    np.testing.assert_allclose(np.asarray(y[1, :, :, 2]), 0.5 * np.arange(16.0).reshape(4, 4))
    assert layers.inject_noise(x, jnp.asarray(0.5), "none") is x
    r = run(layers.inject_noise, x, jnp.asarray(1.0), noise_mode="random", key=jax.random.key(0))
    assert float(jnp.std(r)) > 0.5 and np.array_equal(r[..., 0], r[..., 1])   # broadcast over channels
    with pytest.raises(ValueError, match="needs a key"):
        layers.inject_noise(x, jnp.asarray(1.0), "random")


@pytest.mark.parametrize("shape,m", [((2, 8, 8, 5, 7), 2), ((2, 8, 8, 5, 7), 4), ((1, 4, 8, 3, 2), 4),
                                     ((1, 4, 6, 3, 2), 2), ((3, 2, 2, 4, 4), 2)])
def test_winograd_conv_matches_xla_conv_and_gradients(rng, shape, m):
    n, h, w_, i, o = shape
    x = jnp.asarray(rng.standard_normal((n, h, w_, i)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, i, o)), jnp.float32)
    assert layers.winograd_tile(x) == (4 if h % 4 == 0 and w_ % 4 == 0 else 2)
    ct = jnp.asarray(rng.standard_normal((n, h, w_, o)), jnp.float32)
    got, gx, gw = conv_and_grads(functools.partial(layers.conv3x3_winograd, m=m), x, w, ct)
    ref, rx, rw = conv_and_grads(xla_conv, x, w, ct)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got), np_conv(np.asarray(x, np.float64), np.asarray(w, np.float64), 1),
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(gx), np.asarray(rx), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gw), np.asarray(rw), atol=1e-3, rtol=1e-5)


def test_conv_impl_dispatch():
    x, w = jnp.zeros((1, 5, 5, 2)), jnp.zeros((3, 3, 2, 2))
    assert not layers._use_winograd(x, w, "winograd")          # odd size: falls back to XLA
    wide = jnp.zeros((3, 3, 128, 128))
    assert layers._use_winograd(jnp.zeros((1, 4, 4, 128)), wide, "winograd")
    assert not layers._use_winograd(jnp.zeros((1, 4, 4, 128)), wide, "auto")   # auto: conv3x3 decides per pass
    assert layers._use_conv3x3(w, "auto") == (jax.default_backend() == "cpu")
    assert not layers._use_conv3x3(w, "xla") and not layers._use_conv3x3(jnp.zeros((1, 1, 2, 2)), "auto")
    with pytest.raises(ValueError, match="conv_impl must be"):
        layers.conv2d(x, w, impl="cudnn")


@pytest.mark.parametrize("h,w_", [(8, 8), (7, 10), (5, 3)])
def test_winograd_weight_grad_matches_xla_on_any_size(rng, h, w_):
    """F(4x4) weight gradient, zero-padded to multiples of 4 when the map is not."""
    x = jnp.asarray(rng.standard_normal((2, h, w_, 3)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((2, h, w_, 5)), jnp.float32)
    want = jax.vjp(lambda w: xla_conv(x, w), jnp.zeros((3, 3, 3, 5)))[1](dy)[0]
    got = run(layers.winograd_weight_grad, x, dy)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4 * float(jnp.abs(want).max()))


# (2, 64, 64, 128, 128) takes conv3x3's Winograd forward and dx when w is trained (_winograd_wins); maps up to
# 8x8 (16x16 with w trained) take the im2col matmul (_im2col_wins); (1, 24, 20, 3, 4) takes XLA's conv
@pytest.mark.parametrize("shape", [(2, 8, 8, 5, 7), (1, 6, 10, 3, 4), (1, 7, 9, 3, 4), (2, 64, 64, 128, 128),
                                   (1, 24, 20, 3, 4), (2, 2, 2, 6, 5)])
def test_conv3x3_matches_xla_for_every_gradient_combination(rng, shape):
    n, h, w_, i, o = shape
    x = jnp.asarray(rng.standard_normal((n, h, w_, i)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, i, o)) / np.sqrt(9 * i), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((n, h, w_, o)), jnp.float32)
    assert layers._winograd_wins(x, w, True) == (shape[1] == 64) and not layers._winograd_wins(x, w, False)
    got, gx, gw = conv_and_grads(layers.conv3x3, x, w, ct)
    ref, rx, rw = conv_and_grads(xla_conv, x, w, ct)
    tol = lambda r: dict(atol=1e-4 * float(jnp.abs(r).max()), rtol=1e-4)       # noqa: E731
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), **tol(ref))
    np.testing.assert_allclose(np.asarray(gx), np.asarray(rx), **tol(rx))
    np.testing.assert_allclose(np.asarray(gw), np.asarray(rw), **tol(rw))
    # x only (style transfer, LPIPS) and w only (a first layer on data): the other gradient is never formed
    gx_only = jax.jit(jax.grad(lambda x: jnp.vdot(layers.conv3x3(x, w), ct)))(x)
    np.testing.assert_allclose(np.asarray(gx_only), np.asarray(rx), **tol(rx))
    gw_only = jax.jit(jax.grad(lambda w: jnp.vdot(layers.conv3x3(x, w), ct)))(w)
    np.testing.assert_allclose(np.asarray(gw_only), np.asarray(rw), **tol(rw))
    assert ("convolution" in jax.jit(layers.conv3x3).lower(x, w).as_text()) == (h * w_ > 64)   # no gradient


@pytest.mark.parametrize("shape", [(1, 24, 20, 3, 4), (1, 64, 64, 256, 256), (2, 2, 2, 6, 5)],
                         ids=["xla", "winograd", "im2col"])
def test_conv3x3_precomputed_dx_kernel_gives_the_same_dx(rng, shape):
    """w_dx = dx_kernel(w), formed once for a fixed kernel: the same values and input gradient on every path."""
    n, h, w_, i, o = shape
    x = jnp.asarray(rng.standard_normal((n, h, w_, i)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, i, o)) / np.sqrt(9 * i), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((n, h, w_, o)), jnp.float32)
    w_dx = layers.dx_kernel(w)
    assert w_dx.shape == (3, 3, o, i)
    np.testing.assert_array_equal(np.asarray(w_dx[2, 0, :, 0]), np.asarray(w[0, 2, 0, :]))   # flipped, swapped
    gx = lambda *a: jax.jit(jax.grad(lambda x: jnp.vdot(layers.conv3x3(x, *a), ct)))(x)     # noqa: E731
    np.testing.assert_array_equal(np.asarray(gx(w, w_dx)), np.asarray(gx(w)))
    # the conv forms read it (a dx kernel of another w changes dx); the im2col matmul's autodiff reads w as stored
    changed = not np.allclose(np.asarray(gx(w, layers.dx_kernel(-w))), np.asarray(gx(w)))
    assert changed == (not layers._im2col_wins(x, False))
    with pytest.raises(ValueError, match="differentiate w without it"):
        jax.grad(lambda w: jnp.vdot(layers.conv3x3(x, w, w_dx), ct))(w)
    with pytest.raises(ValueError, match="w_dx has shape"):
        layers.conv3x3(x, w, jnp.zeros((3, 3, o, i + 1)))
    with pytest.raises(ValueError, match="3x3 stride-1"):
        layers.conv2d(x, w, down=2, w_dx=w_dx)


def test_conv3x3_takes_winograd_for_wide_convs_on_large_maps(rng):
    x = jnp.asarray(rng.standard_normal((1, 64, 64, 256)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 256, 256)) / 48.0, jnp.float32)
    assert layers._winograd_wins(x, w, False)
    assert "convolution" not in jax.jit(layers.conv3x3).lower(x, w).as_text()
    ct = jnp.asarray(rng.standard_normal((1, 64, 64, 256)), jnp.float32)
    for a, b in zip(conv_and_grads(layers.conv3x3, x, w, ct), conv_and_grads(xla_conv, x, w, ct)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-4 * float(jnp.abs(b).max()))


def test_polyphase_upconv_matches_dilated_conv_and_gradients(rng):
    x = jnp.asarray(rng.standard_normal((2, 5, 6, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 3)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((2, 10, 12, 3)), jnp.float32)
    got, *g_got = conv_and_grads(functools.partial(layers.conv2d, up=2, impl="winograd"), x, w, ct)
    ref, *g_ref = conv_and_grads(functools.partial(layers.conv2d, up=2, impl="xla"), x, w, ct)
    assert got.shape == ref.shape == (2, 10, 12, 3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-4, rtol=1e-5)
    raw = run(layers.conv_transpose_polyphase, x, w)
    assert raw.shape == (2, 12, 14, 3) and float(jnp.abs(raw[:, -1]).max()) == 0.0
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("k,shape", [(3, (2, 8, 8, 4, 3)), (3, (1, 6, 10, 2, 5)), (1, (2, 8, 6, 3, 4))])
def test_matmul_downconv_matches_xla_including_second_order(rng, k, shape):
    """The im2col stride-2 conv (and the 1x1 matmul) against XLA's strided conv, values and the gradients R1
    needs: d(image) and d(weights) of a loss on |d logits / d image|^2 (double backprop)."""
    n, h, w_, i, o = shape
    x = jnp.asarray(rng.standard_normal((n, h, w_, i)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, i, o)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((n, h // 2, w_ // 2, o)), jnp.float32)

    def xla(x, w):
        if k == 1:
            x = layers.upfirdn2d(x, down=2, pad=(1, 1, 1, 1))
            return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=layers._DN)
        x = layers.upfirdn2d(x, pad=(2, 2, 2, 2))
        return jax.lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=layers._DN)

    ours = functools.partial(layers.conv2d, down=2, impl="winograd")
    np.testing.assert_allclose(np.asarray(run(ours, x, w)), np.asarray(run(xla, x, w)), atol=1e-4, rtol=1e-5)
    for a, b in zip(r1_grads(ours, x, w, ct), r1_grads(xla, x, w, ct)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-3, rtol=1e-4)


def test_conv1x1_is_a_channel_matmul(rng):
    x = jnp.asarray(rng.standard_normal((2, 3, 5, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((1, 1, 4, 6)), jnp.float32)
    np.testing.assert_allclose(np.asarray(layers.conv2d(x, w)), np_conv(np.asarray(x, np.float64),
                                                                        np.asarray(w, np.float64), 0), atol=1e-5)


@pytest.mark.parametrize("h,w_", [(7, 9), (8, 6)])
def test_strided_conv_gradient_is_the_polyphase_transposed_conv(rng, h, w_):
    """conv3x3_s2's custom backward on odd and even input sizes (the last row/column of an even input gets no tap)."""
    x = jnp.asarray(rng.standard_normal((2, h, w_, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)
    xla = lambda x, w: jax.lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=layers._DN)  # noqa
    ct = jnp.asarray(rng.standard_normal(jax.eval_shape(xla, x, w).shape), jnp.float32)
    got = conv_and_grads(layers.conv3x3_s2, x, w, ct)[1:]
    want = conv_and_grads(xla, x, w, ct)[1:]
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("conv,size", [(layers.conv3x3_winograd, 8), (layers.conv3x3, 8), (layers.conv3x3, 20)],
                         ids=["winograd", "conv3x3-im2col", "conv3x3-xla"])
def test_custom_vjp_convs_second_order_gradients_match_xla(rng, conv, size):
    """R1 and path length differentiate the conv twice: the custom backward must itself differentiate right."""
    x = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((2, size, size, 4)), jnp.float32)
    for a, b in zip(r1_grads(conv, x, w, ct), r1_grads(xla_conv, x, w, ct)):
        b = np.asarray(b)
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-4 * np.abs(b).max(), rtol=1e-4)


def test_winograd_f4_rounding_on_a_wide_layer(rng):
    """F(4x4)'s larger transform constants cost precision; bound it on a network-like 256->256 layer."""
    x = rng.standard_normal((1, 8, 8, 256)).astype(np.float32)
    w = (rng.standard_normal((3, 3, 256, 256)) / np.sqrt(9 * 256)).astype(np.float32)
    want = np_conv(x.astype(np.float64), w.astype(np.float64), 1)
    for m, bound in ((2, 2e-5), (4, 1.5e-4)):
        err = np.abs(np.asarray(jax.jit(layers.conv3x3_winograd, static_argnums=2)(x, w, m)) - want).max()
        assert err < bound, (m, err)


def test_forward_mode_autodiff_through_xla_and_1x1_convs(rng):
    """jax.jvp works through the 1x1 matmul on every backend and through any conv with conv_impl='xla'."""
    x = jnp.asarray(rng.standard_normal((1, 4, 4, 128)), jnp.float32)
    w1 = jnp.asarray(rng.standard_normal((1, 1, 128, 128)), jnp.float32)
    w3 = jnp.asarray(rng.standard_normal((3, 3, 128, 128)), jnp.float32)
    f = lambda x: layers.conv2d(layers.conv2d(x, w3, impl="xla"), w1)    # noqa: E731
    _, t = jax.jvp(f, (x,), (x,))
    np.testing.assert_allclose(np.asarray(t), np.asarray(f(x)), rtol=1e-4, atol=1e-3)   # linear in x


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 7, 9, 2), (3, 5, 4, 1)])
def test_pools_equal_reduce_window_in_value_and_gradient(shape):
    """max_pool2x2 / avg_pool2x2 (reshaped windows, floor mode) == lax.reduce_window, forward and backward."""
    from jax import lax
    x = jax.random.normal(jax.random.key(0), shape)
    win = ((1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    refs = {layers.max_pool2x2: lambda v: lax.reduce_window(v, -jnp.inf, lax.max, *win),
            layers.avg_pool2x2: lambda v: lax.reduce_window(v, 0.0, lax.add, *win) * 0.25}
    for pool, ref in refs.items():
        ct = jax.random.normal(jax.random.key(1), ref(x).shape)
        np.testing.assert_allclose(pool(x), ref(x), rtol=1e-6, atol=1e-7)      # avg: another summation order
        got, want = (jax.grad(lambda v, f=f: jnp.sum(f(v) * ct))(x) for f in (pool, ref))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert got.shape == x.shape and not np.any(np.asarray(got)[:, 2 * (shape[1] // 2):])   # dropped row: 0


def test_max_pool_gradient_goes_to_the_first_maximum_of_a_tie():
    """As torch's max_pool2d: a window of equal values sends the whole gradient to its first (row-major) element;
    ReLU zeros, the common tie, then pass nothing on (their ReLU gradient is 0 either way)."""
    x = jnp.array([[1.0, 1.0, 0.0, 2.0], [1.0, 0.5, 2.0, 2.0]])[None, :, :, None]         # [1,2,4,1]
    g = jax.grad(lambda v: jnp.sum(layers.max_pool2x2(v) * jnp.array([3.0, 5.0]).reshape(1, 1, 2, 1)))(x)
    np.testing.assert_array_equal(g[0, :, :, 0], [[3.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    # differentiable again (a gradient penalty through a pooled network)
    gg = jax.grad(lambda v: jnp.sum(jax.grad(lambda u: jnp.sum(layers.max_pool2x2(u) ** 2))(v)))(x)
    np.testing.assert_array_equal(gg[0, :, :, 0], [[2.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])


def _hlo_count(fn, args, pattern: str) -> int:
    import re
    return len(re.findall(pattern, jax.jit(fn).lower(*args).compile().as_text()))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the matmul/Winograd forms are CPU-only")
def test_backward_re_forms_patches_instead_of_keeping_the_forwards():
    """The stride-2 conv, the polyphase up-conv and the Winograd dw re-form x's patches/tiles in the backward
    (layers._tied): XLA must not merge them with the forward's, which would keep 2.25-9x copies of every such x
    alive from the forward to the backward (the GANs N' Roses release step: 15.3 -> 10.4 GiB of temporaries)."""
    x, w = jnp.ones((2, 17, 17, 128)), jnp.ones((3, 3, 128, 128))
    loss = lambda f: (lambda x, w: jnp.sum(jnp.tanh(f(x, w))))                  # noqa: E731
    grads = lambda f: jax.grad(loss(f), argnums=(0, 1))                        # noqa: E731
    # im2col patches of the stride-2 conv: [2, 8, 8, 9 * 128], once forward, once for dw
    assert _hlo_count(grads(layers.conv3x3_s2), (x, w), r"f32\[2,8,8,1152\]\{[^}]*\} concatenate\(") == 2
    # the polyphase up-conv's 2x2-tap patches [2, 9, 9, 4 * 128]
    xu = jnp.ones((2, 8, 8, 128))
    assert _hlo_count(grads(layers.conv_transpose_polyphase), (xu, w), r"f32\[2,9,9,512\]\{[^}]*\} concatenate\(") == 2
    # Winograd F(4x4) input tiles [36, 2, 16, 16, 128] of a wide, trained conv3x3 on a 64x64 map
    xw, ww = jnp.ones((2, 64, 64, 128)), jnp.ones((3, 3, 128, 128))
    assert layers._winograd_wins(xw, ww, True)
    text = jax.jit(grads(layers.conv3x3)).lower(xw, ww).compile().as_text()
    import re
    assert len(re.findall(r"= f32\[36,2,16,16,128\]\{[^}]*\} [a-z-]+\(", text)) >= 2
