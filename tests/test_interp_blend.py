"""nets.paths / interp.blend on real trees: StyleGAN2 G and D, an unrelated b{R} module, JP's test vector."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp import blend as B
from nets import paths
from nets.stylegan2 import Generator, init_discriminator, init_generator, preset

CFG = preset("tiny")                       # 32 px: blocks b4, b8, b16, b32


def flat(tree) -> dict[str, object]:
    return {paths.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def gens():
    a, b = (jax.tree.map(np.asarray, init_generator(CFG, jax.random.key(i))) for i in (0, 1))
    return a, b


@pytest.fixture(scope="module")
def discs():
    return tuple(jax.tree.map(np.asarray, init_discriminator(CFG, jax.random.key(i))) for i in (2, 3))


class Pyramid(nn.Module):
    """An unrelated model for the naming rule: a stem, blocks b16 -> b4 of dense + layer norm, a head."""
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8, name="stem")(x)
        for r in (16, 8, 4):
            x = _Block(name=f"b{r}")(x)
        return nn.Dense(2, name="head")(x)


class _Block(nn.Module):
    """x + gelu(norm(mix(x))): sub-modules 'mix' and 'norm' play the part of layers."""
    @nn.compact
    def __call__(self, x):
        return x + nn.gelu(nn.LayerNorm(name="norm")(nn.Dense(8, name="mix")(x)))


@pytest.fixture(scope="module")
def pyramids():
    x = jnp.ones((2, 5))
    return tuple(jax.tree.map(np.asarray, Pyramid().init(jax.random.key(i), x)) for i in (4, 5)), x


# ---- paths ----------------------------------------------------------------------------------------------------

def test_paths_read_resolution_layer_and_jp_position():
    p = ("params", "synthesis", "b64", "conv0", "affine", "kernel")
    assert paths.resolution_of(p) == 64 and paths.layer_of(p) == "conv0"
    assert paths.layer_path(p) == ("params", "synthesis", "b64", "conv0")
    assert paths.resolution_of(("params", "mapping", "fc0", "bias")) is None
    assert paths.resolution_of(("params", "synthesis", "b64x", "w")) is None        # fullmatch only
    table = {("b4", "const"): 0, ("b4", "torgb"): 1, ("b8", "conv0"): 2, ("b8", "conv1"): 3, ("b8", "torgb"): 3,
             ("b256", "conv0"): 12, ("b256", "torgb"): 13, ("b1024", "conv1"): 17, ("b4", "conv1"): None}
    for (blk, layer), want in table.items():
        assert paths.toonify_position(("params", "synthesis", blk, layer, "weight")) == want, (blk, layer)
    assert paths.toonify_position(("buffers", "synthesis", "b8", "conv0", "noise_const")) is None
    assert paths.toonify_mid(32, 0) == 6 and paths.toonify_mid(32, 1) == 7
    with pytest.raises(paths.PathError, match="two block names|2 block names"):
        paths.resolution_of(("b4", "b8", "w"))
    with pytest.raises(paths.PathError, match="fromrgb"):
        paths.toonify_position(("params", "b32", "fromrgb", "weight"))


# ---- JP blend_models parity -----------------------------------------------------------------------------------

def _jp_reference_ys(tf_names, resolution, level, blend_width):
    """JP's selection logic re-stated on TF scope names: a position per (res, level), y from x = pos - mid."""
    suffixes = (("Conv0_up", "Const"), ("Conv1", "ToRGB"))
    found, pos = [], 0
    for res in [4 * 2 ** i for i in range(9)]:
        for lvl, sfx in enumerate(suffixes):
            for s in sfx:
                found += [(n, res, lvl, pos) for n in tf_names if n.startswith(f"G_synthesis/{res}x{res}/{s}")]
            pos += 1
    mid = next(p for n, r, lvl, p in found if (r, lvl) == (resolution, level))
    ys = {}
    for n, _, _, p in found:
        x = p - mid
        ys[n] = (1 if x > 1 else 0) if blend_width is None else 1 / (1 + math.exp(-x / blend_width))
    return ys


