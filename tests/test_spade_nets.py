"""nets/spade.py against the SPADE references' semantics (NVlabs/SPADE models/networks/{normalization,
architecture,generator,encoder,discriminator}.py; imoken1122/SPADE-AnimeFace networks/*.py).

Parameter counts are pinned to the torch reference models (built once outside this repo at the same settings)
and checked against a closed-form count written from the reference constructors. The SPADE layer and the
residual block run against plain numpy re-implementations of the reference forward (einsum convs, the legacy
nearest rule, batch norm and spectral norm by hand). Everything jitted, tiny widths, <= 64 px.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import Mesh, PartitionSpec as P

from nets import spade as S


# ----------------------------------------------------------------------------------------------------------------
# numpy references (float64)


def np_conv(x, w, b=None, stride=1, pad=None):
    """torch Conv2d (cross-correlation, zero padding, default pad k // 2) on NHWC x HWIO."""
    k = w.shape[0]
    pad = k // 2 if pad is None else pad
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(k):
        for j in range(k):
            patch = x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += np.einsum("nhwc,co->nhwo", patch, w[i, j])
    return out if b is None else out + b


def np_nearest_idx(n_in, n_out):
    """torch F.interpolate(mode='nearest'): source index floor(dst * in / out) (exact integer arithmetic)."""
    return np.array([min(d * n_in // n_out, n_in - 1) for d in range(n_out)])


def np_nearest(x, h, w):
    return x[:, np_nearest_idx(x.shape[1], h)][:, :, np_nearest_idx(x.shape[2], w)]


def np_lrelu(x):
    return np.where(x >= 0, x, 0.2 * x)


def np_param_free_norm(x, stats, norm, train):
    """BatchNorm2d / InstanceNorm2d with affine=False; returns (normalised, updated stats)."""
    if norm == "instance":
        m, v = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
        return (x - m) / np.sqrt(v + 1e-5), stats
    if not train:
        return (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5), stats
    n = x.size // x.shape[-1]
    m, v = x.mean((0, 1, 2)), x.var((0, 1, 2))                       # biased for normalising
    new = {"mean": 0.9 * stats["mean"] + 0.1 * m, "var": 0.9 * stats["var"] + 0.1 * v * n / (n - 1)}
    return (x - m) / np.sqrt(v + 1e-5), new


def np_spade(x, seg, p, stats, norm, train):
    """NVlabs normalization.py SPADE.forward."""
    xn, new = np_param_free_norm(x, stats, norm, train)
    a = np.maximum(np_conv(np_nearest(seg, *x.shape[1:3]), p["shared"]["kernel"], p["shared"]["bias"]), 0)
    gamma = np_conv(a, p["gamma"]["kernel"], p["gamma"]["bias"])
    beta = np_conv(a, p["beta"]["kernel"], p["beta"]["bias"])
    return xn * (1 + gamma) + beta, new


def np_normalize(v):
    return v / max(np.linalg.norm(v), 1e-12)


def np_spectral(w, sp, update):
    """torch.nn.utils.spectral_norm (one power iteration in training) on HWIO w; -> (w / sigma, new u, v)."""
    mat = w.transpose(3, 2, 0, 1).reshape(w.shape[3], -1)            # torch's (O, I*kh*kw)
    u, v = sp["u"], sp["v"]
    if update:
        v = np_normalize(mat.T @ u)
        u = np_normalize(mat @ v)
    return w / (u @ mat @ v), {"u": u, "v": v}


def np_block(x, seg, p, bs, sp, norm, train):
    """NVlabs architecture.py SPADEResnetBlock.forward with spectral norm on conv_0, conv_1, conv_s."""
    new_bs, new_sp = {}, {}

    def spade(name, h):
        out, new_bs[name] = np_spade(h, seg, p[name], bs.get(name), norm, train)
        return out

    def conv(name, h):
        w, new_sp[name] = np_spectral(p[name]["kernel"], sp[name], train)
        return np_conv(h, w, p[name].get("bias"))

    xs = conv("conv_s", spade("norm_s", x)) if "conv_s" in p else x
    dx = conv("conv0", np_lrelu(spade("norm0", x)))
    dx = conv("conv1", np_lrelu(spade("norm1", dx)))
    return xs + dx, new_bs, new_sp


def randomize(tree, rs, kind):
    """Random values of a reasonable scale in every leaf of a variable tree of arrays or shapes (nested dicts)."""
    def leaf(path, x):
        name = path[-1]
        if kind == "params" and name == "kernel":
            return rs.randn(*x.shape) / np.sqrt(np.prod(x.shape[:-1]))
        if kind == "params":
            return 0.3 * rs.randn(*x.shape)
        if name == "mean":
            return 0.3 * rs.randn(*x.shape)
        if name == "var":
            return 0.5 + rs.rand(*x.shape)
        return np_normalize(rs.randn(*x.shape))                       # spectral u, v
    flat = traverse_util.flatten_dict(dict(tree))
    return traverse_util.unflatten_dict({k: leaf(k, v) for k, v in flat.items()})


def random_vars(shape_tree, seed):
    """Random variables shaped like jax.eval_shape of an init (no init program to compile)."""
    rs = np.random.RandomState(seed)
    return {k: randomize(v, rs, k) for k, v in shape_tree.items()}


def f32(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def assert_close(a, b, tol=1e-5):
    """max |a - b| <= tol * max(1, max |b|) (float32 against the float64 reference)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.max(np.abs(a - b))
    assert err <= tol * max(1.0, np.max(np.abs(b))), err


def assert_tree_close(a, b, tol=1e-5):
    fa = traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(a)))
    fb = traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(b)))
    assert set(fa) == set(fb), set(fa) ^ set(fb)
    for k in fa:
        assert_close(fa[k], fb[k], tol)


# ----------------------------------------------------------------------------------------------------------------
# parameter counts


def conv_p(cin, cout, k, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def spade_p(nc, label, hidden, k=3):                                 # normalization.py: mlp_shared, gamma, beta
    return conv_p(label, hidden, k) + 2 * conv_p(hidden, nc, k)


def block_p(fin, fout, label, hidden, noise=False):                  # architecture.py SPADEResnetBlock
    fmid = min(fin, fout)
    p = conv_p(fin, fmid, 3) + conv_p(fmid, fout, 3) + spade_p(fin, label, hidden) + spade_p(fmid, label, hidden)
    if fin != fout:
        p += conv_p(fin, fout, 1, bias=False) + spade_p(fin, label, hidden)
    return p + (1 if noise else 0)                                   # AnimeFace NoiseInjection.w: zeros(1)


def g_count(cfg):
    """generator.py SPADEGenerator.__init__ (AnimeFace generator.py is the same with use_vae and 'more')."""
    nf, s, lab = cfg.ngf, cfg.start, cfg.cond_channels
    p = (cfg.z_dim + 1) * 16 * nf * s * s if cfg.input == "z" else conv_p(lab, 16 * nf, 3)
    chans = [16, 16, 16, 16, 8, 4, 2, 1] + ([0.5] if cfg.layout == "most" else [])
    for a, b in zip(chans[:-1], chans[1:]):
        p += block_p(int(a * nf), int(b * nf), lab, cfg.hidden, cfg.noise)
    return p + conv_p(int(chans[-1] * nf), cfg.img_channels, 3)


def d_count(cfg):
    """discriminator.py NLayerDiscriminator x num_D (AnimeFace Discriminator: the same with biases kept)."""
    nv = cfg.disc == "multiscale"
    nf, p = cfg.ndf, conv_p(cfg.cond_channels + cfg.img_channels, cfg.ndf, 4)
    for _ in range(1, cfg.d_layers):
        nf_prev, nf = nf, min(nf * 2, 512)
        p += conv_p(nf_prev, nf, 4, bias=not nv)
    p += conv_p(nf, 1, 4)
    return p * (cfg.num_d if nv else 1)


def e_count(cfg):
    """encoder.py ConvEncoder: stride-2 3x3 convs (no bias: instance norm) to 4x4, fc_mu, fc_var."""
    p, cin = 0, cfg.img_channels
    for i in range(int(np.log2(cfg.enc_size)) - 2):
        cout = cfg.ngf * min(2 ** i, 8)
        p, cin = p + conv_p(cin, cout, 3, bias=False), cout
    return p + 2 * (cin * 16 + 1) * cfg.z_dim


@functools.lru_cache(maxsize=None)
def shapes(cfg, which):
    fn = {"G": S.init_generator, "D": S.init_discriminator, "E": S.init_encoder}[which]
    return jax.eval_shape(lambda: fn(cfg, jax.random.key(0)))


def n_params(cfg, which):
    return S.param_count(shapes(cfg, which)["params"])


# (preset, overrides, G, D, E). The 256 px numbers are torch parameter counts of the references at the same
# settings (NVlabs SPADEGenerator / MultiscaleDiscriminator / ConvEncoder with label_nc 3, no instance map,
# ngf = ndf = 64, n_layers_D 4, num_D 2; AnimeFace Generator (sw = sh = 4, z_dim 256) and Discriminator
# (disc_in_ch 6, n_layer_D 5, ndf 64)). spade-nv's G and D are also the 92.1 M / 5.5 M that a 3-label NVlabs
# run logs in NVlabs/SPADE issue #163. 'more' adds an upsampling, no parameters: it equals 'normal' from the
# condition. The tiny counts are ours (NVlabs hard-codes SPADE's 128 hidden channels), checked by the formula,
# except the tiny multiscale D (ndf 8, 4 layers, 2 scales), which is also the torch count.
COUNTS = [
    ("spade-nv", {}, 92_059_587, 5_533_826, None),
    ("spade-nv", {"layout": "more"}, 92_059_587, 5_533_826, None),
    ("spade-nv", {"layout": "most"}, 92_468_195, 5_533_826, None),
    ("spade-nv-vae", {}, 108_873_667, 5_533_826, 10_463_424),
    ("spade-nv-vae", {"layout": "more"}, 96_241_603, 5_533_826, 10_463_424),
    ("spade-nv-vae", {"layout": "most"}, 93_492_195, 5_533_826, 10_463_424),
    ("spade-anime", {}, 96_241_603, 6_962_625, None),
    ("spade-anime", {"noise": True}, 96_241_610, 6_962_625, None),   # + one NoiseInjection.w per block (7)
    ("tiny", {}, 468_751, 11_577, None),
    ("tiny", {"vae": True, "disc": "multiscale", "d_layers": 4}, 468_751, 89_618, 9_772),
]


@pytest.mark.parametrize("name,kw,g,d,e", COUNTS,
                         ids=[f"{n}-{'-'.join(map(str, k.values()))}" for n, k, *_ in COUNTS])
def test_parameter_counts(name, kw, g, d, e):
    cfg = S.preset(name, **kw)
    assert (n_params(cfg, "G"), g_count(cfg)) == (g, g)
    assert (n_params(cfg, "D"), d_count(cfg)) == (d, d)
    if e is not None:
        assert (n_params(cfg, "E"), e_count(cfg)) == (e, e)


def test_issue_163_magnitudes():
    # NVlabs/SPADE issue #163: a 3-label run's logged counts, G 92.1 M and D 5.5 M (print_network's "%.1f million")
    cfg = S.preset("spade-nv")
    assert round(n_params(cfg, "G") / 1e6, 1) == 92.1 and round(n_params(cfg, "D") / 1e6, 1) == 5.5


def d_widths(cfg):
    p = shapes(cfg, "D")["params"]
    return [[p[d][b]["kernel"].shape[-1] for b in sorted(set(p[d]) - {"out"}, key=lambda b: -int(b[1:]))]
            for d in sorted(p)]


def test_discriminator_widths_cap_at_512_channels():
    # NVlabs discriminator.py and AnimeFace discriminator.py: nf = min(nf * 2, 512) (an absolute cap, not 8 ndf)
    assert d_widths(S.preset("spade-anime")) == [[64, 128, 256, 512, 512]]
    assert d_widths(S.preset("tiny", ndf=8, d_layers=6)) == [[8, 16, 32, 64, 128, 256]]
    assert d_widths(S.preset("spade-nv", ndf=128)) == [[128, 256, 512, 512]] * 2


# ----------------------------------------------------------------------------------------------------------------
# tree layout per layout


def small(layout, resolution, **kw):
    return S.SPADEConfig(resolution=resolution, layout=layout, ngf=4, z_dim=8, hidden=8, **kw)


LAYOUT_PLANS = {
    # NVlabs generator.py forward: head_0, up, G_middle_0, ['more'/'most': up], G_middle_1, (up, up_i) x 4,
    # ['most': up, up_4]; blocks keyed by output resolution.
    ("normal", 64): {"b2": ["head"], "b4": ["mid0", "mid1"], "b8": ["up0"], "b16": ["up1"], "b32": ["up2"],
                     "b64": ["up3"]},
    ("more", 64): {"b1": ["head"], "b2": ["mid0"], "b4": ["mid1"], "b8": ["up0"], "b16": ["up1"], "b32": ["up2"],
                   "b64": ["up3"]},
    ("most", 128): {"b1": ["head"], "b2": ["mid0"], "b4": ["mid1"], "b8": ["up0"], "b16": ["up1"],
                    "b32": ["up2"], "b64": ["up3"], "b128": ["up4"]},
}


@pytest.mark.parametrize("layout,res", list(LAYOUT_PLANS))
@pytest.mark.parametrize("inp", ["z", "cond"])
def test_generator_tree_per_layout(layout, res, inp):
    cfg = small(layout, res, input=inp)
    v = shapes(cfg, "G")
    plan = LAYOUT_PLANS[layout, res]
    params = v["params"]
    # every G parameter sits in a block: the input layer in the first, to_rgb in the last (blends move them with it)
    first, last = f"b{cfg.start}", f"b{res}"
    extra = {first: ["in_fc" if inp == "z" else "in_conv"], last: ["to_rgb"]}
    assert set(params) == set(plan)
    assert {b: sorted(params[b]) for b in plan} == {b: sorted(r + extra.get(b, [])) for b, r in plan.items()}
    s, top = cfg.start, 16 * cfg.ngf
    if inp == "z":
        assert params[first]["in_fc"]["kernel"].shape == (cfg.z_dim, top * s * s)
    else:
        assert params[first]["in_conv"]["kernel"].shape == (3, 3, 3, top)
    widths = {"head": (64, 64), "mid0": (64, 64), "mid1": (64, 64), "up0": (64, 32), "up1": (32, 16),
              "up2": (16, 8), "up3": (8, 4), "up4": (4, 2)}                  # 16, 16, 16, 8, 4, 2, 1, 0.5 ngf
    for b, roles in plan.items():
        for role in roles:
            fin, fout = widths[role]
            fmid = min(fin, fout)
            blk = params[b][role]
            shortcut = fin != fout
            convs = {"conv0", "conv1"} | ({"conv_s"} if shortcut else set())
            norms = {"norm0", "norm1"} | ({"norm_s"} if shortcut else set())
            assert set(blk) == convs | norms
            assert blk["conv0"]["kernel"].shape == (3, 3, fin, fmid) and "bias" in blk["conv0"]
            assert blk["conv1"]["kernel"].shape == (3, 3, fmid, fout) and "bias" in blk["conv1"]
            if shortcut:
                assert set(blk["conv_s"]) == {"kernel"} and blk["conv_s"]["kernel"].shape == (1, 1, fin, fout)
            assert blk["norm1"]["gamma"]["kernel"].shape == (3, 3, cfg.hidden, fmid)
            assert blk["norm0"]["shared"]["kernel"].shape == (3, 3, 3, cfg.hidden)
            # batch_stats and spectral are keyed like the params blocks
            bs, sp = v["batch_stats"][b][role], v["spectral"][b][role]
            assert set(bs) == norms and set(sp) == convs
            assert bs["norm0"]["mean"].shape == bs["norm0"]["var"].shape == (fin,)
            assert bs["norm1"]["var"].shape == (fmid,)
            assert sp["conv0"]["u"].shape == (fmid,) and sp["conv0"]["v"].shape == (fin * 9,)
    assert params[last]["to_rgb"]["kernel"].shape == (3, 3, widths[plan[last][0]][1], 3)
    assert set(v["batch_stats"]) == set(v["spectral"]) == set(plan)
    assert cfg.resolutions == tuple(int(b[1:]) for b in plan)


def test_instance_norm_and_no_spectral_have_no_extra_collections():
    v = shapes(small("normal", 32, norm="instance", spectral=False), "G")
    assert set(v) == {"params"}


# ----------------------------------------------------------------------------------------------------------------
# SPADE layer and residual block against numpy


@functools.lru_cache(maxsize=None)
def apply_fn(module, train):
    muts = ["batch_stats", "spectral"] if train else False
    return jax.jit(lambda v, *a: module.apply(v, *a, train=train, mutable=muts))


def layer_setup(module, x_shape, seg_shape, seed):
    rs = np.random.RandomState(seed)
    x = rs.randn(*x_shape) * 1.5 + 0.3
    seg = rs.rand(*seg_shape) * 2 - 1
    init = jax.eval_shape(lambda: module.init({"params": jax.random.key(0)}, jnp.zeros(x_shape),
                                              jnp.zeros(seg_shape)))
    return x, seg, {k: randomize(v, rs, k) for k, v in init.items()}


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_spade_layer_matches_numpy(norm):
    # x 6x6, condition 9x9: the nearest resize has the non-integer ratio 1.5 (rows 0, 1, 3, 4, 6, 7)
    m = S.SPADE(norm, hidden=8)
    x, seg, v = layer_setup(m, (3, 6, 6, 5), (3, 9, 9, 3), seed=1)
    for train in (True, False):
        out = apply_fn(m, train)(f32(v), f32(x), f32(seg))
        y, new = out if train else (out, None)
        ref, ref_stats = np_spade(x, seg, v["params"], v.get("batch_stats"), norm, train)
        assert_close(y, ref)
        if train and norm == "batch":
            assert_tree_close(new["batch_stats"], ref_stats)
        if norm == "instance":
            assert "batch_stats" not in v


@pytest.mark.parametrize("fin,fout,norm", [(6, 4, "batch"), (4, 4, "instance")])
def test_residual_block_matches_numpy(fin, fout, norm):
    cfg = S.SPADEConfig(hidden=8, norm=norm, spectral=True)
    m = S.SPADEResBlock(fout, cfg)
    x, seg, v = layer_setup(m, (2, 8, 8, fin), (2, 12, 12, 3), seed=2)
    assert ("conv_s" in v["params"]) == (fin != fout)                          # learned shortcut iff fin != fout
    for train in (True, False):
        out = apply_fn(m, train)(f32(v), f32(x), f32(seg))
        y, new = out if train else (out, None)
        ref, ref_bs, ref_sp = np_block(x, seg, v["params"], v.get("batch_stats", {}), v["spectral"], norm, train)
        assert_close(y, ref)
        if train:
            assert_tree_close(new["spectral"], ref_sp)
            if norm == "batch":
                assert_tree_close(new["batch_stats"], ref_bs)
    # the two modes really differ on these inputs (batch vs stored statistics, iterated vs stored u, v)
    assert not np.allclose(np_block(x, seg, v["params"], v.get("batch_stats", {}), v["spectral"], norm, True)[0],
                           np_block(x, seg, v["params"], v.get("batch_stats", {}), v["spectral"], norm, False)[0])


# ----------------------------------------------------------------------------------------------------------------
# resizing, pooling, norms


def rows_picked(x_out):
    return [int(r) for r in np.asarray(x_out)[0, :, 0, 0]]


@pytest.mark.parametrize("n_in,n_out,rows", [
    (16, 4, [0, 4, 8, 12]),                    # jax.image.resize 'nearest' (half-pixel) picks 2, 6, 10, 14
    (7, 3, [0, 2, 4]),
    (3, 7, [0, 0, 0, 1, 1, 2, 2]),
    (40, 16, [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27, 30, 32, 35, 37]),
])
def test_resize_nearest_uses_torch_floor_rule(n_in, n_out, rows):
    # rows: torch.nn.functional.interpolate(mode='nearest') on an arange input (torch 2.13), = floor(d * in / out)
    x = jnp.broadcast_to(jnp.arange(n_in, dtype=jnp.float32)[None, :, None, None], (1, n_in, n_in, 2))
    y = S.resize_nearest(x, (n_out, n_out))
    assert y.shape == (1, n_out, n_out, 2)
    assert rows_picked(y) == rows == list(np_nearest_idx(n_in, n_out))
    cols = np.asarray(S.resize_nearest(x.transpose(0, 2, 1, 3), (n_out, n_out)))[0, 0, :, 0]
    assert [int(c) for c in cols] == rows
    if (n_in, n_out) == (16, 4):
        assert rows_picked(jax.image.resize(x, (1, 4, 4, 2), "nearest")) == [2, 6, 10, 14]


def test_upsample2x_is_nearest_x2():
    x = jnp.asarray(np.random.RandomState(0).randn(2, 5, 3, 4), jnp.float32)
    y = S.upsample2x(x)
    np.testing.assert_array_equal(y, jax.image.resize(x, (2, 10, 6, 4), "nearest"))
    np.testing.assert_array_equal(y, S.resize_nearest(x, (10, 6)))                # torch: floor(d / 2)
    np.testing.assert_array_equal(y[:, 1::2, 1::2], x)


def test_avg_pool_3s2_excludes_padding():
    # F.avg_pool2d(kernel 3, stride 2, padding 1, count_include_pad=False) by hand on a 5x5 arange
    x = np.arange(25, dtype=np.float64).reshape(5, 5)
    ref = np.array([[x[max(0, 2 * i - 1):2 * i + 2, max(0, 2 * j - 1):2 * j + 2].mean() for j in range(3)]
                    for i in range(3)])
    assert ref[0, 0] == 3.0 and ref[0, 1] == 4.5 and ref[1, 1] == 12.0 and ref[2, 2] == 21.0
    y = S.avg_pool_3s2(jnp.asarray(np.stack([x, -2 * x], -1)[None], jnp.float32))
    assert y.shape == (1, 3, 3, 2)
    np.testing.assert_allclose(y[0, :, :, 0], ref, rtol=1e-6)
    np.testing.assert_allclose(y[0, :, :, 1], -2 * ref, rtol=1e-6)


def test_instance_norm_eps_is_torch_default():
    # InstanceNorm2d eps 1e-5, biased variance; a variance of ~1e-5 makes eps visible
    rs = np.random.RandomState(3)
    x = rs.randn(2, 4, 4, 3) * np.array([3e-3, 1.0, 10.0]) + 5.0
    m, v = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    y = np.asarray(jax.jit(S.instance_norm)(jnp.asarray(x, jnp.float32)))
    assert S.EPS == 1e-5
    assert_close(y, (x - m) / np.sqrt(v + 1e-5), 1e-4)
    assert np.abs(y[..., 0] - ((x - m) / np.sqrt(v + 1e-6))[..., 0]).max() > 0.1


def bn_layer(axis_name=None):
    return S.SPADE("batch", hidden=4, axis_name=axis_name)


def test_batch_norm_running_stats_by_hand():
    # channel 0: 1..8 -> mean 4.5, unbiased var 6 (biased 5.25); channel 1: 2 * (1..8) -> mean 9, unbiased 24.
    # torch BatchNorm2d momentum 0.1 from (0, 1): mean 0.45 / 0.9, var 0.9 + 0.1 * 6 = 1.5 / 0.9 + 2.4 = 3.3
    x = np.arange(1, 9, dtype=np.float32).reshape(2, 2, 2, 1)
    x = np.concatenate([x, 2 * x], -1)
    m = bn_layer()
    v = {"params": random_vars(jax.eval_shape(lambda: m.init({"params": jax.random.key(0)}, jnp.zeros((2, 2, 2, 2)),
                                                             jnp.zeros((2, 4, 4, 3)))), 0)["params"],
         "batch_stats": {"mean": jnp.zeros(2), "var": jnp.ones(2)}}                 # torch's initial buffers
    _, new = apply_fn(m, True)(v, jnp.asarray(x), jnp.zeros((2, 4, 4, 3)))
    np.testing.assert_allclose(new["batch_stats"]["mean"], [0.45, 0.9], rtol=1e-6)
    np.testing.assert_allclose(new["batch_stats"]["var"], [1.5, 3.3], rtol=1e-6)
    assert S.BN_MOMENTUM == 0.1


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_synchronised_batch_norm_equals_whole_batch(mode):
    # SyncBatchNorm: under 2 devices (tests/conftest.py: xla_force_host_platform_device_count) the statistics
    # are those of the whole batch, and the running variance's n counts both shards.
    if len(jax.devices()) < 2:
        pytest.skip("needs 2 devices")
    rs = np.random.RandomState(4)
    x = jnp.asarray(rs.randn(4, 4, 4, 3) + np.arange(4)[:, None, None, None], jnp.float32)  # shards differ
    seg = jnp.asarray(rs.rand(4, 8, 8, 3), jnp.float32)
    single = bn_layer()
    v = f32(random_vars(jax.eval_shape(lambda: single.init({"params": jax.random.key(0)}, x, seg)), 4))
    y1, new1 = apply_fn(single, True)(v, x, seg)
    synced = bn_layer("d")

    def local(v, x, seg):
        return synced.apply(v, x, seg, train=True, mutable=["batch_stats"])

    devs = jax.devices()[:2]
    if mode == "pmap":
        y2, new2 = jax.pmap(local, "d", in_axes=(None, 0, 0), out_axes=(0, None), devices=devs)(
            v, x.reshape(2, 2, *x.shape[1:]), seg.reshape(2, 2, *seg.shape[1:]))
        y2 = y2.reshape(x.shape)
    else:
        mesh = Mesh(np.asarray(devs), ("d",))
        y2, new2 = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("d"), P("d")),
                                         out_specs=(P("d"), P()), check_vma=False))(v, x, seg)
    assert_close(y2, y1)
    assert_tree_close(new2["batch_stats"], new1["batch_stats"], 1e-6)
    # per-shard statistics would differ (the shards have different means)
    _, half = apply_fn(single, True)(v, x[:2], seg[:2])
    assert np.abs(np.asarray(half["batch_stats"]["mean"]) - np.asarray(new1["batch_stats"]["mean"])).max() > 0.05


# ----------------------------------------------------------------------------------------------------------------
# spectral norm


def spectral_conv():
    return S.Conv(4, 3, spectral=True)


def known_kernel(rs, svals=(3.0, 1.5, 1.0, 0.5)):
    """An HWIO 3x3x3x4 kernel whose torch (O, I*9) matrix has the singular values svals."""
    u, _ = np.linalg.qr(rs.randn(4, 4))
    vt, _ = np.linalg.qr(rs.randn(27, 4))
    mat = u @ np.diag(svals) @ vt.T                                              # [4, 27]
    return mat.reshape(4, 3, 3, 3).transpose(2, 3, 1, 0)                         # (O,I,kh,kw) -> HWIO


def test_spectral_norm_power_iteration_and_sigma():
    rs = np.random.RandomState(5)
    m = spectral_conv()
    x = jnp.asarray(rs.randn(2, 5, 5, 3), jnp.float32)
    v = random_vars(jax.eval_shape(lambda: m.init({"params": jax.random.key(1)}, x)), 1)
    w = known_kernel(rs)
    v = f32({"params": {"kernel": w, "bias": np.zeros(4)}, "spectral": v["spectral"]})

    # one update: torch's v = normalize(W^T u), u = normalize(W v); output conv(x, W / (u W v)) + b
    y, new = jax.jit(lambda v, x: m.apply(v, x, update_stats=True, mutable=["spectral"]))(v, x)
    sp0 = jax.tree.map(np.asarray, v["spectral"])
    w_sn, sp1 = np_spectral(w, sp0, True)
    assert_tree_close(new["spectral"], sp1, 1e-5)
    assert_close(y, np_conv(np.asarray(x), w_sn), 1e-5)

    # 30 updates with a fixed kernel: sigma -> the top singular value (gap 1.5 / 3: error ~ 0.25^30)
    @jax.jit
    def iterate(v):
        def body(_, sp):
            return m.apply({"params": v["params"], "spectral": sp}, x, update_stats=True, mutable=["spectral"])[1][
                "spectral"]
        return jax.lax.fori_loop(0, 30, body, v["spectral"])
    sp = jax.tree.map(np.asarray, iterate(v))
    mat = w.transpose(3, 2, 0, 1).reshape(4, -1)
    sigma = sp["u"] @ mat @ sp["v"]
    assert sigma == pytest.approx(np.linalg.svd(mat, compute_uv=False)[0], rel=1e-4)
    assert sigma == pytest.approx(3.0, rel=1e-4)
    # eval mode uses the stored u, v without iterating
    y_eval = m.apply({"params": v["params"], "spectral": sp}, x)
    assert_close(y_eval, np_conv(np.asarray(x), w / sigma), 1e-5)


def test_spectral_norm_gradients_flow_to_kernel_not_to_u_v():
    rs = np.random.RandomState(6)
    m = spectral_conv()
    x = jnp.asarray(rs.randn(2, 5, 5, 3), jnp.float32)
    v = random_vars(jax.eval_shape(lambda: m.init({"params": jax.random.key(2)}, x)), 2)
    v = f32({"params": {"kernel": known_kernel(rs), "bias": np.zeros(4)}, "spectral": v["spectral"]})
    r = jnp.asarray(rs.randn(2, 5, 5, 4), jnp.float32)

    def loss(params, spectral):
        y, _ = m.apply({"params": params, "spectral": spectral}, x, update_stats=True, mutable=["spectral"])
        return jnp.sum(y * r)
    g_params, g_spec = jax.jit(jax.grad(loss, argnums=(0, 1)))(v["params"], v["spectral"])
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_spec))
    assert float(jnp.abs(g_params["kernel"]).max()) > 1e-3

    # torch's gradient: through W / sigma(W) with the iterated u, v held fixed (sigma's dependence on W counts)
    _, new = m.apply(v, x, update_stats=True, mutable=["spectral"])
    u, vv = new["spectral"]["u"], new["spectral"]["v"]

    def ref_loss(w, sigma_grad=True):
        mat = jnp.transpose(w, (3, 2, 0, 1)).reshape(4, -1)
        sigma = u @ mat @ vv
        sigma = sigma if sigma_grad else jax.lax.stop_gradient(sigma)
        y = jax.lax.conv_general_dilated(x, w / sigma, (1, 1), [(1, 1)] * 2,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(y * r)                                             # (the bias is zero)
    g_ref = jax.jit(jax.grad(ref_loss))(v["params"]["kernel"])
    g_const = jax.jit(jax.grad(functools.partial(ref_loss, sigma_grad=False)))(v["params"]["kernel"])
    assert_close(g_params["kernel"], g_ref, 1e-5)
    assert np.abs(np.asarray(g_const - g_ref)).max() > 1e-3


# ----------------------------------------------------------------------------------------------------------------
# whole networks: shapes and ranges


def test_generator_outputs_and_train_state():
    cfg = S.preset("tiny", ngf=2, hidden=8)                                    # 32 px, 'normal', from z
    v = f32(random_vars(shapes(cfg, "G"), 7))
    rs = np.random.RandomState(7)
    cond = jnp.asarray(rs.rand(2, 32, 32, 3) * 2 - 1, jnp.float32)
    z = jnp.asarray(rs.randn(2, cfg.z_dim), jnp.float32)
    g = S.Generator(cfg)
    # a large to_rgb makes tanh saturate: outputs stay in [-1, 1]
    v["params"]["b32"]["to_rgb"]["kernel"] = v["params"]["b32"]["to_rgb"]["kernel"] * 1e4

    @jax.jit                                                  # one program for both modes (compile time)
    def train_then_eval(v, c, z):
        y, new = g.apply(v, c, z, train=True, mutable=["batch_stats", "spectral"])
        return y, new, g.apply({**v, **new}, c, z, train=False)

    y, new, y_eval = train_then_eval(v, cond, z)
    assert y.shape == (2, 32, 32, 3) and float(jnp.abs(y).max()) <= 1.0 and float(jnp.abs(y).max()) > 0.99
    assert jax.tree.structure(new["batch_stats"]) == jax.tree.structure(v["batch_stats"])
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(
        {k: v[k] for k in new}))]
    assert all(changed)                                       # every running stat and every u, v moved
    assert y_eval.shape == (2, 32, 32, 3) and bool(jnp.all(jnp.abs(y_eval) <= 1.0))
    assert not np.allclose(y_eval, y, atol=1e-3)             # running statistics, not the batch's
    with pytest.raises(ValueError, match="starts from z"):
        g.apply(v, cond)


@pytest.mark.parametrize("disc,sizes", [
    # torch Conv2d output size floor((n + 2 pad - 4) / stride) + 1, k 4; patch pad 1, multiscale pad 2
    ("patch", [[16, 8, 7, 6]]),
    ("multiscale", [[17, 9, 10, 11], [9, 5, 6, 7]]),                       # second scale: 32 avg-pooled to 16
])
def test_discriminator_output_shapes(disc, sizes):
    cfg = S.preset("tiny", disc=disc)                                          # ndf 8, 3 hidden layers
    v = f32(random_vars(shapes(cfg, "D"), 8))
    rs = np.random.RandomState(8)
    img, cond = (jnp.asarray(rs.rand(2, 32, 32, 3) * 2 - 1, jnp.float32) for _ in range(2))
    outs = jax.jit(lambda v, a, b: S.Discriminator(cfg).apply(v, a, b, train=True, mutable=["spectral"])[0])(
        v, img, cond)
    assert [[o.shape[1] for o in scale] for scale in outs] == sizes
    assert [[o.shape[-1] for o in scale] for scale in outs] == [[8, 16, 32, 1]] * len(sizes)
    assert all(o.shape[0] == 2 and o.shape[1] == o.shape[2] for scale in outs for o in scale)
    if disc == "multiscale":
        assert set(v["params"]) == {"d0", "d1"} and set(v["params"]["d1"]) == {"b16", "b8", "b4", "out"}
        assert "bias" not in v["params"]["d0"]["b16"] and "bias" in v["params"]["d0"]["b32"]
    else:
        assert all("bias" in layer for layer in v["params"]["d0"].values())   # AnimeFace keeps the biases
        assert set(v["spectral"]["d0"]) == {"b16", "b8"}                      # SN after the first layer, not out


def test_encoder_outputs():
    cfg = S.preset("tiny", vae=True)                                           # enc_size 32: 32, 16, 8 -> 4x4
    v = f32(random_vars(shapes(cfg, "E"), 9))
    assert set(v["params"]) == {"b32", "b16", "b8", "fc_mu", "fc_var"}
    assert v["params"]["fc_mu"]["kernel"].shape == (4 * cfg.ngf * 16, cfg.z_dim)
    img = jnp.asarray(np.random.RandomState(9).rand(2, 48, 48, 3) * 2 - 1, jnp.float32)  # resized to 32
    mu, logvar = S.encode_fn(cfg)(v, img)
    assert mu.shape == logvar.shape == (2, cfg.z_dim)
    assert bool(jnp.all(jnp.isfinite(mu))) and not np.allclose(mu[0], mu[1])


def test_init_is_xavier_normal_gain_002_with_zero_biases():
    # NVlabs base_network.py init_weights('xavier', 0.02): xavier_normal_(gain 0.02), biases 0; torch's
    # spectral_norm starts u, v as normalised N(0, 1) draws
    v = S.init_discriminator(S.preset("tiny"), jax.random.key(0))
    k = np.asarray(v["params"]["d0"]["b8"]["kernel"])                          # 4x4, 16 -> 32: 8192 draws
    fan_in, fan_out = 16 * 16, 32 * 16
    assert np.std(k) == pytest.approx(0.02 * np.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    assert abs(np.mean(k)) < 0.1 * np.std(k)
    assert all(float(jnp.abs(layer["bias"]).max()) == 0.0 for layer in v["params"]["d0"].values())
    for sp in v["spectral"]["d0"].values():
        assert float(jnp.linalg.norm(sp["u"])) == pytest.approx(1.0, rel=1e-5)
        assert float(jnp.linalg.norm(sp["v"])) == pytest.approx(1.0, rel=1e-5)
