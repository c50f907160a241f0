"""nets/align.py and `gafu align`, `--align` on project / toonify / gnr translate: dlib's real landmark model on
the astronaut photo, a generated two-face photo and faceless ones; landmark files; EXIF; the missing extra."""
import argparse
import json
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from skimage import data

from _tiny_generator import tiny_generator
from datasets.demo import ASTRONAUT_FACE_BOX
from nets import align as A
from nets import cli, flags, gnr, images, modelfile
from nets.stylegan2 import preset

needs_dlib = pytest.mark.skipif(not A.available(), reason="the align extra (dlib-bin, face-recognition-models) "
                                                          "is not installed: pip install -e '.[align]'")


def cell(png, i: int, res: int, pad: int = 2) -> np.ndarray:
    """Panel i of a one-row make_grid PNG of res px cells, back at res px (cells are nearest upscales)."""
    grid = np.asarray(Image.open(png))
    k = max(1, -(-images.VIEW_MIN // res))
    c = k * res
    return grid[pad:pad + c, pad + i * (c + pad):pad + i * (c + pad) + c][::k, ::k]


def to_crop(lm: np.ndarray, landmarks68: np.ndarray, res: int) -> np.ndarray:
    """Points [N,2] of the photo -> where the FFHQ quad of `landmarks68` puts them in a res px crop."""
    quad, _ = A.ffhq_quad(landmarks68)
    o, ex, ey = quad[0], quad[3] - quad[0], quad[1] - quad[0]        # top-left corner, right and down edges
    return np.stack([(lm - o) @ ex / (ex @ ex), (lm - o) @ ey / (ey @ ey)], -1) * res


@pytest.fixture(scope="module")
def astro():
    return data.astronaut()


@pytest.fixture(scope="module")
def faces(astro):
    return A.detect_faces(astro) if A.available() else None


@pytest.fixture(scope="module")
def two_faces(astro):
    """The astronaut's head twice on a grey canvas: 240 px on the right, 150 px on the left."""
    head = Image.fromarray(astro[10:250, 105:345])
    canvas = np.full((300, 560, 3), 200, np.uint8)
    canvas[30:270, 300:540] = np.asarray(head)
    canvas[80:230, 40:190] = np.asarray(head.resize((150, 150), Image.LANCZOS))
    return canvas


@pytest.fixture(scope="module")
def files(astro, two_faces, tmp_path_factory):
    d = tmp_path_factory.mktemp("align")
    faceless = np.random.RandomState(0).randint(0, 256, (120, 160, 3)).astype(np.uint8)
    return {"astro": images.write_png(d / "astronaut.png", astro, min_side=0),
            "two": images.write_png(d / "two.png", two_faces, min_side=0),
            "none": images.write_png(d / "noise.png", faceless, min_side=0)}


# ---- detection and the crop --------------------------------------------------------------------------------------

@needs_dlib
def test_astronaut_has_one_face_inside_the_demo_box(faces):
    assert len(faces) == 1                       # the mission patch on her suit (dlib score 0.12) is dropped
    lm = faces[0]
    assert lm.shape == (68, 2)
    eye_l, eye_r, mouth_l, mouth_r = A.key_points(lm)
    x0, y0, x1, y1 = ASTRONAUT_FACE_BOX
    for p in (eye_l, eye_r, mouth_l, mouth_r):
        assert x0 < p[0] < x1 and y0 < p[1] < y1
    assert eye_l[0] + 20 < eye_r[0] and mouth_l[0] + 20 < mouth_r[0]          # image-left first
    assert max(eye_l[1], eye_r[1]) + 20 < min(mouth_l[1], mouth_r[1])           # eyes above the mouth


@needs_dlib
def test_the_crop_puts_the_eyes_where_ffhq_does(astro, faces):
    crop = A.align_faces(astro, 256)[0]
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, A.align_landmarks(astro, faces[0], 256))
    # FFHQ's geometry: the quad is 4x the eye distance here (it exceeds 3.6x eye-mouth), so the eyes sit at 3/8
    # and 5/8 of the width, just above the middle (the quad is centred a tenth of the way to the mouth)
    eyes = to_crop(A.key_points(faces[0])[:2], faces[0], 256)
    np.testing.assert_allclose(eyes / 256, [[0.375, 0.479], [0.625, 0.479]], atol=0.01)
    # the warp really puts them there: dlib finds them again in the crop, level, within 2 px
    again = A.detect_faces(crop)
    assert len(again) == 1
    found = A.key_points(again[0])[:2]
    np.testing.assert_allclose(found, eyes, atol=2.0)
    assert abs(found[0, 1] - found[1, 1]) < 2.0


@needs_dlib
def test_two_faces_largest_first_face_k_and_all(two_faces):
    found = A.detect_faces(two_faces)
    assert len(found) == 2
    assert found[0][:, 0].min() > 300 and found[1][:, 0].max() < 190      # the big one (right) first
    big, small = (A.align_landmarks(two_faces, lm, 64) for lm in found)
    np.testing.assert_array_equal(A.align_faces(two_faces, 64)[0], big)
    np.testing.assert_array_equal(A.align_faces(two_faces, 64, face=1)[0], small)
    both = A.align_faces(two_faces, 64, all_faces=True)
    assert len(both) == 2
    np.testing.assert_array_equal(both[1], small)
    assert np.abs(big.astype(int) - small).mean() < 12          # one head at two scales: near the same crop
    with pytest.raises(A.AlignError, match=r"--face 2: photo two has 2 faces \(0 \.\. 1, largest first\)"):
        A.align_faces(two_faces, 64, face=2, what="photo two")


@needs_dlib
@pytest.mark.parametrize("image", [np.full((100, 140, 3), 128, np.uint8),
                                   np.random.RandomState(1).randint(0, 256, (100, 140, 3)).astype(np.uint8)])
def test_no_face_is_one_error_naming_the_source(image):
    assert A.detect_faces(image) == []
    with pytest.raises(A.AlignError, match=r"no face found in photo /x/me.jpg .*--landmarks FILE"):
        A.align_faces(image, 64, what="photo /x/me.jpg")


@needs_dlib
def test_exif_orientation_is_honoured(astro, tmp_path):
    upright, turned = tmp_path / "upright.jpg", tmp_path / "turned.jpg"
    Image.fromarray(astro).save(upright, quality=100, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = 6                                       # "rotate 90 degrees clockwise to display"
    Image.fromarray(astro).transpose(Image.ROTATE_90).save(turned, quality=100, subsampling=0, exif=exif)
    shown = images.read_rgb(turned)
    assert shown.shape == astro.shape
    a, b = (A.align_faces(images.read_rgb(p), 128)[0].astype(int) for p in (upright, turned))
    assert np.abs(a - b).mean() < 3.0                      # the same face, up to JPEG noise of the two layouts
    # the stored (sideways) pixels give another crop: the test can tell the two apart
    raw = np.asarray(Image.open(turned).convert("RGB"))
    found = A.detect_faces(raw)
    assert not found or np.abs(A.align_landmarks(raw, found[0], 128).astype(int) - a).mean() > 10


# ---- landmark files ---------------------------------------------------------------------------------------------

def five_of(lm68: np.ndarray) -> np.ndarray:
    """The 5-point convention from 68 points: eye centres, nose tip, mouth corners (image-left first)."""
    eye_l, eye_r, mouth_l, mouth_r = A.key_points(lm68)
    return np.stack([eye_l, eye_r, lm68[A.NOSE_TIP], mouth_l, mouth_r])


def test_landmark_files_in_three_formats(tmp_path):
    pts = np.random.RandomState(0).uniform(0, 100, (68, 2))
    (tmp_path / "a.txt").write_text("# x y\n" + "\n".join(f"{x} {y}" for x, y in pts) + "\n\n")
    (tmp_path / "a.csv").write_text("\n".join(f"{x},{y}" for x, y in five_of(pts)))
    (tmp_path / "a.json").write_text(json.dumps(pts.tolist()))
    np.save(tmp_path / "a.npy", five_of(pts))
    np.testing.assert_allclose(A.read_landmarks(tmp_path / "a.txt"), pts, rtol=1e-12)
    np.testing.assert_allclose(A.read_landmarks(tmp_path / "a.csv"), five_of(pts), rtol=1e-12)
    np.testing.assert_array_equal(A.read_landmarks(tmp_path / "a.json"), pts)
    np.testing.assert_array_equal(A.read_landmarks(tmp_path / "a.npy"), five_of(pts))


@pytest.mark.parametrize("name, text, msg", [
    ("four.txt", "1 2\n3 4\n5 6\n7 8\n", r"four.txt holds 4 points .*expected 68 \(iBUG\) or 5"),
    ("three.txt", "1 2 3\n" * 5, r"three.txt holds 5 points of shape \[5, 3\]"),
    ("word.txt", "1 2\nleft eye\n", r"cannot read landmark file .*word.txt"),
    ("nan.txt", "nan 1\n" * 5, r"nan.txt holds non-finite coordinates"),
    ("bad.json", "{\"x\": 1}", r"cannot read landmark file .*bad.json"),
])
def test_bad_landmark_files_name_the_file(tmp_path, name, text, msg):
    (tmp_path / name).write_text(text)
    with pytest.raises(A.AlignError, match=msg):
        A.read_landmarks(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="landmark file .*none.txt does not exist"):
        A.read_landmarks(tmp_path / "none.txt")


def test_landmarks_outside_the_photo_or_degenerate_are_refused():
    img = np.zeros((50, 60, 3), np.uint8)
    five = np.array([[20., 20], [40, 20], [30, 30], [22, 40], [38, 40]])
    with pytest.raises(A.AlignError, match=r"for photo p put the eyes or mouth outside its 60x50 pixels"):
        A.align_faces(img, 32, landmarks=five + [0, 20], what="photo p")
    with pytest.raises(A.AlignError, match="degenerate"):
        A.align_faces(img, 32, landmarks=np.array([[20., 20], [20, 20], [30, 30], [22, 40], [38, 40]]))
    with pytest.raises(A.AlignError, match="--landmarks gives one face's points"):
        A.align_faces(img, 32, landmarks=five, face=0)
    with pytest.raises(A.AlignError, match="aligned resolution must be an integer in 1 .. 4096; got 0"):
        A.align_faces(img, 0, landmarks=five)


@needs_dlib
def test_five_and_68_given_points_give_the_detected_crop(astro, faces, tmp_path):
    lm = faces[0]
    want = A.align_landmarks(astro, lm, 64)
    (tmp_path / "five.txt").write_text("\n".join(f"{x} {y}" for x, y in five_of(lm)))
    np.save(tmp_path / "all.npy", lm)
    # the procedure reads only the eye centres and mouth corners, so 5 points give the very same pixels
    for f in ("five.txt", "all.npy"):
        np.testing.assert_array_equal(A.align_faces(astro, 64, landmarks=str(tmp_path / f))[0], want)


# ---- the missing extra --------------------------------------------------------------------------------------------

@pytest.fixture
def no_extra(monkeypatch):
    """Neither dlib nor the model file: as without `pip install 'gafu[align]'`."""
    monkeypatch.setitem(sys.modules, "dlib", None)            # `import dlib` raises ImportError
    monkeypatch.setattr(A.importlib.util, "find_spec", lambda name, *a: None)
    A._models.cache_clear()
    yield
    A._models.cache_clear()


def test_missing_extra_is_one_error_naming_it(no_extra, astro, files, tmp_path, capsys):
    assert not A.available()
    with pytest.raises(A.AlignError, match=r"face alignment needs dlib: install the align extra, "
                                           r"pip install 'gafu\[align\]'"):
        A.detect_faces(astro)
    assert cli.main(["align", str(files["astro"]), "--out", str(tmp_path / "a.png")]) == 2
    assert "gafu align: error: face alignment needs dlib" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()


def test_use_align_defaults_to_the_extra(no_extra, capsys):
    ns = dict(align=None, face=None, landmarks=None)
    assert flags.use_align(argparse.Namespace(**ns), "toonify") is False
    err = capsys.readouterr().err
    assert err.startswith("gafu toonify: note: no face alignment (pip install 'gafu[align]'") and "FFHQ" in err
    assert flags.use_align(argparse.Namespace(**{**ns, "align": True}), "toonify") is True
    assert flags.use_align(argparse.Namespace(**{**ns, "face": 1}), "toonify") is True
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="do not go with --no-align"):
        flags.use_align(argparse.Namespace(**{**ns, "align": False, "face": 1}), "toonify")


# ---- `gafu align` -------------------------------------------------------------------------------------------------

@needs_dlib
def test_cli_align_one_face_all_faces_and_none(astro, faces, files, tmp_path, capsys):
    out = tmp_path / "face.png"
    assert cli.main(["align", str(files["astro"]), "--out", str(out), "--resolution", "128"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    np.testing.assert_array_equal(images.read_rgb(out), A.align_landmarks(astro, faces[0], 128))
    assert cli.main(["align", str(files["astro"]), "--out", str(out)]) == 2           # no --overwrite
    assert "face.png already exists" in capsys.readouterr().err

    stem = tmp_path / "two.png"
    assert cli.main(["align", str(files["two"]), "--out", str(stem), "--resolution", "128", "--all-faces"]) == 0
    printed = capsys.readouterr().out
    assert "two_0.png" in printed and "two_1.png" in printed and not stem.exists()
    assert cli.main(["align", str(files["two"]), "--out", str(tmp_path / "k.png"), "--resolution", "128",
                     "--face", "1"]) == 0
    np.testing.assert_array_equal(images.read_rgb(tmp_path / "k.png"), images.read_rgb(tmp_path / "two_1.png"))

    assert cli.main(["align", str(files["none"]), "--out", str(tmp_path / "n.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gafu align: error: no face found in photo {files['none']}") and err.count("\n") == 1
    # the detector's misses are rescued with the face's points
    (tmp_path / "lm.txt").write_text("50 40\n90 40\n70 60\n55 80\n85 80\n")
    assert cli.main(["align", str(files["none"]), "--out", str(tmp_path / "n.png"), "--landmarks",
                     str(tmp_path / "lm.txt"), "--resolution", "64"]) == 0
    assert images.read_rgb(tmp_path / "n.png").shape == (64, 64, 3)        # written at its own size
    with pytest.raises(SystemExit):                             # argparse's one-line usage error
        cli.main(["align", str(files["astro"]), "--out", str(tmp_path / "x.png"), "--face", "0", "--all-faces"])
    assert "argument --all-faces: not allowed with argument --face" in capsys.readouterr().err


# ---- --align on project / toonify / gnr translate ----------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("align_models")
    cfg = preset("tiny", conv_impl="xla")                 # 32 px, as tests/test_toonify.py
    gcfg = gnr.GNRConfig(resolution=16, num_down=2, channel_base=128, channel_max=16, style_dim=16, n_mlp=2,
                         local_res=4, global_res=4, diversity_features=8, latent_d_width=16)
    sg = modelfile.save_model(d / "sg", {"G": tiny_generator()}, cfg)
    g = modelfile.save_model(d / "gnr", {"G": gnr.init_model(gcfg, jax.random.key(0))["G"]}, gcfg, arch="gnr")
    return {"sg": str(sg), "gnr": str(g)}


@needs_dlib
def test_align_on_project_toonify_and_gnr_translate(astro, faces, files, models, tmp_path, capsys):
    photo, sg = str(files["astro"]), models["sg"]
    d = tmp_path / "proj"
    assert cli.main(["project", photo, "--model", sg, "--out-dir", str(d), "--steps", "2", "--quiet"]) == 0
    want32 = A.align_landmarks(astro, faces[0], 32)
    np.testing.assert_array_equal(cell(d / "proj.png", 0, 32), want32)          # on by default with the extra

    toon = tmp_path / "toon.png"
    argv = ["toonify", photo, "--base", sg, "--blended", sg, "--latent", str(d / "projected_w.npz"), "--quiet"]
    assert cli.main(argv + ["--out", str(toon), "--align"]) == 0
    np.testing.assert_array_equal(cell(toon, 0, 32), want32)
    assert cli.main(argv + ["--out", str(tmp_path / "plain.png"), "--no-align"]) == 0
    from interp.toonify import prepare_photo
    np.testing.assert_array_equal(cell(tmp_path / "plain.png", 0, 32), prepare_photo(astro, 32))

    out = tmp_path / "gnr.png"
    assert cli.main(["gnr", "translate", photo, "--model", models["gnr"], "--out", str(out), "--styles", "2"]) == 0
    np.testing.assert_array_equal(cell(out, 0, 16), A.align_landmarks(astro, faces[0], 16))
    capsys.readouterr()

    # errors come before any projection, naming the file; --face without alignment is refused
    assert cli.main(["project", str(files["none"]), "--model", sg, "--out-dir", str(tmp_path / "p2")]) == 2
    assert f"no face found in photo {files['none']}" in capsys.readouterr().err
    assert cli.main(["project", photo, "--model", sg, "--out-dir", str(tmp_path / "p3"), "--face", "1"]) == 2
    assert "has 1 face" in capsys.readouterr().err
    assert cli.main(argv + ["--out", str(tmp_path / "t3.png"), "--no-align", "--face", "0"]) == 2
    assert "do not go with --no-align" in capsys.readouterr().err
    assert not (tmp_path / "p2").exists() and not (tmp_path / "p3" / "proj.png").exists()


# ---- parity with NVlabs/ffhq-dataset ------------------------------------------------------------------------------

# recreate_aligned_images (NVlabs/ffhq-dataset download_ffhq.py, run with Pillow 12.3 / numpy 2.2 / scipy 1.17,
# ANTIALIAS -> LANCZOS) on the astronaut photo and dlib's landmarks for it, at 64 px: the mean colour of each
# quarter of its crop (rows top, bottom; columns left, right). `edge` is the photo cut at (150, 60) so the quad
# leaves it (the reflect-pad path), `big` the photo Lanczos-resized to 2048 px, landmarks x4 (the shrink path).
REFERENCE_64 = {
    "astro": [[[157.71, 138.62, 112.89], [141.42, 123.49, 96.36]],
              [[153.73, 136.18, 124.06], [180.86, 160.92, 147.15]]],
    "edge": [[[150.26, 125.88, 95.09], [133.43, 113.32, 86.12]],
             [[152.29, 134.51, 121.56], [180.86, 160.92, 147.15]]],
    "big": [[[157.65, 138.56, 112.8], [141.3, 123.33, 96.16]],
            [[153.76, 136.23, 124.13], [180.86, 160.93, 147.13]]],
}


@needs_dlib
@pytest.mark.slow
def test_crops_match_the_reference_script(astro, faces):
    lm = faces[0]
    cases = {"astro": (astro, lm), "edge": (astro[60:, 150:], lm - [150, 60]),
             "big": (np.asarray(Image.fromarray(astro).resize((2048, 2048), Image.LANCZOS)), lm * 4)}
    for name, (img, pts) in cases.items():
        crop = A.align_landmarks(img, pts, 64).astype(np.float64)
        quarters = crop.reshape(2, 32, 2, 32, 3).mean((1, 3))
        np.testing.assert_allclose(quarters, REFERENCE_64[name], atol=0.01, err_msg=name)