def _tf_name(path) -> str | None:
    n = paths.names_of(path)
    if n[0] != "params" or n[1] != "synthesis":
        return None
    res, layer = int(n[2][1:]), n[3]
    scope = {"const": "Const", "conv0": "Conv0_up", "conv1": "Conv1" if res > 4 else "Conv", "torgb": "ToRGB"}[layer]
    return f"G_synthesis/{res}x{res}/{scope}/" + "/".join(n[4:])


@pytest.fixture(scope="module")
def probe256():
    """Zeros (model_1) and ones (model_2) shaped like a 256 px generator tree: the output is y itself."""
    shapes = jax.eval_shape(lambda k: init_generator(preset("tiny", resolution=256), k), jax.random.key(0))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return zeros, jax.tree.map(np.ones_like, zeros)


def test_blend_models_reproduces_jp_test_vector(probe256):
    z, o = probe256
    hard0, hard1 = flat(B.blend_models(z, o, 32, 0)), flat(B.blend_models(z, o, 32, 1))
    smooth = flat(B.blend_models(z, o, 32, 0, blend_width=1.0))
    vector = [  # (layer, hard r=32 level 0, hard level 1, smooth width 1): blend_models.py's y at JP's positions
        ("b4/const", 0, 0, 0.002), ("b4/torgb", 0, 0, 0.007), ("b8/conv0", 0, 0, 0.018), ("b8/conv1", 0, 0, 0.047),
        ("b16/conv0", 0, 0, 0.119), ("b16/conv1", 0, 0, 0.269), ("b32/conv0", 0, 0, 0.500),
        ("b32/torgb", 0, 0, 0.731), ("b64/conv0", 1, 0, 0.881), ("b64/conv1", 1, 1, 0.953),
        ("b128/conv0", 1, 1, 0.982), ("b128/torgb", 1, 1, 0.993), ("b256/conv0", 1, 1, 0.998),
        ("b256/conv1", 1, 1, 0.999), ("b4/conv1", 0, 0, 0.0)]
    for layer, h0, h1, sm in vector:
        for key in (f"params/synthesis/{layer}/bias", f"params/synthesis/{layer}/affine/kernel"):
            if layer == "b4/const":
                key = "params/synthesis/b4/const"
            assert np.all(hard0[key] == h0) and np.all(hard1[key] == h1), key
            np.testing.assert_allclose(smooth[key], sm, atol=5e-4, err_msg=key)
    for out in (hard0, hard1, smooth):   # mapping, w_avg and noise buffers always from model_1
        for k, v in out.items():
            if "mapping" in k or k.startswith("buffers"):
                assert np.all(v == 0), k


@pytest.mark.parametrize("resolution,level,width", [(4, 0, None), (8, 1, None), (64, 0, None), (256, 1, None),
                                                    (16, 0, 0.5), (128, 1, 2.0), (4, 1, 1.0)])
def test_blend_models_equals_jp_reference_on_tf_names(probe256, resolution, level, width):
    z, o = probe256
    out = flat(B.blend_models(z, o, resolution, level, width))
    tf = {k: _tf_name(paths.parse_prefix(k)) for k in out}
    ref = _jp_reference_ys([n for n in tf.values() if n], resolution, level, width)
    for k, v in out.items():
        want = ref.get(tf[k], 0.0) if tf[k] else 0.0      # names JP never matched stay model_1's
        np.testing.assert_array_equal(v, np.float32(want), err_msg=k)


# ---- clean mode on G, D and an unrelated module --------------------------------------------------------------

def _source(out, a, b):
    fo, fa, fb = flat(out), flat(a), flat(b)
    return {k: "A" if v is fa[k] else "B" if v is fb[k] else "mix" for k, v in fo.items()}   # taken whole = not copied


