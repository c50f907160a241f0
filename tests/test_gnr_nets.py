"""nets/gnr.py: the GANs N' Roses networks (mchong6/GANsNRoses model.py, main branch).

Parameter counts of the release configuration are pinned to the torch reference (Generator(256, num_down=4,
latent_dim=8, n_mlp=5, lr_mlp=0.01, n_res=1), Discriminator(256), LatDiscriminator(8), built outside this repo)
and to a closed-form count from the reference constructors. The diversity head and the latent D's minibatch std
are checked on hand-made groups. Everything else at tiny widths.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp import blend
from nets import gnr, paths, registry

TINY = gnr.GNRConfig(resolution=16, num_down=2, channel_base=128, channel_max=16, style_dim=16, n_mlp=2,
                     local_res=4, global_res=4, diversity_features=8, latent_d_width=16)


@functools.lru_cache(maxsize=None)
def tiny_model(seed: int = 0):
    return gnr.init_model(TINY, jax.random.key(seed))


def shapes(tree):
    return jax.tree.map(lambda x: tuple(x.shape), tree)


# ---- the release configuration ----------------------------------------------------------------------------------

def closed_form_counts(R=256, num_down=4, latent=8, n_mlp=5, n_res=1, w=512):
    """Parameter counts written from the reference constructors (channels {4..32: 512, 64: 256, 128: 128, 256: 64})."""
    ch = lambda r: min(16384 // r, 512)                                                  # noqa: E731
    conv = lambda i, o, k, bias=True: i * o * k * k + (o if bias else 0)                 # noqa: E731
    lin = lambda i, o: i * o + o                                                          # noqa: E731
    res_down = lambda i, o: conv(i, i, 3) + conv(i, o, 3) + conv(i, o, 1, bias=False)     # noqa: E731
    res_same = lambda c: 2 * conv(c, c, 3)                                                # noqa: E731
    modconv = lambda i, o, k: i * o * k * k + lin(w, i) + o    # weight + modulation + FusedLeakyReLU bias  # noqa
    torgb = lambda i: i * 3 + lin(w, i) + 3                                               # noqa: E731
    C = R >> num_down
    enc = conv(3, ch(R), 1) + sum(res_down(ch(r), ch(r // 2)) for r in (R >> k for k in range(num_down)))
    enc += n_res * res_same(ch(C)) + 2 * conv(ch(C), ch(C), 1)
    r = C
    while r > 4:
        enc += conv(ch(r), ch(r // 2), 3)
        r //= 2
    enc += lin(ch(4) * 16, ch(4)) + lin(ch(4), latent)
    mapping = lin(latent, w) + (n_mlp - 1) * lin(w, w)
    dec = n_res * 2 * modconv(ch(C), ch(C), 3) + modconv(ch(C), ch(C), 3) + torgb(ch(C))
    r = 2 * C
    while r <= R:
        dec += modconv(ch(r // 2), ch(r), 3) + modconv(ch(r), ch(r), 3) + torgb(ch(r))
        r *= 2
    tower = lambda stop: conv(3, ch(R), 1) + sum(res_down(ch(r), ch(r // 2)) for r in (R >> k for k in range(  # noqa
        int(np.log2(R // stop)))))
    d = tower(32) + conv(ch(32), 1, 1) + tower(8) + conv(ch(8), 1, 1) + conv(ch(8), ch(4), 3)
    d += lin(ch(4) * 16, 128) + lin(128, 1)
    d_l = lin(latent, 256) + 3 * lin(256, 256) + lin(257, 256) + lin(256, 1)
    return {"G": enc + mapping + dec, "D": d, "D_L": d_l}


# Printed by the torch reference at the release settings (sum of p.numel() over parameters()).
REFERENCE_COUNTS = {"G": 39_581_207, "D": 18_365_315, "D_L": 265_985}


def test_release_parameter_counts_match_the_reference():
    cfg = gnr.preset("gnr")
    v = jax.eval_shape(lambda: gnr.init_model(cfg, jax.random.key(0)))
    ours = {"G": gnr.param_count(v["G"]), "D": gnr.param_count(v["D_A"]), "D_L": gnr.param_count(v["D_L"])}
    assert ours == REFERENCE_COUNTS
    assert closed_form_counts() == REFERENCE_COUNTS
    assert gnr.param_count(v["G_B2A"]) == ours["G"] and gnr.param_count(v["D_B"]) == ours["D"]


def test_release_codes_and_tree_are_keyed_by_resolution():
    cfg = gnr.preset("gnr")
    x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    v = jax.eval_shape(lambda: gnr.init_generator(cfg, jax.random.key(0)))
    content, style = jax.eval_shape(lambda v, x: gnr.Generator(cfg).apply(v, x, method=gnr.Generator.encode), v, x)
    assert content.shape == (2, 16, 16, 512) and style.shape == (2, 8)
    p = v["params"]
    assert sorted(p) == ["decoder", "encoder", "mapping"]
    assert sorted(p["encoder"], key=lambda k: -int(k[1:])) == ["b256", "b128", "b64", "b32", "b16", "b8", "b4"]
    assert sorted(p["encoder"]["b16"]) == ["content0", "content1", "res0", "style"]
    assert sorted(p["encoder"]["b4"]) == ["fc", "style_out"]
    assert sorted(p["decoder"]) == ["b128", "b16", "b256", "b32", "b64"]
    assert sorted(p["decoder"]["b16"]) == ["conv1", "res0", "torgb"]
    assert sorted(p["decoder"]["b32"]) == ["conv0", "conv1", "torgb"]
    assert p["decoder"]["b256"]["conv0"]["weight"].shape == (3, 3, 128, 64)
    assert sorted(p["mapping"]) == [f"fc{i}" for i in range(5)]
    assert p["mapping"]["fc0"]["kernel"].shape == (8, 512)
    d = jax.eval_shape(lambda: gnr.init_discriminator(cfg, jax.random.key(0)))["params"]
    assert sorted(d["local"], key=lambda k: -int(k[1:])) == ["b256", "b128", "b64", "b32"]
    assert sorted(d["global"], key=lambda k: -int(k[1:])) == ["b256", "b128", "b64", "b32", "b16", "b8", "b4"]
    assert sorted(d["global"]["b8"]) == ["out", "std_conv"] and sorted(d["global"]["b4"]) == ["std_fc", "std_out"]
    heads = jax.eval_shape(lambda d, x: gnr.Discriminator(cfg).apply({"params": d}, x), d,
                           jax.ShapeDtypeStruct((1, 2, 256, 256, 3), jnp.float32))
    assert [h.shape for h in heads] == [(1, 2, 32, 32), (1, 2, 8, 8), (1, 2)]


# ---- tiny networks ----------------------------------------------------------------------------------------------

def faces(n: int, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (n, 16, 16, 3), minval=-1, maxval=1)


def test_round_trip_shapes_and_the_decode_entry_points_agree():
    v = tiny_model()["G"]
    G = gnr.Generator(TINY)
    x, s = faces(3), jax.random.normal(jax.random.key(1), (3, TINY.latent_dim))
    content, style = G.apply(v, x, method=G.encode)
    assert content.shape == (3, 4, 4, 16) and style.shape == (3, TINY.latent_dim)
    np.testing.assert_array_equal(G.apply(v, x, method=G.style_encode), style)
    out = G.apply(v, content, s, method=G.decode)
    assert out.shape == (3, 16, 16, 3) and bool(jnp.all(jnp.isfinite(out)))
    w = G.apply(v, s, method=G.map)
    assert w.shape == (3, TINY.style_dim)
    np.testing.assert_allclose(G.apply(v, content, w, False, method=G.decode), out, atol=1e-6)
    np.testing.assert_allclose(G.apply(v, x, s), out, atol=1e-6)
    # Different styles give different images of one content; the style code is what varies them.
    s2 = jax.random.normal(jax.random.key(2), (3, TINY.latent_dim))
    assert float(jnp.mean(jnp.abs(G.apply(v, content, s2, method=G.decode) - out))) > 1e-3
    with pytest.raises(ValueError, match="content codes"):
        G.apply(v, content[:, :2], s, method=G.decode)
    with pytest.raises(ValueError, match="images"):
        G.apply(v, x[:, :8], method=G.encode)


d_apply = jax.jit(lambda v, x: gnr.Discriminator(TINY).apply(v, x))           # one program per input shape
lat_apply = jax.jit(lambda v, s: gnr.LatentDiscriminator(TINY).apply(v, s))


def diversity(d_vars, groups):
    return d_apply(d_vars, groups)[2]


def test_a_group_of_identical_fakes_is_scored_as_non_diverse():
    """The diversity logit sees only the spread inside a group: every group of identical copies (whatever the
    image) gets the same score, the score of zero spread; a group of distinct images gets another."""
    d = tiny_model()["D_A"]
    x = faces(4)
    identical = jnp.stack([jnp.broadcast_to(x[i], (4, 16, 16, 3)) for i in range(3)])     # [3,4,...]
    div = diversity(d, jnp.concatenate([identical, x[None]]))                              # [4,4]
    np.testing.assert_allclose(div[:3], jnp.broadcast_to(div[0, 0], (3, 4)), atol=1e-6)
    assert abs(float(div[3, 0] - div[0, 0])) > 1e-3
    np.testing.assert_array_equal(div[3], jnp.broadcast_to(div[3, 0], (4,)))               # one score per group
    # The zero-spread score is the head's value at std = sqrt(eps) for every feature.
    std_out = d["params"]["global"]["b2"]["std_out"]
    eps_std = np.full((1, TINY.diversity_features), np.sqrt(1e-8), np.float32)
    expect = eps_std @ (np.asarray(std_out["kernel"]) / np.sqrt(TINY.diversity_features))
    np.testing.assert_allclose(div[0, 0], expect[0, 0] + np.asarray(std_out["bias"])[0], atol=1e-5)


def test_a_group_statistic_does_not_change_when_another_group_is_added():
    v = tiny_model()
    a, b = faces(4, 1)[None], faces(4, 2)[None]
    alone = d_apply(v["D_A"], a)
    beside = d_apply(v["D_A"], jnp.concatenate([a, b]))
    for h0, h1 in zip(alone, beside):
        np.testing.assert_allclose(h1[:1], h0, atol=1e-5)
    s = jax.random.normal(jax.random.key(3), (2, 4, TINY.latent_dim))
    np.testing.assert_allclose(lat_apply(v["D_L"], s)[:1], lat_apply(v["D_L"], s[:1]), atol=1e-6)
    # ... while changing a member of the group does change it (the statistic is really per group).
    moved = s.at[0, 0].add(1.0)
    assert abs(float(lat_apply(v["D_L"], moved)[0, 1] - lat_apply(v["D_L"], s)[0, 1])) > 1e-6


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="power of two"):
        gnr.GNRConfig(resolution=48)
    with pytest.raises(ValueError, match="content code"):
        gnr.GNRConfig(resolution=16, num_down=3)
    with pytest.raises(ValueError, match="local_res"):
        gnr.GNRConfig(resolution=32, num_down=2, local_res=32)
    with pytest.raises(ValueError, match="unknown GNR preset"):
        gnr.preset("gnr-huge")
    assert gnr.GNRConfig.from_dict(TINY.to_dict()) == TINY


# ---- registry: sample and blend ---------------------------------------------------------------------------------

def test_registry_sample_translates_previews_and_blend_keys_the_decoder():
    arch = registry.get("gnr")
    v = tiny_model()
    faces_u8 = np.asarray((faces(3) + 1) * 127.5, np.uint8)
    g = {**v["G"], gnr.PREVIEWS: {"image": faces_u8}}
    out = arch.sample(TINY, g, [0, 1, 3])
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8
    direct = gnr.translate(TINY, g, faces_u8[[0, 1, 0]], gnr.styles_from_seeds(TINY, [0, 1, 3])[:, None])[:, 0]
    np.testing.assert_array_equal(out, direct)                  # seed s: face s % 3, style of seed s
    with pytest.raises(ValueError, match="no preview faces"):
        arch.sample(TINY, v["G"], [0])
    # Decoder blocks are resolution-keyed; encoder and mapping come whole with the low-resolution parent.
    other = tiny_model(1)["G"]
    mixed = blend.swap(v["G"], other, 8, scope=arch.scope)
    for path, leaf in jax.tree_util.tree_flatten_with_path(mixed)[0]:
        names = paths.names_of(path)
        low = functools.reduce(lambda t, k: t[k], names, v["G"])
        high = functools.reduce(lambda t, k: t[k], names, other)
        is_dec = names[1] == "decoder"
        want = high if is_dec and paths.resolution_of(path) >= 8 else low
        np.testing.assert_array_equal(leaf, want, err_msg=paths.path_str(path))
    assert blend.resolutions(v["G"], arch.scope) == (4, 8, 16)
