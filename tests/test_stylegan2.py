"""StyleGAN2 G/D: parameter counts of the reference, the param tree naming, truncation, noise, mixing, files."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from nets import modelfile
from nets.stylegan2 import (Discriminator, Generator, StyleGAN2Config, init_discriminator, init_generator,
                            param_count, preset, style_mix, ws_index)


@pytest.fixture(scope="module")
def tiny():
    cfg = preset("tiny")
    return cfg, init_generator(cfg, jax.random.key(0)), init_discriminator(cfg, jax.random.key(1))


def shapes(cfg, fn):
    return jax.eval_shape(lambda: fn(cfg, jax.random.key(0)))


@pytest.mark.parametrize("res,want", [(64, 27_032_600), (256, 30_034_338)])
def test_generator_param_count_matches_reference(res, want):
    """rosinality Generator(size, 512, n_mlp=8, channel_multiplier=2) trainable counts."""
    cfg = preset("config-f", resolution=res)
    assert param_count(shapes(cfg, init_generator)["params"]) == want


def test_config_f_tree_follows_the_naming_rule():
    cfg = preset("config-f", resolution=64)
    g = shapes(cfg, init_generator)
    flat = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(g["params"]).items()}
    assert flat["mapping/fc0/kernel"] == (512, 512) and "mapping/fc7/bias" in flat and "mapping/fc8/bias" not in flat
    assert flat["synthesis/b4/const"] == (4, 4, 512)
    assert flat["synthesis/b4/conv1/weight"] == (3, 3, 512, 512)
    assert "synthesis/b4/conv0/weight" not in flat
    assert flat["synthesis/b64/conv0/weight"] == (3, 3, 512, 512)
    assert flat["synthesis/b64/conv1/affine/kernel"] == (512, 512)
    assert flat["synthesis/b64/conv1/noise_strength"] == ()
    assert flat["synthesis/b64/torgb/weight"] == (1, 1, 512, 3)
    assert flat["synthesis/b64/torgb/bias"] == (3,)
    blocks = sorted({k.split("/")[1] for k in flat if k.startswith("synthesis/")}, key=lambda b: int(b[1:]))
    assert blocks == ["b4", "b8", "b16", "b32", "b64"]
    buf = {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(g["buffers"]).items()}
    assert buf["mapping/w_avg"] == (512,)
    assert buf["synthesis/b4/conv1/noise_const"] == (4, 4)
    assert buf["synthesis/b64/conv0/noise_const"] == (64, 64)
    assert len([k for k in buf if k.endswith("noise_const")]) == cfg.num_ws - 1


def test_discriminator_tree_and_channels():
    cfg = preset("config-f", resolution=64)
    d = shapes(cfg, init_discriminator)["params"]
    assert sorted(d, key=lambda b: int(b[1:])) == ["b4", "b8", "b16", "b32", "b64"]
    assert set(d["b64"]) == {"fromrgb", "conv0", "conv1", "skip"} and set(d["b32"]) == {"conv0", "conv1", "skip"}
    assert d["b64"]["fromrgb"]["weight"].shape == (1, 1, 3, 512)
    assert d["b4"]["conv"]["weight"].shape == (3, 3, 513, 512)
    assert d["b4"]["fc"]["kernel"].shape == (8192, 512) and d["b4"]["out"]["kernel"].shape == (512, 1)
    assert "bias" not in d["b64"]["skip"]


@pytest.mark.parametrize("res", [4, 8, 128, 1024])
def test_any_power_of_two_resolution(res):
    cfg = preset("config-f", resolution=res)
    g = shapes(cfg, init_generator)
    assert max(int(b[1:]) for b in g["params"]["synthesis"]) == res
    img = jax.eval_shape(lambda v: Generator(cfg).apply(v, jnp.zeros((2, 512)), noise_mode="const"), g)
    assert img.shape == (2, res, res, 3)
    logits = jax.eval_shape(lambda v, x: Discriminator(cfg).apply(v, x), shapes(cfg, init_discriminator), img)
    assert logits.shape == (2,)


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Config(resolution=48)
    with pytest.raises(ValueError, match="unknown StyleGAN2 preset"):
        preset("config-z")
    with pytest.raises(ValueError, match=r"unknown config keys \['chanel_base'\] in StyleGAN2Config"):
        StyleGAN2Config.from_dict({"resolution": 64, "chanel_base": 1})
    with pytest.raises(ValueError, match=r"config key 'resolution' expects int; got '64'"):    # typed
        StyleGAN2Config.from_dict({"resolution": "64"})
    assert StyleGAN2Config.from_dict({"conv_clamp": 256}).conv_clamp == 256.0                # int as float


def test_ws_indices_cover_all_and_torgb_shares_with_next_conv0():
    cfg = preset("config-f", resolution=256)
    used = sorted({i for r in cfg.resolutions for i in ws_index(r)})
    assert used == list(range(cfg.num_ws)) and cfg.num_ws == 14
    for r in cfg.resolutions[:-1]:
        assert ws_index(r)[-1] == ws_index(2 * r)[0]


def test_psi_zero_renders_w_avg(tiny):
    cfg, g, _ = tiny
    w_avg = jnp.asarray(np.random.default_rng(0).standard_normal(cfg.w_dim), jnp.float32)
    g = {**g, "buffers": {**g["buffers"], "mapping": {"w_avg": w_avg}}}
    z = jax.random.normal(jax.random.key(3), (2, cfg.z_dim))
    img = jax.jit(lambda g, z: Generator(cfg).apply(g, z, psi=0.0, noise_mode="const"))(g, z)
    ws = jnp.broadcast_to(w_avg, (1, cfg.num_ws, cfg.w_dim))
    ref = jax.jit(lambda g, ws: Generator(cfg).apply(g, ws, noise_mode="const", method=Generator.synthesize))(g, ws)
    np.testing.assert_allclose(np.asarray(img[0]), np.asarray(ref[0]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(img[1]), np.asarray(ref[0]), atol=1e-5)


def test_truncation_cutoff_only_touches_early_ws(tiny):
    cfg, g, _ = tiny
    z = jax.random.normal(jax.random.key(4), (2, cfg.z_dim))
    full = Generator(cfg).apply(g, z, method=Generator.map)
    cut = Generator(cfg).apply(g, z, 0.5, 3, method=Generator.map)
    np.testing.assert_array_equal(np.asarray(cut[:, 3:]), np.asarray(full[:, 3:]))
    np.testing.assert_allclose(np.asarray(cut[:, :3]), 0.5 * np.asarray(full[:, :3]), rtol=1e-6)  # w_avg = 0


def test_noise_modes(tiny):
    cfg, g, _ = tiny
    # Give the noise a visible strength: fresh models start at 0.
    g = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.5 if p[-1].key == "noise_strength" else x, g)
    z = jax.random.normal(jax.random.key(5), (2, cfg.z_dim))
    run = jax.jit(lambda k, mode: Generator(cfg).apply(g, z, noise_mode=mode, rngs={"noise": k}),
                  static_argnums=1)
    c1, c2 = run(jax.random.key(1), "const"), run(jax.random.key(2), "const")
    np.testing.assert_array_equal(np.asarray(c1), np.asarray(c2))
    r1, r2 = run(jax.random.key(1), "random"), run(jax.random.key(2), "random")
    assert float(jnp.abs(r1 - r2).max()) > 1e-3
    np.testing.assert_array_equal(np.asarray(r1), np.asarray(run(jax.random.key(1), "random")))
    assert float(jnp.abs(run(jax.random.key(1), "none") - c1).max()) > 1e-3


def test_style_mixing_takes_late_ws_from_second_latent(tiny):
    cfg, g, _ = tiny
    z1, z2 = jax.random.normal(jax.random.key(6), (2, 1, cfg.z_dim))
    G = Generator(cfg)
    w1, w2 = G.apply(g, z1, method=G.map), G.apply(g, z2, method=G.map)
    mixed = style_mix(w1, w2, 2)
    np.testing.assert_array_equal(np.asarray(mixed[:, :2]), np.asarray(w1[:, :2]))
    np.testing.assert_array_equal(np.asarray(mixed[:, 2:]), np.asarray(w2[:, 2:]))
    img = jax.jit(lambda g: G.apply(g, z1, noise_mode="const", z_mix=z2, mix_cutoff=2))(g)
    ref = jax.jit(lambda g: G.apply(g, mixed, noise_mode="const", method=G.synthesize))(g)
    np.testing.assert_allclose(np.asarray(img), np.asarray(ref), atol=1e-5)


def test_w_avg_tracks_the_batch_mean(tiny):
    cfg, g, _ = tiny
    z = jax.random.normal(jax.random.key(7), (4, cfg.z_dim))
    ws, upd = Generator(cfg).apply(g, z, update_w_avg=True, mutable=["buffers"], method=Generator.map)
    want = 0.005 * np.asarray(ws[:, 0]).mean(0)   # w_avg starts at 0: lerp(mean, 0, 0.995)
    np.testing.assert_allclose(np.asarray(upd["buffers"]["mapping"]["w_avg"]), want, rtol=1e-5, atol=1e-7)


def test_generator_and_discriminator_outputs(tiny):
    cfg, g, d = tiny
    z = jax.random.normal(jax.random.key(8), (4, cfg.z_dim))
    img = jax.jit(lambda g, z: Generator(cfg).apply(g, z, noise_mode="const"))(g, z)
    assert img.shape == (4, 32, 32, 3) and img.dtype == jnp.float32
    assert 0.05 < float(jnp.std(img)) < 5.0 and bool(jnp.all(jnp.isfinite(img)))
    logits = jax.jit(Discriminator(cfg).apply)(d, img)
    assert logits.shape == (4,) and bool(jnp.all(jnp.isfinite(logits)))
    with pytest.raises(ValueError, match=r"D expects images \[N, 32, 32, 3\]"):
        Discriminator(cfg).apply(d, img[:, :16, :16])
    with pytest.raises(ValueError, match=r"ws must be \[N, 8, 32\]"):
        Generator(cfg).apply(g, jnp.zeros((1, 5, 32)), method=Generator.synthesize)


def test_fused_generator_matches_nonfused(tiny):
    cfg, g, _ = tiny
    z = jax.random.normal(jax.random.key(9), (3, cfg.z_dim))
    fused = StyleGAN2Config(**{**cfg.to_dict(), "fused_modconv": True})
    a, b = (jax.jit(lambda g, z, c=c: Generator(c).apply(g, z, noise_mode="const"))(g, z) for c in (cfg, fused))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_model_file_round_trip_and_errors(tiny, tmp_path):
    cfg, g, d = tiny
    path = modelfile.save_model(tmp_path / "m", {"G": g, "D": d}, cfg, meta={"note": "test"})
    mf = modelfile.load_model(path)
    assert StyleGAN2Config.from_dict(mf.config) == cfg and mf.meta == {"note": "test"}
    for a, b in zip(jax.tree.leaves({"G": g, "D": d}), jax.tree.leaves(mf.variables)):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert jax.tree.structure(mf.variables) == jax.tree.structure(jax.tree.map(np.asarray, {"G": g, "D": d}))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]              # no temp leftovers
    with pytest.raises(modelfile.ModelFileError, match="already exists"):
        modelfile.save_model(path, {"G": g}, cfg)
    with pytest.raises(modelfile.ModelFileError, match="does not exist"):
        modelfile.load_model(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    with pytest.raises(modelfile.ModelFileError, match="not a gafu model file"):
        modelfile.load_model(tmp_path / "junk")


def test_interrupted_save_leaves_nothing(tiny, tmp_path, monkeypatch):
    cfg, g, _ = tiny

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(modelfile.os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        modelfile.save_model(tmp_path / "m", {"G": g}, cfg)
    assert list(tmp_path.iterdir()) == []


def test_sample_cli_writes_a_png(tmp_path, monkeypatch):
    from PIL import Image

    from nets.cli import main
    out = tmp_path / "grid.png"
    assert main(["sample", "--preset", "tiny", "--seeds", "0-3", "--out", str(out)]) == 0
    with Image.open(out) as im:                      # 2 x 2 cells of 32 px, each shown 4x (128 px), 2 px padding
        assert im.size == (2 + 2 * 130, 2 + 2 * 130) and im.mode == "RGB"
        big = np.asarray(im)
    monkeypatch.setenv("GAFU_NATIVE_SIZE", "0")      # restored after the test (main sets it to 1)
    assert main(["--native-size", "sample", "--preset", "tiny", "--seeds", "0-3", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (2 + 2 * 34, 2 + 2 * 34)
        native = np.asarray(im)
    np.testing.assert_array_equal(big[2:130, 2:130][::4, ::4], native[2:34, 2:34])   # the same pixels, repeated