def test_swap_generator_takes_blocks_from_r_and_globals_from_low(gens):
    a, b = gens
    src = _source(B.swap(a, b, 16), a, b)
    for k, s in src.items():
        r = paths.resolution_of(paths.parse_prefix(k))
        assert s == ("B" if r is not None and r >= 16 else "A"), k
    assert B.resolutions(a) == (4, 8, 16, 32)
    with pytest.raises(B.BlendError, match=r"r_swap 64 .* valid: \[4, 8, 16, 32\]"):
        B.swap(a, b, 64)


def test_smooth_swap_tends_to_swap_and_blends_params_but_picks_noise(gens):
    a, b = gens
    np.testing.assert_equal(flat(B.smooth_swap(a, b, 16, 1e-3)), flat(B.swap(a, b, 16)))
    src = _source(B.smooth_swap(a, b, 16, 1.0), a, b)
    assert src["params/synthesis/b8/conv1/weight"] == "mix" and src["params/mapping/fc0/kernel"] == "mix"
    assert src["buffers/synthesis/b8/conv1/noise_const"] == "A"        # alpha(8) < 0.5
    assert src["buffers/synthesis/b16/conv1/noise_const"] == "B"       # alpha(16) > 0.5


def test_lerp_zero_renders_like_a(gens):
    a, b = gens
    z = jnp.asarray(np.random.RandomState(0).randn(2, CFG.z_dim).astype(np.float32))
    g = jax.jit(lambda v, z: Generator(CFG).apply(v, z, noise_mode="const"))
    out = jax.jit(lambda a, b, al: B.lerp(a, b, al))(a, b, jnp.float32(0.0))
    np.testing.assert_array_equal(g(out, z), g(a, z))


def test_discriminator_tree_follows_the_naming(discs):
    a, b = discs
    assert B.resolutions(a) == (4, 8, 16, 32)
    src = _source(B.swap(a, b, 16), a, b)
    assert {k: s for k, s in src.items() if s == "B"}.keys() == {k for k in src if "/b16/" in k or "/b32/" in k}
    half = flat(B.blend(a, b, {4: 0.0, 8: 0.25, 16: 0.5, 32: 1.0}))
    fa, fb = flat(a), flat(b)
    np.testing.assert_allclose(half["params/b16/conv0/weight"],
                               0.5 * fa["params/b16/conv0/weight"] + 0.5 * fb["params/b16/conv0/weight"], rtol=1e-6)
    with pytest.raises(paths.PathError, match="generator layers .* got 'skip'"):
        B.blend_models(a, b, 16)


def test_unrelated_module_swap_blend_and_apply(pyramids):
    (a, b), x = pyramids
    assert B.resolutions(a) == (4, 8, 16)
    src = _source(B.swap(a, b, 8), a, b)
    for k, s in src.items():
        want = "B" if "/b8/" in k or "/b16/" in k else "A"               # stem and head are global: from low
        assert s == want, k
    f = jax.jit(lambda v: Pyramid().apply(v, x))
    np.testing.assert_array_equal(f(B.blend(a, b, 0.0)), f(a))
    np.testing.assert_array_equal(f(B.blend(a, b, {4: 1.0, 8: 1.0, 16: 1.0}, global_alpha=1.0)), f(b))


# ---- per-collection rules -------------------------------------------------------------------------------------

def _collections_tree(seed: int) -> dict:
    """params, buffers, batch_stats and spectral leaves in blocks b4 / b8 and outside them."""
    rng = np.random.default_rng(seed)
    leaf = lambda *s: rng.standard_normal(s).astype(np.float32)      # noqa: E731
    return {"params": {"net": {"b4": {"conv": {"w": leaf(3, 2)}}, "b8": {"conv": {"w": leaf(3, 2)}}},
                       "head": {"w": leaf(2)}},
            "buffers": {"net": {"b8": {"conv": {"noise": leaf(8, 8)}}}, "avg": leaf(2)},
            "batch_stats": {"net": {"b4": {"norm": {"mean": leaf(2), "var": leaf(2) ** 2}},
                                    "b8": {"norm": {"mean": leaf(2), "var": leaf(2) ** 2}}},
                            "head_norm": {"mean": leaf(2)}},
            "spectral": {"net": {"b8": {"conv": {"u": leaf(2)}}}, "head": {"u": leaf(2)}}}


