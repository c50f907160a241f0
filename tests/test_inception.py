"""nets/inception.py against the pytorch-fid architecture, and nets/inception_weights.py's files and errors."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import inception, inception_weights as iw


def _reference_convs():
    """(in, out, kh, kw) of every BasicConv2d, written from torchvision's Inception3 constructors with
    pytorch-fid's FIDInception* blocks (which keep the parent constructors)."""
    convs = [(3, 32, 3, 3), (32, 32, 3, 3), (32, 64, 3, 3), (64, 80, 1, 1), (80, 192, 3, 3)]

    def a(i, pool):
        return [(i, 64, 1, 1), (i, 48, 1, 1), (48, 64, 5, 5), (i, 64, 1, 1), (64, 96, 3, 3), (96, 96, 3, 3),
                (i, pool, 1, 1)]

    def c(i, c7):
        return [(i, 192, 1, 1), (i, c7, 1, 1), (c7, c7, 1, 7), (c7, 192, 7, 1), (i, c7, 1, 1), (c7, c7, 7, 1),
                (c7, c7, 1, 7), (c7, c7, 7, 1), (c7, 192, 1, 7), (i, 192, 1, 1)]

    def e(i):
        return [(i, 320, 1, 1), (i, 384, 1, 1), (384, 384, 1, 3), (384, 384, 3, 1), (i, 448, 1, 1),
                (448, 384, 3, 3), (384, 384, 1, 3), (384, 384, 3, 1), (i, 192, 1, 1)]
    convs += a(192, 32) + a(256, 64) + a(288, 64)
    convs += [(288, 384, 3, 3), (288, 64, 1, 1), (64, 96, 3, 3), (96, 96, 3, 3)]                    # Mixed_6a
    convs += c(768, 128) + c(768, 160) + c(768, 160) + c(768, 192)
    convs += [(768, 192, 1, 1), (192, 320, 3, 3), (768, 192, 1, 1), (192, 192, 1, 7), (192, 192, 7, 1),
              (192, 192, 3, 3)]                                                                     # Mixed_7a
    return convs + e(1280) + e(2048)


@pytest.fixture(scope="module")
def variables():
    return inception.init_variables(0)


def test_param_count_and_shapes_match_the_reference(variables):
    ref = _reference_convs()
    want = sum(i * o * h * w + 2 * o for i, o, h, w in ref)         # conv weight + bn weight and bias
    assert inception.param_count(variables) == want == 21_785_568   # torchvision's 23,834,568 less its fc
    kernels = [k for p, k in jax.tree_util.tree_flatten_with_path(variables["params"])[0] if p[-1].key == "kernel"]
    assert len(kernels) == len(ref) == 94
    assert sorted(k.shape for k in kernels) == sorted((h, w, i, o) for i, o, h, w in ref)
    p = variables["params"]
    assert p["Conv2d_1a_3x3"]["conv"]["kernel"].shape == (3, 3, 3, 32)
    assert p["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)
    assert p["Mixed_7c"]["branch3x3dbl_3b"]["conv"]["kernel"].shape == (3, 1, 384, 384)
    assert variables["batch_stats"]["Mixed_5b"]["branch_pool"]["bn"]["var"].shape == (32,)


def test_pooling_quirks():
    x = jnp.ones((1, 4, 4, 1))
    np.testing.assert_allclose(inception.avg_pool_exclude_pad(x), x)     # zeros of the padding not counted
    y = jnp.arange(16.0).reshape(1, 4, 4, 1) - 20.0                     # all negative: -inf padding for max
    np.testing.assert_allclose(inception.max_pool(y, 1, pad=1)[0, 0, 0, 0], -15.0)
    assert inception.max_pool(jnp.zeros((1, 35, 35, 2)), 2).shape == (1, 17, 17, 2)


def test_resize_is_half_pixel_bilinear_with_clamped_borders():
    x = jnp.array([0.0, 1.0]).reshape(1, 1, 2, 1) * jnp.ones((1, 2, 1, 1))
    out = inception.resize_bilinear(x, 4)[0, 0, :, 0]
    np.testing.assert_allclose(out, [0.0, 0.25, 0.75, 1.0])           # F.interpolate(align_corners=False)


def test_state_dict_round_trip_and_npz(variables, tmp_path):
    sd = iw.to_state_dict(variables)
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)         # torch OIHW
    assert "Mixed_7c.branch_pool.bn.running_var" in sd
    back = iw.from_state_dict({**sd, "fc.weight": np.zeros((1008, 2048))}, "sd")   # fc is not used
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)
    path = iw.save_npz(variables, tmp_path / "inc.npz", "random")
    got, net = iw.load_inception(path, allow_other=True)
    assert net == "other-" + iw.arrays_sha256(sd)[:16]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)


