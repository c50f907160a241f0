"""interp/gnr.py and `gafu gnr translate / video`, `gafu sample` and `gafu blend` on GNR model files.

Models are freshly initialised tiny GNRs written as model files (translation is a pure function of the weights,
so what is checked is the plumbing: shapes, styles, codes per frame, frame counts and rates, errors)."""
import numpy as np
import pytest
import jax

from interp import gnr as T
from interp import video
from nets import cli, gnr, images, modelfile, registry

CFG = gnr.GNRConfig(resolution=16, num_down=2, channel_base=128, channel_max=16, style_dim=16, n_mlp=2,
                    local_res=4, global_res=4, diversity_features=8, latent_d_width=16)


def write_model(path, seed=0, with_b2a=True, previews=True):
    v = gnr.init_model(CFG, jax.random.key(seed))
    g = dict(v["G"])
    if previews:
        g[gnr.PREVIEWS] = {"image": np.random.RandomState(seed).randint(0, 256, (4, 16, 16, 3), np.uint8)}
    out = {"G": g, **({"G_B2A": v["G_B2A"]} if with_b2a else {})}
    return modelfile.save_model(path, out, CFG, arch="gnr")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("gnr") / "m")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    p = tmp_path_factory.mktemp("photo") / "face.png"
    images.write_png(p, np.random.RandomState(1).randint(0, 256, (40, 30, 3), np.uint8))
    return p


def test_translate_writes_face_and_styles_and_seeds_fix_them(model, photo, tmp_path, capsys):
    out = tmp_path / "t.png"
    assert cli.main(["gnr", "translate", str(photo), "--no-align", "--model", str(model), "--out", str(out),
                     "--styles", "3", "--seed", "5"]) == 0
    assert "3 sampled styles" in capsys.readouterr().out
    fig = images.read_rgb(out)
    assert fig.shape[0] >= 128 and fig.shape[1] > 3.8 * fig.shape[0]    # one row of 4 upscaled cells
    t = T.load_translator(model)
    res = T.translate_image(t, images.read_rgb(photo), T.seed_styles(CFG, 5, 3))
    assert res.outputs.shape == (3, 16, 16, 3)
    assert len({o.tobytes() for o in res.outputs}) == 3                  # one face, three styles
    np.testing.assert_array_equal(T.seed_styles(CFG, 5, 3)[1], gnr.styles_from_seeds(CFG, [6])[0])
    np.testing.assert_array_equal(res.figure(), fig)


def test_style_from_a_reference_uses_the_b2a_encoder(model, photo, tmp_path, capsys):
    ref = tmp_path / "ref.png"
    images.write_png(ref, np.full((20, 20, 3), 200, np.uint8))
    out = tmp_path / "r.png"
    assert cli.main(["gnr", "translate", str(photo), "--no-align", "--model", str(model), "--out", str(out),
                     "--style-from", str(ref)]) == 0
    assert "reference's style" in capsys.readouterr().out
    t = T.load_translator(model)
    s = T.reference_style(t, images.read_rgb(ref))
    want = gnr.Generator(CFG).apply(gnr.network_vars(t.g_b2a_vars), np.full((1, 16, 16, 3), 200 / 127.5 - 1,
                                                                            np.float32),
                                    method=gnr.Generator.style_encode)
    np.testing.assert_allclose(s, want, atol=1e-5)
    lone = write_model(tmp_path / "noback", with_b2a=False)
    assert cli.main(["gnr", "translate", str(photo), "--no-align", "--model", str(lone), "--out", str(tmp_path / "x.png"),
                     "--style-from", str(ref)]) == 2
    assert "G_B2A" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_a_model_of_another_family_is_refused(photo, tmp_path, capsys):
    from nets import stylegan2
    sg = modelfile.save_model(tmp_path / "sg", stylegan2.init_model(stylegan2.preset("tiny"), jax.random.key(0)),
                              stylegan2.preset("tiny"))
    assert cli.main(["gnr", "translate", str(photo), "--model", str(sg), "--out", str(tmp_path / "o.png")]) == 2
    assert "needs a 'gnr' one" in capsys.readouterr().err


