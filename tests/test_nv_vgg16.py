"""nets/nv_vgg16.py against torchvision's VGG-16 constructor and NV's vgg16.pt layout, nets/nv_vgg16_weights.py's
files and errors, and (slow, with torch) our features against a torch VGG-16 saved as TorchScript under vgg16.pt's
key names, with torch-fidelity's preprocessing written in torch."""
import importlib.util
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import nv_vgg16 as V, nv_vgg16_weights as W

SMALL = V.NVVGG16(channels=((4, 4), (8, 8), (8, 8, 8), (16, 16, 16), (16, 16, 16)), fc=32)


def _reference_layers(cfg=(64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                           512, 512, 512, "M"), fc=4096):
    """(kind, in, out) of torchvision.models.vgg16's `features` (cfg 'D') and classifier up to fc2."""
    out, c = [], 3
    for v in cfg:
        if v != "M":
            out.append(("conv", c, v))
            c = v
    return out + [("fc", c * 7 * 7, fc), ("fc", fc, fc)]


def test_param_count_and_shapes_match_torchvision_vgg16():
    shapes = V.variable_shapes()
    ref = _reference_layers()
    want = sum(i * o * (9 if k == "conv" else 1) + o for k, i, o in ref)
    # torchvision's vgg16 has 138,357,544 parameters; fc3 (4096 x 1000 + 1000) is not used for the features
    assert V.param_count(shapes) == want == 138_357_544 - 4_097_000
    p = shapes["params"]
    names = [f"conv{k}" for k in range(1, 14)] + ["fc1", "fc2"]
    assert sorted(p) == sorted(names)
    for (kind, i, o), name in zip(ref, names):
        assert p[name]["kernel"].shape == ((3, 3, i, o) if kind == "conv" else (i, o)) and p[name]["bias"].shape == (o,)


def test_tf1_resize_weights():
    np.testing.assert_allclose(V.tf1_resize_matrix(4, 2), [[1, 0, 0, 0], [0, 0, 1, 0]])   # picks 0 and 2
    np.testing.assert_allclose(V.tf1_resize_matrix(2, 4), [[1, 0], [.5, .5], [0, 1], [0, 1]])   # no half pixel
    m = V.tf1_resize_matrix(1024, 224)
    np.testing.assert_allclose(m.sum(1), 1, atol=1e-6)
    assert (np.count_nonzero(m, axis=1) <= 2).all()                       # no antialiasing
    x = jnp.asarray(np.random.RandomState(0).rand(2, 5, 7, 3), jnp.float32)
    out = V.resize_tf1(x, 9)
    src_y, src_x = np.arange(9) * 5 / 9, np.arange(9) * 7 / 9                 # sample (3, 4) by hand
    y0, x0 = int(src_y[3]), int(src_x[4])
    fy, fx = src_y[3] - y0, src_x[4] - x0
    xn = np.asarray(x)
    top = xn[:, y0, x0] * (1 - fx) + xn[:, y0, x0 + 1] * fx
    bot = xn[:, y0 + 1, x0] * (1 - fx) + xn[:, y0 + 1, x0 + 1] * fx
    np.testing.assert_allclose(out[:, 3, 4], top * (1 - fy) + bot * fy, rtol=1e-5)
    assert V.resize_tf1(jnp.zeros((1, 224, 224, 3))).shape == (1, 224, 224, 3)


def test_state_dict_round_trip_uses_the_real_keys():
    v = V.init_variables(0, SMALL)
    sd = W.to_state_dict(v)
    assert sorted(sd) == sorted([f"layers.conv{k}.{w}" for k in range(1, 14) for w in ("weight", "bias")]
                                + [f"layers.fc{k}.{w}" for k in (1, 2) for w in ("weight", "bias")])
    assert sd["layers.conv1.weight"].shape == (4, 3, 3, 3) and sd["layers.fc1.weight"].shape == (32, 16 * 49)
    extra = {"layers.fc3.weight": np.zeros((1000, 32)), "lpips0": np.ones((4, 1, 1))}   # in vgg16.pt, unused
    back = W.from_state_dict({**sd, **extra}, "sd", SMALL)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(v)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(W.VGG16WeightsError, match="layers.conv7.bias"):
        W.from_state_dict({k: x for k, x in sd.items() if k != "layers.conv7.bias"}, "sd", SMALL)
    with pytest.raises(W.VGG16WeightsError, match=r"'layers.fc2.weight' has shape \(32, 33\).*\(32, 32\)"):
        W.from_state_dict({**sd, "layers.fc2.weight": np.zeros((32, 33))}, "sd", SMALL)


