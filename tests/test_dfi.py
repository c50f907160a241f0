"""Deep Feature Interpolation (interp/dfi.py) and the `gafu dfi` glue, on real LFW face crops bundled with skimage."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from interp import dfi, feature_commands as fc
from nets import images, vgg

skdata = pytest.importorskip("skimage.data")
SIZE = 48
CFG = dfi.PRESETS["authors"].replace(k=3, steps=8)

# Five attributes, eight people, in the exact LFW layout (tab-separated; names with spaces).
LFW_NAMES = ["Male", "Smiling", "Eyeglasses", "Mouth Slightly Open", "Senior"]
LFW_ROWS = [("Ann Lee", 1, [-1.2, 1.5, -0.9, 0.2, -1.0]),
            ("Bob Stone", 1, [1.4, -1.1, 0.7, -0.3, 0.8]),
            ("Bob Stone", 2, [1.3, 0.9, 0.6, -0.2, 0.9]),
            ("Cy Young", 1, [1.1, -0.6, -1.3, 0.4, -0.7]),
            ("Di Fox", 3, [-0.8, 0.4, -1.0, 0.1, -1.1]),       # Smiling 0.4: neither set (inside the margin)
            ("Ed Moss", 1, [1.0, 1.2, -1.1, 0.5, -0.6]),
            ("Flo Rida", 1, [-1.5, -1.4, -0.8, -0.4, -0.9]),
            ("Gus Hale", 12, [0.9, 2.0, 1.1, 0.0, 1.2])]


def write_lfw(path):
    lines = ["# Kumar et al. attributes (fixture)", "\t".join(["#", "person", "imagenum"] + LFW_NAMES)]
    lines += ["\t".join([p, str(n)] + [f"{v:.3f}" for v in vals]) for p, n, vals in LFW_ROWS]
    path.write_text("\n".join(lines) + "\n")


CELEBA = """4
5_o_Clock_Shadow Eyeglasses Male Smiling Young
000001.jpg -1 -1 -1  1  1
000002.jpg -1 -1  1 -1  1
000003.jpg  1  1  1  1 -1
000004.jpg -1 -1 -1 -1  1
"""


@pytest.fixture(scope="session")
def params():
    return vgg.vgg16_imagenet_params()


@pytest.fixture(scope="session")
def faces():
    """Twelve real LFW face crops, upsampled to SIZE, float 0..255 [12,SIZE,SIZE,3]."""
    from skimage.transform import resize
    f = skdata.lfw_subset()[:12]                                               # [12,25,25] grey in [0,1]
    up = np.stack([resize(a, (SIZE, SIZE), order=1) for a in f]) * 255.0
    return np.repeat(up[..., None], 3, axis=-1).astype(np.float32)


def psnr(a, b):
    return float(10 * np.log10(255.0 ** 2 / np.mean((np.asarray(a, np.float64) - b) ** 2)))


# ------------------------------------------------------------------------------------------------ attribute files


def test_read_lfw_and_celeba_files(tmp_path):
    write_lfw(tmp_path / "lfw_attributes.txt")
    kind, names, files, attrs = fc.read_attribute_file(tmp_path / "lfw_attributes.txt")
    assert kind == "lfw" and names == LFW_NAMES and attrs.shape == (8, 5)
    assert files[2] == "Bob_Stone/Bob_Stone_0002.jpg" and files[7] == "Gus_Hale/Gus_Hale_0012.jpg"
    np.testing.assert_allclose(attrs[1], LFW_ROWS[1][2], rtol=1e-6)
    (tmp_path / "celeba.txt").write_text(CELEBA)
    kind, names, files, attrs = fc.read_attribute_file(tmp_path / "celeba.txt")
    assert kind == "celeba" and names[3] == "Smiling" and files == [f"00000{i}.jpg" for i in range(1, 5)]
    np.testing.assert_array_equal(attrs[2], [1, 1, 1, 1, -1])
    (tmp_path / "short.txt").write_text(CELEBA.replace("4\n", "5\n", 1))
    with pytest.raises(ValueError, match=r"short\.txt: line 1 announces 5 images but 4 rows"):
        fc.read_attribute_file(tmp_path / "short.txt")
    (tmp_path / "bad.txt").write_text(CELEBA.replace("000003.jpg  1  1  1  1 -1", "000003.jpg 1 1"))
    with pytest.raises(ValueError, match=r"bad\.txt:5: expected a file name and 5 values; got 3 fields"):
        fc.read_attribute_file(tmp_path / "bad.txt")


def test_neighbour_selection_on_lfw_fixture(tmp_path):
    write_lfw(tmp_path / "a.txt")
    _, names, files, attrs = fc.read_attribute_file(tmp_path / "a.txt")
    cols = dfi.resolve_attributes(names, ["smiling"])
    src, tgt = dfi.attribute_masks(attrs, cols, margin=0.5)
    np.testing.assert_array_equal(np.flatnonzero(tgt), [0, 2, 5, 7])         # Di Fox (0.4) is in neither
    np.testing.assert_array_equal(np.flatnonzero(src), [1, 3, 6])
    query = 3                                                                  # Cy Young, not smiling
    dist = dfi.attribute_distance(attrs, attrs[query])
    s, t = dfi.select_neighbours(dist, src, tgt, k=2, exclude=query)
    ref = np.linalg.norm(attrs - attrs[query], axis=1)
    assert list(s) == sorted([1, 6], key=lambda i: ref[i])                    # never the query itself
    assert list(t) == sorted([0, 2, 5, 7], key=lambda i: ref[i])[:2]
    # several attributes at once, one of them negated; spaces and underscores are the same name
    cols = dfi.resolve_attributes(names, ["Smiling", "~Mouth_Slightly_Open"])
    assert cols == [(1, True), (3, False)]
    src, tgt = dfi.attribute_masks(attrs, cols, margin=0.1)
    np.testing.assert_array_equal(np.flatnonzero(tgt), [2])                   # smiling, mouth closed (-0.2)
    np.testing.assert_array_equal(np.flatnonzero(src), [3])                   # not smiling, mouth open (0.4)
    with pytest.raises(ValueError, match="unknown attribute 'Smile'"):
        dfi.resolve_attributes(names, ["Smile"])
    with pytest.raises(ValueError, match="no target"):
        dfi.select_neighbours(dist, src, np.zeros(8, bool), k=2)


def test_neighbour_selection_celeba_hamming(tmp_path):
    (tmp_path / "c.txt").write_text(CELEBA)
    _, names, _, attrs = fc.read_attribute_file(tmp_path / "c.txt")
    src, tgt = dfi.attribute_masks(attrs, dfi.resolve_attributes(names, ["Eyeglasses"]))
    assert list(np.flatnonzero(tgt)) == [2] and list(np.flatnonzero(src)) == [0, 1, 3]
    ham = dfi.attribute_distance(attrs, attrs[0], "hamming")
    np.testing.assert_array_equal(ham, [0, 2, 4, 1])
    # on +-1 values Euclidean distance is 2*sqrt(Hamming): the same ranking
    np.testing.assert_allclose(dfi.attribute_distance(attrs, attrs[0]), 2 * np.sqrt(ham), rtol=1e-6)
    s, _ = dfi.select_neighbours(ham, src, tgt, k=2, exclude=0)
    assert list(s) == [3, 1]


# ------------------------------------------------------------------------------------------------ the edit


@pytest.mark.parametrize("preset", ["authors", "chainer-dfi"])
def test_identical_sets_return_the_input(params, faces, preset):
    """S == T gives w = 0, so the target is phi(x) itself and the edit returns (near) the input."""
    cfg = dfi.PRESETS[preset].replace(k=3, steps=8)
    x = faces[0]
    m = dfi.feature_means(params, [faces[1:4], faces[4:7], faces[7:9]], cfg)
    out = dfi.edit(params, x, m, m, cfg, progress=False)[0]
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
    assert dfi.make_step(cfg)._cache_size() == 1                              # 8 steps, one compile
    # authors: only TV moves it a little; chainer-dfi: the drift of the plain reconstruction is subtracted
    assert psnr(out, x) > {"authors": 40, "chainer-dfi": 50}[preset]


def test_edit_moves_features_along_w(params, faces):
    x = faces[0]
    # batches of 3 and 2 images: the two programs that the CLI test below runs too
    mean_s = dfi.feature_means(params, [faces[1:4], faces[4:5]], CFG)
    mean_t = dfi.feature_means(params, [faces[6:9], faces[9:12]], CFG)
    # batching must not change the mean: same set, other batch split
    again = dfi.feature_means(params, [faces[6:8], faces[8:10], faces[10:12]], CFG)
    for t in dfi.DFI_TAPS:
        np.testing.assert_allclose(again[t], mean_t[t], rtol=2e-4, atol=1e-4 * float(np.abs(mean_t[t]).max()))
    scale = dfi.channel_scale(mean_s, mean_t, CFG)
    out = dfi.edit(params, x, mean_s, mean_t, CFG.replace(alphas=(0.4,)), progress=False)[0]
    # the features as edit() computes phi(x): the same jitted call, so its compiled program is reused
    phi = jax.jit(dfi._phi, static_argnums=3)
    px, pz = (phi(params, np.asarray(img, np.float32)[None], scale, "max") for img in (x, out))
    w = {t: (mean_t[t] - mean_s[t]) * scale[t] for t in dfi.DFI_TAPS}
    proj = sum(float(np.sum((np.asarray(pz[t][0]) - np.asarray(px[t][0])) * w[t])) for t in dfi.DFI_TAPS)
    assert proj > 0                                                           # towards T, away from S
    assert np.abs(out - x).max() >= 1.0                                       # and the picture did change


def test_feature_target_normalisations():
    rng = np.random.default_rng(0)
    shapes = {"relu3_1": (4, 4, 3), "relu4_1": (2, 2, 5), "relu5_1": (1, 1, 5)}
    ms = {t: rng.uniform(0, 1, s).astype(np.float32) for t, s in shapes.items()}
    mt = {t: rng.uniform(0, 1, s).astype(np.float32) for t, s in shapes.items()}
    px = {t: rng.uniform(0, 2, (1, *s)).astype(np.float32) for t, s in shapes.items()}
    one = {t: np.ones(s[-1], np.float32) for t, s in shapes.items()}
    d = np.concatenate([(mt[t] - ms[t]).ravel() for t in shapes])
    beta = dfi.feature_target(px, ms, mt, one, 0.4, CFG)
    got = np.concatenate([(beta[t] - px[t]).ravel() for t in shapes])
    np.testing.assert_allclose(got, 0.4 * d / np.mean(d ** 2), rtol=1e-5)    # authors: d / mean(d^2)
    per = dfi.feature_target(px, ms, mt, one, 0.3, CFG.replace(scaling="per-layer"))
    for t in shapes:                                                          # chainer-dfi: ||step|| = a*||phi||
        assert np.linalg.norm(per[t] - px[t]) == pytest.approx(0.3 * np.linalg.norm(px[t]), rel=1e-5)
    same = dfi.feature_target(px, ms, ms, one, 0.4, CFG)                      # S == T: no NaN, no move
    for t in shapes:
        np.testing.assert_array_equal(same[t], px[t])


def test_cached_means_and_cli(params, faces, tmp_path, capsys):
    """`gafu dfi` on a fixture LFW folder: neighbours, a cached second run, one PNG per alpha."""
    from PIL import Image

    from nets.cli import main
    root = tmp_path / "lfw"
    for (person, num, _), face in zip(LFW_ROWS, faces):
        name = person.replace(" ", "_")
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(face.astype(np.uint8)).save(root / name / f"{name}_{num:04d}.jpg", quality=95)
    write_lfw(tmp_path / "lfw_attributes.txt")
    argv = ["dfi", str(root / "Cy_Young" / "Cy_Young_0001.jpg"), "--attribute", "Smiling",
            "--attributes-file", str(tmp_path / "lfw_attributes.txt"), "--images", str(root), "--k", "3",
            "--size", str(SIZE), "--steps", "2", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out.png"), "--alpha", "0.2", "0.4"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "2 source / 3 target neighbours by euclidean attribute distance" in text
    assert "feature means computed" in text
    assert main(argv) == 0
    assert "feature means from cache" in capsys.readouterr().out
    for a in ("0.2", "0.4"):
        img = np.asarray(Image.open(tmp_path / f"out_a{a}.png"))
        assert img.shape == (3 * SIZE, 3 * SIZE, 3)                    # under 128 px: shown 3x (nearest)
        np.testing.assert_array_equal(img, images.upscale_nearest(img[None, ::3, ::3], 3 * SIZE)[0])
    assert len(list((tmp_path / "cache").glob("dfi-*.npz"))) == 1
    # a photo from outside the attribute file: neighbours by pixel distance instead
    import shutil
    shutil.copy(root / "Cy_Young" / "Cy_Young_0001.jpg", tmp_path / "me.jpg")
    assert main([argv[0], str(tmp_path / "me.jpg")] + argv[2:] + ["--no-cache", "--alpha", "0.4"]) == 0
    text = capsys.readouterr().out
    assert "3 source / 3 target neighbours by pixel distance" in text and (tmp_path / "out.png").is_file()
    # bad input: a clear message, exit status 2
    bad = argv[:3] + ["Smile"] + argv[4:]
    assert main(bad) == 2
    assert "unknown attribute 'Smile'" in capsys.readouterr().err