def test_weight_file_errors(variables, tmp_path, monkeypatch):
    assert iw.SHA256.startswith(iw.SHA256_PREFIX) and iw.SHA256_PREFIX in iw.FILE_NAME
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(iw.ENV, raising=False)
    with pytest.raises(iw.InceptionWeightsError) as e:
        iw.load_inception()
    msg = str(e.value)
    assert iw.URL in msg and "--inception" in msg and iw.ENV in msg and str(tmp_path / "cache") in msg
    with pytest.raises(iw.InceptionWeightsError, match="nope.pth"):
        iw.load_inception(tmp_path / "nope.pth")
    path = iw.save_npz(variables, tmp_path / "inc.npz", "0" * 64)
    with pytest.raises(iw.InceptionWeightsError, match="--any-inception"):
        iw.load_inception(path)                                        # not pytorch-fid's weights
    monkeypatch.setenv(iw.ENV, str(path))
    assert iw.load_inception(allow_other=True)[1].startswith("other-")
    with np.load(path) as z:
        fields = dict(z)
    fields["Mixed_5b.branch1x1.conv.weight"] = fields["Mixed_5b.branch1x1.conv.weight"] + 1
    np.savez(tmp_path / "bad.npz", **fields)
    with pytest.raises(iw.InceptionWeightsError, match="damaged"):
        iw.load_inception(tmp_path / "bad.npz", allow_other=True)
    fields = iw.to_state_dict(variables)
    fields["Mixed_6a.branch3x3.conv.weight"] = np.zeros((384, 288, 1, 1), np.float32)
    with pytest.raises(iw.InceptionWeightsError, match="Mixed_6a.branch3x3.conv.weight"):
        iw.from_state_dict(fields, "x")


@pytest.mark.slow
def test_features_equal_pytorch_fid_on_random_weights(variables):
    """pytorch-fid's InceptionV3 (2048-d block, resize + normalisation on) with our random weights loaded."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("pytorch_fid") is None:
        pytest.skip("needs torch and pytorch-fid (see README: the torch parity venv)")
    import torch
    from pytorch_fid import inception as ref

    net = ref.InceptionV3.__new__(ref.InceptionV3)
    torch.nn.Module.__init__(net)
    fid = ref._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    for name, block in (("Mixed_5b", ref.FIDInceptionA(192, 32)), ("Mixed_5c", ref.FIDInceptionA(256, 64)),
                        ("Mixed_5d", ref.FIDInceptionA(288, 64)), ("Mixed_6b", ref.FIDInceptionC(768, 128)),
                        ("Mixed_6c", ref.FIDInceptionC(768, 160)), ("Mixed_6d", ref.FIDInceptionC(768, 160)),
                        ("Mixed_6e", ref.FIDInceptionC(768, 192)), ("Mixed_7b", ref.FIDInceptionE_1(1280)),
                        ("Mixed_7c", ref.FIDInceptionE_2(2048))):
        setattr(fid, name, block)
    rng = np.random.RandomState(1)
    sd = {k: v.copy() for k, v in iw.to_state_dict(variables).items()}
    for k in sd:                                          # non-trivial statistics, so batch norm is exercised
        if k.endswith("running_mean") or k.endswith("bn.bias"):
            sd[k] = rng.uniform(-0.1, 0.1, sd[k].shape).astype(np.float32)
        elif k.endswith("running_var") or k.endswith("bn.weight"):
            sd[k] = rng.uniform(0.5, 1.5, sd[k].shape).astype(np.float32)
    missing = fid.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    assert set(missing.missing_keys) <= {"fc.weight", "fc.bias"} and not missing.unexpected_keys
    net.resize_input, net.normalize_input, net.output_blocks, net.last_needed_block = True, True, [3], 3
    net.blocks = torch.nn.ModuleList([
        torch.nn.Sequential(fid.Conv2d_1a_3x3, fid.Conv2d_2a_3x3, fid.Conv2d_2b_3x3, torch.nn.MaxPool2d(3, 2)),
        torch.nn.Sequential(fid.Conv2d_3b_1x1, fid.Conv2d_4a_3x3, torch.nn.MaxPool2d(3, 2)),
        torch.nn.Sequential(fid.Mixed_5b, fid.Mixed_5c, fid.Mixed_5d, fid.Mixed_6a, fid.Mixed_6b, fid.Mixed_6c,
                            fid.Mixed_6d, fid.Mixed_6e),
        torch.nn.Sequential(fid.Mixed_7a, fid.Mixed_7b, fid.Mixed_7c, torch.nn.AdaptiveAvgPool2d(1))])
    net.eval()
    ours_vars = iw.from_state_dict(sd, "sd")
    x = rng.uniform(0, 1, (3, 3, 64, 48)).astype(np.float32)           # NCHW in [0, 1], not square
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0][:, :, 0, 0].numpy()
    got = np.asarray(inception.FIDInception().apply(ours_vars, jnp.asarray(x.transpose(0, 2, 3, 1) * 2 - 1)))
    print("max |diff|", np.abs(got - want).max(), "scale", np.abs(want).max())
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
