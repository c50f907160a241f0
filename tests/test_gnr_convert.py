"""GANsNRoses checkpoint import (nets/gnr_convert.py) without torch: synthetic state dicts with the key names and
shapes of mchong6/GANsNRoses model.py (written here from its module structure, independently of the importer's
tables, and anchored by literal keys of a real state dict), every leaf checked at its path with its transpose,
coverage of gafu's tree, and errors that name the key."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from nets import gnr, gnr_convert
from nets.convert_io import ConvertError

# model.py Generator(64, num_down=2, latent_dim=8, n_mlp=2, n_res=1) / Discriminator(64) / LatDiscriminator(8) with
# its `channels` table set to min(512 // r, 32): 64: 8, 32: 16, 16..4: 32.
TINY = gnr.GNRConfig(resolution=64, num_down=2, n_mlp=2, n_res=1, channel_base=512, channel_max=32)
FIR = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 64


def ch(r: int) -> int:
    return min(512 // r, 32)


class _SD(dict):
    """A state dict under construction, with random float32 values."""

    def __init__(self, seed: int):
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def put(self, key: str, *shape: int) -> None:
        self[key] = self.rng.standard_normal(shape).astype(np.float32)

    def conv_layer(self, p: str, i: int, o: int, k: int, down: bool = False, act: bool = True, bias: bool = True):
        """model.py ConvLayer: Sequential [Blur (down), EqualConv2d (bias iff bias and not act), FusedLeakyReLU]."""
        n = 0
        if down:
            self[f"{p}.0.kernel"], n = FIR, 1
        self.put(f"{p}.{n}.weight", o, i, k, k)
        if bias and not act:
            self.put(f"{p}.{n}.bias", o)
        if bias and act:
            self.put(f"{p}.{n + 1}.bias", o)

    def res_block(self, p: str, i: int, o: int, down: bool = True):
        self.conv_layer(f"{p}.conv1", i, i, 3)
        self.conv_layer(f"{p}.conv2", i, o, 3, down=down)
        if down or i != o:
            self.conv_layer(f"{p}.skip", i, o, 1, down=down, act=False, bias=False)

    def linear(self, p: str, i: int, o: int):
        self.put(f"{p}.weight", o, i), self.put(f"{p}.bias", o)

    def styled(self, p: str, i: int, o: int, k: int = 3, up: bool = False, rgb: bool = False):
        self.put(f"{p}.conv.weight", 1, o, i, k, k), self.linear(f"{p}.conv.modulation", 512, i)
        if rgb:
            self.put(f"{p}.bias", 1, 3, 1, 1)                         # ToRGB's own bias
        else:
            self.put(f"{p}.activate.bias", o)                         # StyledConv's FusedLeakyReLU
        if up:
            self[f"{p}.{'upsample' if rgb else 'conv.blur'}.kernel"] = FIR * 4


def generator_sd(seed: int = 0) -> dict[str, np.ndarray]:
    sd = _SD(seed)
    sd.linear("mapping.0", 8, 512), sd.linear("mapping.1", 512, 512)
    sd.conv_layer("encoder.stem.0", 3, ch(64), 1)
    sd.res_block("encoder.stem.1", ch(64), ch(32)), sd.res_block("encoder.stem.2", ch(32), ch(16))
    sd.res_block("encoder.stem.3", ch(16), ch(16), down=False)
    sd.conv_layer("encoder.content.0", ch(16), ch(16), 1), sd.conv_layer("encoder.content.1", ch(16), ch(16), 1)
    sd.conv_layer("encoder.style.0", ch(16), ch(8), 3, down=True)
    sd.conv_layer("encoder.style.1", ch(8), ch(4), 3, down=True)          # style.2 is the Flatten
    sd.linear("encoder.style.3", ch(4) * 16, ch(4)), sd.linear("encoder.style.4", ch(4), 8)
    sd.styled("adain_bottleneck.0.conv1", ch(16), ch(16)), sd.styled("adain_bottleneck.0.conv2", ch(16), ch(16))
    sd.styled("conv1", ch(16), ch(16)), sd.styled("to_rgb1", ch(16), 3, k=1, rgb=True)
    for j, r in enumerate((32, 64)):
        sd.styled(f"convs.{2 * j}", ch(r // 2), ch(r), up=True), sd.styled(f"convs.{2 * j + 1}", ch(r), ch(r))
        sd.styled(f"to_rgbs.{j}", ch(r), 3, k=1, up=True, rgb=True)
    return dict(sd)


def discriminator_sd(seed: int = 1) -> dict[str, np.ndarray]:
    sd = _SD(seed)
    for branch, stop in (("l_branch", 32), ("g_branch", 8)):
        sd.conv_layer(f"{branch}.0", 3, ch(64), 1)
        r, n = 64, 1
        while r > stop:
            sd.res_block(f"{branch}.{n}", ch(r), ch(r // 2))
            r, n = r // 2, n + 1
    sd.conv_layer("l_branch.2", ch(32), 1, 1, act=False), sd.conv_layer("g_adv", ch(8), 1, 1, act=False)
    sd.conv_layer("g_std.0", ch(8), ch(4), 3, down=True)                 # g_std.1 is the Flatten
    sd.linear("g_std.2", ch(4) * 16, 128), sd.linear("g_final", 128, 1)
    return dict(sd)


def latent_sd(seed: int = 2) -> dict[str, np.ndarray]:
    sd = _SD(seed)
    for i in range(4):
        sd.linear(f"fc.{i}", 8 if i == 0 else 256, 256)
    sd.linear("fc.4.fc", 257, 256), sd.linear("fc.5", 256, 1)
    return dict(sd)


SD = {"generator": generator_sd, "discriminator": discriminator_sd, "latent": latent_sd}
INIT = {"generator": gnr.init_generator, "discriminator": gnr.init_discriminator,
        "latent": gnr.init_latent_discriminator}
# (keys, of which filter buffers) of the reference's real state dicts for TINY and for the release
REF_KEYS = {"generator": (82, 10), "discriminator": (43, 9), "latent": (12, 0)}

OIHW = (2, 3, 1, 0)
# Keys and shapes of the real reference state dicts for TINY, where they land in gafu and the transform.
ANCHORS = [
    ("generator", "encoder.stem.0.0.weight", (8, 3, 1, 1), "encoder/b64/fromrgb/weight", lambda a: a.transpose(OIHW)),
    ("generator", "encoder.stem.0.1.bias", (8,), "encoder/b64/fromrgb/bias", lambda a: a),
    ("generator", "encoder.stem.1.conv1.0.weight", (8, 8, 3, 3), "encoder/b64/conv0/weight",
     lambda a: a.transpose(OIHW)),
    ("generator", "encoder.stem.1.conv2.1.weight", (16, 8, 3, 3), "encoder/b64/conv1/weight",
     lambda a: a.transpose(OIHW)),
    ("generator", "encoder.stem.1.conv2.2.bias", (16,), "encoder/b64/conv1/bias", lambda a: a),
    ("generator", "encoder.stem.1.skip.1.weight", (16, 8, 1, 1), "encoder/b64/skip/weight",
     lambda a: a.transpose(OIHW)),
    ("generator", "encoder.stem.3.conv2.0.weight", (32, 32, 3, 3), "encoder/b16/res0/conv1/weight",
     lambda a: a.transpose(OIHW)),
    ("generator", "encoder.stem.3.conv2.1.bias", (32,), "encoder/b16/res0/conv1/bias", lambda a: a),
    ("generator", "encoder.content.1.0.weight", (32, 32, 1, 1), "encoder/b16/content1/weight",
     lambda a: a.transpose(OIHW)),
    ("generator", "encoder.style.1.1.weight", (32, 32, 3, 3), "encoder/b8/style/weight", lambda a: a.transpose(OIHW)),
    ("generator", "encoder.style.3.weight", (32, 512), "encoder/b4/fc/kernel", lambda a: a.T),
    ("generator", "encoder.style.4.bias", (8,), "encoder/b4/style_out/bias", lambda a: a),
    ("generator", "mapping.1.weight", (512, 512), "mapping/fc1/kernel", lambda a: a.T),
    ("generator", "adain_bottleneck.0.conv2.conv.weight", (1, 32, 32, 3, 3), "decoder/b16/res0/conv1/weight",
     lambda a: a[0].transpose(OIHW)),
    ("generator", "adain_bottleneck.0.conv1.activate.bias", (32,), "decoder/b16/res0/conv0/bias", lambda a: a),
    ("generator", "to_rgb1.bias", (1, 3, 1, 1), "decoder/b16/torgb/bias", lambda a: a.reshape(3)),
    ("generator", "convs.0.conv.modulation.weight", (32, 512), "decoder/b32/conv0/affine/kernel", lambda a: a.T),
    ("generator", "convs.2.conv.weight", (1, 8, 16, 3, 3), "decoder/b64/conv0/weight", lambda a: a[0].transpose(OIHW)),
    ("generator", "to_rgbs.1.conv.weight", (1, 3, 8, 1, 1), "decoder/b64/torgb/weight", lambda a: a[0].transpose(OIHW)),
    ("discriminator", "l_branch.2.0.weight", (1, 16, 1, 1), "local/b32/out/weight", lambda a: a.transpose(OIHW)),
    ("discriminator", "l_branch.2.0.bias", (1,), "local/b32/out/bias", lambda a: a),
    ("discriminator", "g_branch.3.skip.1.weight", (32, 32, 1, 1), "global/b16/skip/weight",
     lambda a: a.transpose(OIHW)),
    ("discriminator", "g_adv.0.bias", (1,), "global/b8/out/bias", lambda a: a),
    ("discriminator", "g_std.0.1.weight", (32, 32, 3, 3), "global/b8/std_conv/weight", lambda a: a.transpose(OIHW)),
    ("discriminator", "g_std.0.2.bias", (32,), "global/b8/std_conv/bias", lambda a: a),
    ("discriminator", "g_std.2.weight", (128, 512), "global/b4/std_fc/kernel", lambda a: a.T),
    ("discriminator", "g_final.weight", (1, 128), "global/b4/std_out/kernel", lambda a: a.T),
    ("latent", "fc.4.fc.weight", (256, 257), "mbstd_fc/kernel", lambda a: a.T),
    ("latent", "fc.5.bias", (1,), "out/bias", lambda a: a),
]


def leaf(tree: dict, path: str) -> np.ndarray:
    for k in ("params/" + path).split("/"):
        tree = tree[k]
    return tree


def shapes(tree) -> dict:
    return {jax.tree_util.keystr(p): tuple(v.shape) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def converted() -> dict[str, tuple[dict, dict]]:
    out = {}
    for kind, make in SD.items():
        sd = make()
        out[kind] = sd, gnr_convert.params_from_state_dict(kind, sd, TINY)
    return out


@pytest.mark.parametrize("kind", list(SD))
def test_fake_state_dict_is_the_reference_one(kind):
    sd = SD[kind]()
    assert (len(sd), sum(k.endswith(".kernel") for k in sd)) == REF_KEYS[kind]
    for k, key, shape, _, _ in ANCHORS:
        if k == kind:
            assert sd[key].shape == shape, key


@pytest.mark.parametrize("kind", list(SD))
def test_tree_matches_gafu_and_uses_every_value_once(kind, converted):
    sd, v = converted[kind]
    want = jax.eval_shape(lambda: INIT[kind](TINY, jax.random.key(0)))
    assert shapes(v) == shapes(want)
    assert len(jax.tree.leaves(v)) == len(sd) - REF_KEYS[kind][1]
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(v))
    ours = np.sort(np.concatenate([a.ravel() for a in jax.tree.leaves(v)]))
    theirs = np.sort(np.concatenate([a.ravel() for k, a in sd.items() if not k.endswith(".kernel")]))
    np.testing.assert_array_equal(ours, theirs)                    # a bijection of values: each key used once


def test_anchors_land_transposed(converted):
    for kind, key, _, path, fn in ANCHORS:
        sd, v = converted[kind]
        np.testing.assert_array_equal(leaf(v, path), fn(sd[key]), err_msg=f"{key} -> {path}")


def test_release_tables_cover_gafu_tree_with_the_reference_param_counts():
    cfg = gnr.preset("gnr")
    want = {"generator": (39_581_207, 130 - 18), "discriminator": (18_365_315, 71 - 17), "latent": (265_985, 12)}
    for kind, (count, n_leaves) in want.items():
        leaves, _ = gnr_convert.key_table(kind, cfg)
        assert sum(int(np.prod(lf.shape)) for lf in leaves) == count
        assert len(leaves) == n_leaves
        gafu = jax.eval_shape(lambda: INIT[kind](cfg, jax.random.key(0)))
        assert {("params", *lf.dst[1:]) for lf in leaves} == {
            tuple(k.key for k in p) for p, _ in jax.tree_util.tree_leaves_with_path(gafu)}


@pytest.mark.parametrize("overrides", [dict(num_down=4, n_res=2), dict(num_down=3, n_res=0), dict(resolution=128)])
def test_other_configs_cover_gafu_tree(overrides):
    cfg = gnr.GNRConfig(**{**dict(resolution=64, channel_base=512, channel_max=32), **overrides})
    for kind in ("generator", "discriminator"):
        got = {"/".join(lf.dst): lf.shape for lf in gnr_convert.key_table(kind, cfg)[0]}
        gafu = jax.eval_shape(lambda: INIT[kind](cfg, jax.random.key(0)))
        assert got == {"/".join(k.key for k in p): tuple(a.shape) for p, a in jax.tree_util.tree_leaves_with_path(gafu)}


def test_filter_buffers_are_optional():
    sd = {k: a for k, a in generator_sd().items() if not k.endswith(".kernel")}
    v = gnr_convert.params_from_state_dict("generator", sd, TINY)
    assert len(jax.tree.leaves(v)) == len(sd)


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("encoder.style.3.weight"), r"missing key 'encoder.style.3.weight' \(expected shape \(32, 512\)"),
    (lambda sd: sd.update({"convs.0.conv.weight": np.zeros((1, 32, 16, 3, 3), np.float32)}),
     r"key 'convs.0.conv.weight': expected shape \(1, 16, 32, 3, 3\), got \(1, 32, 16, 3, 3\)"),
    (lambda sd: sd.update({"encoder.stem.9.conv1.0.weight": np.zeros((2,), np.float32)}),
     r"unexpected key 'encoder.stem.9.conv1.0.weight'"),
    (lambda sd: sd.update({"to_rgbs.0.upsample.kernel": np.ones((4, 4), np.float32)}),
     r"key 'to_rgbs.0.upsample.kernel': resampling filter"),
])
def test_errors_name_the_key(edit, message):
    sd = generator_sd()
    edit(sd)
    with pytest.raises(ValueError, match=message):
        gnr_convert.params_from_state_dict("generator", sd, TINY)


def test_all_problems_in_one_error():
    sd = discriminator_sd()
    del sd["g_final.bias"], sd["l_branch.1.skip.1.weight"]
    with pytest.raises(ConvertError) as e:
        gnr_convert.params_from_state_dict("discriminator", sd, TINY, what="ck.pt: D_A")
    msg = str(e.value)
    assert "ck.pt: D_A" in msg and "2 problem(s)" in msg
    assert "missing key 'g_final.bias'" in msg and "missing key 'l_branch.1.skip.1.weight'" in msg
    with pytest.raises(ValueError, match="unknown GNR network kind"):
        gnr_convert.params_from_state_dict("encoder", sd, TINY)


def _checkpoint() -> dict[str, np.ndarray]:
    """A train.py ck.pt as nets.convert_io reads it: groups joined by '/', optimizer states alongside."""
    flat = {}
    for group, sd in (("G_A2B_ema", generator_sd(0)), ("G_A2B", generator_sd(5)), ("G_B2A_ema", generator_sd(6)),
                      ("D_A", discriminator_sd(1)), ("D_L", latent_sd(2))):
        flat.update({f"{group}/{k}": a for k, a in sd.items()})
    flat["G_optim/state/0/exp_avg"] = np.zeros(3, np.float32)
    return flat


def test_checkpoint_groups_and_ema(tmp_path):
    flat = _checkpoint()
    np.savez(tmp_path / "ck.npz", **flat)
    nets = gnr_convert.load_gnr_checkpoint(tmp_path / "ck.npz", TINY)
    assert sorted(nets) == ["D_A", "D_L", "G", "G_B2A"]
    g = leaf(nets["G"], "mapping/fc0/kernel")
    np.testing.assert_array_equal(g, flat["G_A2B_ema/mapping.0.weight"].T)
    raw = gnr_convert.params_from_checkpoint(flat, TINY, ema=False)
    np.testing.assert_array_equal(leaf(raw["G"], "mapping/fc0/kernel"), flat["G_A2B/mapping.0.weight"].T)
    np.testing.assert_array_equal(leaf(raw["G_B2A"], "mapping/fc0/kernel"), flat["G_B2A_ema/mapping.0.weight"].T)


def test_bare_generator_and_nothing_found():
    assert list(gnr_convert.params_from_checkpoint(generator_sd(), TINY)) == ["G"]
    with pytest.raises(ConvertError, match="no GANsNRoses network found"):
        gnr_convert.params_from_checkpoint({"g_ema/style.1.weight": np.zeros(1)}, TINY)
    bad = {k: a for k, a in _checkpoint().items() if k != "D_L/fc.5.bias"}
    with pytest.raises(ConvertError, match=r"(?s)D_L \(latent.*missing key 'fc.5.bias'"):
        gnr_convert.params_from_checkpoint(bad, TINY, what="ck.pt")