def test_collection_rules_pick_statistics_whole_and_average_params():
    a, b = _collections_tree(0), _collections_tree(1)
    fa, fb = flat(a), flat(b)
    out = flat(B.blend(a, b, {4: 0.25, 8: 0.75}, global_alpha=0.4))      # share of b
    for k, v in out.items():
        alpha = {4: 0.25, 8: 0.75, None: 0.4}[paths.resolution_of(paths.parse_prefix(k))]
        if k.startswith(("batch_stats/", "spectral/")):                   # whole from the larger share, anywhere
            np.testing.assert_array_equal(v, fb[k] if alpha > 0.5 else fa[k], err_msg=k)
        elif k == "buffers/net/b8/conv/noise":                            # a block buffer: picked
            np.testing.assert_array_equal(v, fb[k], err_msg=k)
        else:                                                             # params and w_avg-like buffers: averaged
            np.testing.assert_allclose(v, (1 - alpha) * fa[k] + alpha * fb[k], rtol=1e-6, err_msg=k)
    # the same under jit with a traced alpha, bit for bit
    traced = flat(jax.jit(lambda x, y, al: B.blend(x, y, al))(a, b, jnp.float32(0.75)))
    for k in ("batch_stats/net/b4/norm/var", "spectral/head/u", "batch_stats/head_norm/mean"):
        np.testing.assert_array_equal(traced[k], fb[k], err_msg=k)
    assert paths.COLLECTION_RULES["batch_stats"] == paths.COLLECTION_RULES["spectral"] == paths.PICK


def test_unknown_collection_is_named():
    a = {"params": {"b4": {"w": np.zeros(2, np.float32)}}, "cache": {"b4": {"k": np.zeros(2, np.float32)}}}
    with pytest.raises(paths.PathError, match=r"'cache/b4/k' is in collection 'cache', which has no blend rule; "
                                              r"known collections: \['batch_stats', 'buffers', 'params', 'previews', 'spectral'\]"):
        B.blend(a, a, 0.5)


# ---- bad input ------------------------------------------------------------------------------------------------

def test_mismatched_trees_name_the_first_differing_path(gens):
    a, b = gens
    b2 = jax.tree.map(lambda x: x, b)
    del b2["params"]["synthesis"]["b16"]["conv0"]["bias"]
    with pytest.raises(B.BlendError, match="differ at 'params/synthesis/b16/conv0/bias': A has it, B does not"):
        B.blend(a, b2, 0.5)
    with pytest.raises(B.BlendError, match="'params/synthesis/b16/conv0/bias': B has it, A does not"):
        B.blend(b2, a, 0.5)
    b3 = jax.tree.map(lambda x: x, b)
    b3["params"]["synthesis"]["b8"]["conv1"]["bias"] = np.zeros(7, np.float32)
    with pytest.raises(B.BlendError, match=r"'params/synthesis/b8/conv1/bias': A float32\[32\], B float32\[7\]"):
        B.swap(a, b3, 8, names=("A", "B"))
    b3["params"]["synthesis"]["b8"]["conv1"]["bias"] = b["params"]["synthesis"]["b8"]["conv1"]["bias"].astype(
        np.float16)
    with pytest.raises(B.BlendError, match=r"A float32\[32\], B float16\[32\]"):
        B.blend_models(a, b3, 8, names=("A", "B"))