def test_features_are_relu_fc2_of_the_torch_order_flatten():
    """Our forward by hand in numpy on the small net: normalisation, convs, pools, C,H,W flatten, fc1, fc2."""
    v = V.init_variables(1, SMALL)
    x = np.random.RandomState(2).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    got = np.asarray(SMALL.apply(v, jnp.asarray(x)))
    h = ((x + 1) * 127.5 - 255 * V.MEAN) / (255 * V.STD)
    k = 0
    for block in SMALL.channels:
        for _ in block:
            k += 1
            p = v["params"][f"conv{k}"]
            h = np.maximum(np.asarray(jax.lax.conv_general_dilated(
                jnp.asarray(h), jnp.asarray(p["kernel"]), (1, 1), ((1, 1), (1, 1)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest")) + p["bias"], 0)
        n, hh, ww, c = h.shape
        h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
    h = h.transpose(0, 3, 1, 2).reshape(2, -1)
    for name in ("fc1", "fc2"):
        h = np.maximum(h @ v["params"][name]["kernel"] + v["params"][name]["bias"], 0)
    np.testing.assert_allclose(got, h, rtol=2e-4, atol=2e-4 * np.abs(h).max())


def test_weight_files_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(W.ENV, raising=False)
    with pytest.raises(W.VGG16WeightsError) as e:
        W.load_vgg16()
    msg = str(e.value)
    assert W.URL in msg and "--vgg16" in msg and W.ENV in msg and str(tmp_path / "cache" / "gafu" / "weights") in msg
    assert "--convert-vgg16" in msg
    v = V.init_variables(0, SMALL)
    path = W.save_npz(v, tmp_path / "vgg.npz", "0" * 64)
    with pytest.raises(W.VGG16WeightsError, match="--any-vgg16"):
        W.load_vgg16(path, net=SMALL)
    monkeypatch.setenv(W.ENV, str(path))
    got, net = W.load_vgg16(allow_other=True, net=SMALL)
    assert net == "other-" + W.weight_files.arrays_sha256(W.to_state_dict(v))[:16]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(v)):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "cache" / "gafu" / "weights").mkdir(parents=True)
    W.save_npz(v, tmp_path / "cache" / "gafu" / "weights" / "vgg16.npz", W.SHA256)   # as if converted from NV's
    monkeypatch.delenv(W.ENV)
    assert W.load_vgg16(net=SMALL)[1].startswith("nv-vgg16-")


def _torch_reference(torch, sd: dict):
    """A torch VGG-16 feature net with vgg16.pt's module names (`layers.conv1`..), whose forward is
    torch-fidelity's FeatureExtractorVGG16 preprocessing (TF1 bilinear resize by gathering, ImageNet
    normalisation of [0, 255]) followed by torchvision's features, avgpool-free flatten, fc1/fc2 + ReLU."""
    nn = torch.nn

    class Layers(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [c for b in V.CHANNELS for c in b]
            for k, (i, o) in enumerate(zip([3] + chans[:-1], chans), start=1):
                setattr(self, f"conv{k}", nn.Conv2d(i, o, 3, padding=1))
            self.fc1, self.fc2 = nn.Linear(25088, 4096), nn.Linear(4096, 4096)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Layers()

        def forward(self, img: torch.Tensor) -> torch.Tensor:          # [N,3,H,W] in [0, 255]
            h, w = img.shape[2], img.shape[3]
            gy = torch.arange(224, dtype=torch.float32) * (h / 224.0)
            gx = torch.arange(224, dtype=torch.float32) * (w / 224.0)
            y0, x0 = gy.long(), gx.long()
            y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
            dy, dx = (gy - y0.float()).view(1, 1, 224, 1), (gx - x0.float()).view(1, 1, 1, 224)
            top = img[:, :, y0][:, :, :, x0] * (1 - dx) + img[:, :, y0][:, :, :, x1] * dx
            bot = img[:, :, y1][:, :, :, x0] * (1 - dx) + img[:, :, y1][:, :, :, x1] * dx
            x = top * (1 - dy) + bot * dy
            mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
            std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
            x = (x - mean) / std
            k = 0
            for block in (2, 2, 3, 3, 3):
                for _ in range(block):
                    k += 1
                    x = torch.relu(getattr(self.layers, f"conv{k}")(x))
                x = torch.nn.functional.max_pool2d(x, 2)
            x = torch.relu(self.layers.fc1(torch.flatten(x, 1)))
            return torch.relu(self.layers.fc2(x))

    net = Net().eval()
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in sd.items()})
    return net


@pytest.mark.slow
def test_features_equal_a_torch_vgg16_saved_as_torchscript(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch (see README: the torch parity venv)")
    import torch

    v = V.init_variables(3)
    ref = _torch_reference(torch, W.to_state_dict(v))
    path = tmp_path / "vgg16.pt"
    with warnings.catch_warnings():             # tracer and deprecation warnings: the file only carries weights
        warnings.simplefilter("ignore")
        torch.jit.trace(ref, torch.zeros(1, 3, 224, 224)).save(str(path))   # a TorchScript archive, as NV's
    got_vars, net = W.load_vgg16(path, allow_other=True)                 # through torch.jit.load(...).state_dict()
    for a, b in zip(jax.tree.leaves(got_vars), jax.tree.leaves(v)):
        np.testing.assert_array_equal(a, b)
    assert net.startswith("other-")
    rng = np.random.RandomState(4)
    for h, w in ((32, 32), (224, 224), (300, 260)):
        img = rng.randint(0, 256, (2, h, w, 3)).astype(np.float32)
        with torch.no_grad():
            want = ref(torch.from_numpy(img.transpose(0, 3, 1, 2).copy())).numpy()
        ours = np.asarray(V.NVVGG16().apply(got_vars, jnp.asarray(img / 127.5 - 1)))
        err = np.abs(ours - want).max()
        print(f"{h}x{w}: max |diff| {err:.3g}, scale {np.abs(want).max():.3g}")
        np.testing.assert_allclose(ours, want, atol=1e-4 * max(1.0, np.abs(want).max()), rtol=0)