def test_sample_and_blend_work_on_gnr_model_files(model, tmp_path):
    assert cli.main(["sample", "--model", str(model), "--seeds", "0-3", "--out", str(tmp_path / "s.png")]) == 0
    assert images.read_rgb(tmp_path / "s.png").shape[2] == 3
    other = write_model(tmp_path / "other", seed=1)
    assert cli.main(["blend", str(model), str(other), "--swap", "8", "--out", str(tmp_path / "b")]) == 0
    _, cfg, g = registry.load_generator(tmp_path / "b", "gnr")
    _, _, g_low = registry.load_generator(model, "gnr")
    _, _, g_high = registry.load_generator(other, "gnr")
    np.testing.assert_array_equal(g["params"]["encoder"]["b4"]["content0"]["weight"],
                                  g_low["params"]["encoder"]["b4"]["content0"]["weight"])
    np.testing.assert_array_equal(g["params"]["decoder"]["b16"]["torgb"]["weight"],
                                  g_high["params"]["decoder"]["b16"]["torgb"]["weight"])
    np.testing.assert_array_equal(g["params"]["decoder"]["b4"]["conv1"]["weight"],
                                  g_low["params"]["decoder"]["b4"]["conv1"]["weight"])


# ---- video ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "in.mp4"
    rng = np.random.RandomState(0)
    base = rng.randint(0, 256, (24, 32, 3), np.uint8)
    with video.VideoWriter(path, 10.0) as w:
        for t in range(7):
            w.write(np.roll(base, t, axis=1))
    return path


@pytest.mark.parametrize("styles,mode,size", [(1, "fixed", (16, 16)), (4, "drift", None)])
def test_video_keeps_frame_count_and_rate(model, clip, tmp_path, styles, mode, size, capsys):
    out = tmp_path / f"o{styles}.mp4"
    assert cli.main(["gnr", "video", str(clip), str(out), "--model", str(model), "--styles", str(styles),
                     "--mode", mode, "--batch", "3"]) == 0
    assert "7 frames" in capsys.readouterr().out
    info = video.probe(out)
    assert info.frames == 7 and info.fps == pytest.approx(10.0)
    if size is not None:
        assert (info.width, info.height) == size
    else:
        assert info.width > 4 * info.height                               # a row of 5: the input in the middle


def test_fixed_codes_repeat_and_drift_codes_move_smoothly():
    fixed = T.video_codes(CFG, "fixed", 3, 2, 50, 25.0)
    assert fixed.shape == (50, 2, CFG.latent_dim)
    np.testing.assert_array_equal(fixed[0], fixed[-1])
    np.testing.assert_array_equal(fixed[0], T.seed_styles(CFG, 3, 2))   # the stills' styles of --seed 3
    drift = T.video_codes(CFG, "drift", 3, 2, 50, 25.0)
    step = np.mean(np.abs(np.diff(drift, axis=0)))
    assert 0 < step < 0.2 * np.mean(np.abs(drift))
    with pytest.raises(ValueError, match="mode"):
        T.video_codes(CFG, "beat", 3, 2, 50, 25.0)


def test_padded_batches_translate_like_single_frames(model):
    t = T.load_translator(model)
    codes = T.video_codes(CFG, "drift", 0, 2, 5, 10.0)
    frames = np.random.RandomState(2).randint(0, 256, (5, 16, 16, 3), np.uint8)
    batched = T.frame_translator(t, codes, 4)
    got = np.concatenate([batched(frames[:4], 0), batched(frames[4:], 4)])             # last batch padded
    one = T.frame_translator(t, codes, 1)
    want = np.concatenate([one(frames[i:i + 1], i) for i in range(5)])
    assert got.shape == (5, 2, 16, 16, 3)
    assert np.max(np.abs(got.astype(int) - want.astype(int))) <= 1


def test_an_unreadable_video_fails_cleanly(model, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    assert cli.main(["gnr", "video", str(bad), str(tmp_path / "o.mp4"), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert "bad.mp4" in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()


def test_consecutive_lpips_is_zero_for_a_still_and_grows_with_change():
    still = np.repeat(np.random.RandomState(0).randint(0, 256, (1, 32, 32, 3), np.uint8), 3, axis=0)
    assert T.consecutive_lpips(still) == pytest.approx(0.0, abs=1e-6)
    noisy = np.random.RandomState(1).randint(0, 256, (3, 32, 32, 3), np.uint8)
    assert T.consecutive_lpips(noisy) > 0.05