def test_leaf_without_resolution_in_a_blended_subtree_is_an_error(gens):
    a, b = gens
    a2, b2 = (jax.tree.map(lambda x: x, t) for t in (a, b))
    for t in (a2, b2):
        t["params"]["synthesis"]["extra"] = np.zeros(3, np.float32)
    with pytest.raises(B.BlendError, match="'params/synthesis/extra' has no block resolution.*'params/synthesis'"):
        B.blend(a2, b2, 0.5, scope=paths.GENERATOR_SCOPE)
    assert B.blend(a2, b2, 0.0)["params"]["synthesis"]["extra"] is a2["params"]["synthesis"]["extra"]  # global
    with pytest.raises(B.BlendError, match="'params/mapping/fc0/bias' has no block resolution.*'params'"):
        B.blend(a, b, 0.5, scope=["params"])
    with pytest.raises(B.BlendError, match="scope 'params/nothing' matches no leaf"):
        B.blend(a, b, 0.5, scope=["params/nothing"])


def test_schedule_and_resolution_errors_list_valid_resolutions(gens):
    a, b = gens
    with pytest.raises(B.BlendError, match=r"resolutions \[64\] that the model lacks; valid: \[4, 8, 16, 32\]"):
        B.blend(a, b, {4: 0, 8: 0, 16: 1, 32: 1, 64: 1})
    with pytest.raises(B.BlendError, match=r"no value for resolutions \[32\]"):
        B.blend(a, b, {4: 0, 8: 0, 16: 1})
    with pytest.raises(B.BlendError, match=r"resolution 512 .* valid: \[4, 8, 16, 32\]"):
        B.blend_models(a, b, 512)
    with pytest.raises(ValueError, match="level must be 0 or 1"):
        B.blend_models(a, b, 8, level=2)
    with pytest.raises(B.BlendError, match="blend_width must be > 0"):
        B.smooth_swap(a, b, 8, 0.0)
    with pytest.raises(B.BlendError, match="expected 3 weights, got 2"):
        B.blend_n([a, b, a], (0.5, 0.5))


def test_integer_leaves_swap_but_do_not_interpolate():
    a = {"params": {"b4": {"count": np.array([1, 2], np.int32)}, "b8": {"count": np.array([3], np.int32)}}}
    b = jax.tree.map(lambda x: x + 10, a)
    assert flat(B.swap(a, b, 8))["params/b8/count"].tolist() == [13]
    with pytest.raises(B.BlendError, match="cannot interpolate 'params/b4/count' \\(int32\\)"):
        B.blend(a, b, 0.5)


def test_channel_swap_masks_output_channels_and_checks_masks(gens):
    a, b = gens
    layer = "params/synthesis/b16/conv1"
    mask = np.arange(32) % 3 == 0
    out, fa, fb = flat(B.channel_swap(a, b, {layer: mask})), flat(a), flat(b)
    w = out[f"{layer}/weight"]                                                     # [3,3,I,O]
    np.testing.assert_array_equal(w[..., mask], fb[f"{layer}/weight"][..., mask])
    np.testing.assert_array_equal(w[..., ~mask], fa[f"{layer}/weight"][..., ~mask])
    assert out[f"{layer}/affine/kernel"] is fa[f"{layer}/affine/kernel"]           # partial mask: input side stays
    assert out[f"{layer}/noise_strength"] is fa[f"{layer}/noise_strength"]
    assert all(out[k] is fa[k] for k in out if not k.startswith(layer))
    with pytest.raises(B.BlendError, match="has 5 channels but 'params/synthesis/b16/conv1/bias' has 32"):
        B.channel_swap(a, b, {layer: np.ones(5, bool)})
    with pytest.raises(B.BlendError, match="matches no leaf"):
        B.channel_swap(a, b, {"params/synthesis/b16/conv7": mask})
    with pytest.raises(B.BlendError, match="1-D bool"):
        B.channel_swap(a, b, {layer: np.ones(32)})
    with pytest.raises(B.BlendError, match="masks overlap"):
        B.channel_swap(a, b, {"params/synthesis/b16": mask, layer: mask})
