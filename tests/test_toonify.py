"""interp.toonify and `gafu project` / `gafu toonify` end to end on a tiny generator and a real photo.

The library call, the CLI with on-the-fly blending, and the CLI with a blended model file are checked against each
other panel by panel; the toon must be the projected ws rendered through the blended model's own noise maps.
"""
import re

import jax
import numpy as np
import pytest

from _tiny_generator import tiny_generator
from PIL import Image
from skimage import data

from interp import project as P
from interp import toonify as T
from nets import images, lpips
from nets.cli import main
from nets.modelfile import save_model
from nets.stylegan2 import preset

CFG = preset("tiny", conv_impl="xla")              # as tests/test_project.py: one compile of the projector
PC = P.ProjectConfig(steps=30, w_plus=True)        # = what `--steps 30 --space w+` builds
R, PAD = 32, 2                                     # make_grid's default padding
K = images.VIEW_MIN // R                           # the figure's cells are R px models' pixels repeated K x K


def panels(png, n: int) -> list[np.ndarray]:
    """Split a one-row make_grid PNG into its n [R,R,3] panels (its cells are K-fold nearest upscales)."""
    grid = np.asarray(Image.open(png))
    c = K * R
    assert grid.shape == (c + 2 * PAD, n * (c + PAD) + PAD, 3)
    cells = [grid[PAD:PAD + c, PAD + i * (c + PAD):PAD + i * (c + PAD) + c] for i in range(n)]
    for cell in cells:                                   # every model pixel is one K x K square
        np.testing.assert_array_equal(cell, images.upscale_nearest(cell[None, ::K, ::K], c)[0])
    return [cell[::K, ::K] for cell in cells]


@pytest.fixture(scope="module")
def models():
    """Base A; transfer B = A 'fine-tuned' (every weight moved) with noise maps of its own."""
    a = tiny_generator()
    rng = np.random.RandomState(1)
    b = {"params": jax.tree.map(lambda x: x + np.asarray(0.5 * rng.randn(*x.shape), x.dtype), a["params"]),
         "buffers": {**a["buffers"], "synthesis": jax.tree.map(lambda x: np.asarray(rng.randn(*x.shape), x.dtype),
                                                                 a["buffers"]["synthesis"])}}
    return a, b


@pytest.fixture(scope="module")
def files(models, tmp_path_factory):
    d = tmp_path_factory.mktemp("toonify")
    a, b = models
    out = {"A": save_model(d / "A", {"G": a}, CFG), "B": save_model(d / "B", {"G": b}, CFG),
           # configs that do not fit A (the checks fire before the variables are used)
           "W16": save_model(d / "W16", {"G": a}, preset("tiny", w_dim=16, conv_impl="xla")),
           "R16": save_model(d / "R16", {"G": a}, preset("tiny", resolution=16, conv_impl="xla")),
           "photo": images.write_png(d / "astronaut.png", data.astronaut())}
    return {k: str(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def lib_result(models):
    """The library pipeline on arrays and trees only: no files."""
    a, b = models
    blended = T.blend_for_toonify(a, b, 8)
    return T.toonify(data.astronaut(), CFG, a, CFG, blended, PC, lpips_params=lpips.lpips_params(),
                     progress=False), blended


# ---- photos ----------------------------------------------------------------------------------------------------

def test_prepare_photo_crops_the_centre_square():
    img = np.random.RandomState(0).randint(0, 256, (40, 60, 3)).astype(np.uint8)
    np.testing.assert_array_equal(T.prepare_photo(img, 40), img[:, 10:50])
    np.testing.assert_array_equal(T.prepare_photo(img.transpose(1, 0, 2), 40), img.transpose(1, 0, 2)[10:50])
    small = T.prepare_photo(data.astronaut(), 32)
    assert small.shape == (32, 32, 3) and small.dtype == np.uint8
    np.testing.assert_allclose(small.mean((0, 1)), data.astronaut().mean((0, 1)), atol=4)   # colours kept


def test_prepare_photo_channels_and_errors():
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(T.prepare_photo(grey, 4), np.repeat(grey[..., None], 3, -1))
    rgba = np.random.RandomState(1).randint(0, 256, (4, 4, 4)).astype(np.uint8)
    np.testing.assert_array_equal(T.prepare_photo(rgba, 4), rgba[..., :3])
    with pytest.raises(ValueError, match="uint8; got float32"):
        T.prepare_photo(np.zeros((4, 4, 3), np.float32), 4)
    with pytest.raises(ValueError, match=r"got shape \[4, 4, 2\]"):
        T.prepare_photo(np.zeros((4, 4, 2), np.uint8), 4)


def test_read_photo(tmp_path):
    cat = data.chelsea()                                                   # 300 x 451, not square
    images.write_png(tmp_path / "cat.png", cat)
    np.testing.assert_array_equal(images.read_rgb(tmp_path / "cat.png", "photo"), cat)
    with pytest.raises(FileNotFoundError, match="nope.jpg does not exist"):
        images.read_rgb(tmp_path / "nope.jpg", "photo")
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read photo .*bad.jpg"):
        images.read_rgb(tmp_path / "bad.jpg", "photo")


# ---- the pipeline ----------------------------------------------------------------------------------------------

def test_toonify_library_renders_the_projection_through_the_blend(lib_result, models):
    res, blended = lib_result
    a, _ = models
    np.testing.assert_array_equal(res.target, T.prepare_photo(data.astronaut(), R))
    assert res.ws.shape == (1, CFG.num_ws, CFG.w_dim) and res.projected is not None
    assert res.projected.lpips_final < res.projected.lpips_start
    np.testing.assert_array_equal(res.projection, res.projected.image)
    # the toon: projected ws through the blended synthesis with the blended model's own const noise
    np.testing.assert_array_equal(res.toon, T.render_latent(CFG, blended, res.ws))
    assert np.abs(res.toon.astype(int) - res.projection).mean() > 5      # the transfer blocks changed the image
    # blend_models takes the noise maps (and b4..b8) from the base
    for x, y in zip(jax.tree.leaves(blended["buffers"]), jax.tree.leaves(a["buffers"])):
        np.testing.assert_array_equal(x, y)
    # given ws: no projection, the projection panel is ws through the base with its own noise
    again = T.toonify(data.astronaut(), CFG, a, CFG, blended, PC, ws=res.ws)
    assert again.projected is None
    np.testing.assert_array_equal(again.toon, res.toon)
    np.testing.assert_array_equal(again.projection, T.render_latent(CFG, a, res.ws))


def test_cli_toonify_end_to_end(lib_result, models, files, tmp_path, capsys):
    res, _ = lib_result
    photo, a, b = files["photo"], files["A"], files["B"]
    out = tmp_path / "toon.png"
    rc = main(["toonify", photo, "--no-align", "--base", a, "--transfer", b, "--resolution", "8", "--out", str(out),
               "--steps", "30", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "LPIPS" in printed and f"wrote {out}" in printed
    target, projection, toon = panels(out, 3)
    ws = P.load_latent(tmp_path / "toon_w.npz", CFG)                       # default --latent-out
    np.testing.assert_array_equal(target, res.target)                     # the PNG round trip is lossless
    np.testing.assert_allclose(ws, res.ws, rtol=1e-5, atol=1e-6)           # CLI == library call
    np.testing.assert_array_equal(projection, res.projection)
    np.testing.assert_array_equal(toon, res.toon)

    # blend to a file with `gafu blend`, then reuse the latent: the same toon, no projection
    blended = tmp_path / "C"
    assert main(["blend", a, b, "--toonify", "8", "--out", str(blended)]) == 0
    out2 = tmp_path / "toon2.png"
    assert main(["toonify", photo, "--no-align", "--base", a, "--blended", str(blended), "--latent",
                 str(tmp_path / "toon_w.npz"), "--out", str(out2), "--quiet"]) == 0
    target2, projection2, toon2 = panels(out2, 3)
    np.testing.assert_array_equal(target2, target)
    np.testing.assert_array_equal(toon2, toon)
    np.testing.assert_array_equal(projection2, T.render_latent(CFG, models[0], ws))   # base's own noise maps
    assert not (tmp_path / "toon2_w.npz").exists()


def test_cli_project(lib_result, files, tmp_path, capsys):
    res, _ = lib_result
    d = tmp_path / "proj"
    assert main(["project", files["photo"], "--no-align", "--model", files["A"], "--out-dir", str(d), "--steps", "30",
                 "--space", "w+", "--quiet"]) == 0
    assert "LPIPS" in capsys.readouterr().out
    target, projection = panels(d / "proj.png", 2)
    np.testing.assert_array_equal(target, res.target)
    np.testing.assert_allclose(P.load_latent(d / "projected_w.npz", CFG), res.ws, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(projection, res.projection)
    # outputs are not replaced without --overwrite
    assert main(["project", files["photo"], "--model", files["A"], "--out-dir", str(d), "--quiet"]) == 2
    assert "proj" in capsys.readouterr().err


@pytest.mark.parametrize("args, msg", [
    (["--transfer", "{B}"], "--transfer needs --resolution R"),
    (["--transfer", "{B}", "--resolution", "64"], r"resolution 64 is not a block resolution of this model; "
                                                  r"valid: \[4, 8, 16, 32\]"),
    (["--transfer", "{W16}", "--resolution", "8"], r"base .*A and transfer .*W16 have different model configs "
                                                   r"\(w_dim: 32 vs 16\)"),
    (["--blended", "{R16}"], r"takes ws \[1, 6, 32\] \(16 px\) but the base model's latents are \[1, 8, 32\]"),
    (["--blended", "{B}", "--resolution", "8"], "--resolution, --level and --blend-width apply to --transfer"),
    (["--blended", "{B}", "--latent", "{photo}"], "astronaut.png is not a readable .npz"),
])
def test_cli_toonify_errors_before_projecting(files, tmp_path, capsys, args, msg):
    argv = ["toonify", files["photo"], "--base", files["A"], "--out", str(tmp_path / "t.png")]
    assert main(argv + [a.format(**files) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gafu toonify: error: ")
    assert re.search(msg, err), err
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "t_w.npz").exists()


def test_cli_missing_inputs(files, tmp_path, capsys):
    assert main(["toonify", str(tmp_path / "me.jpg"), "--base", files["A"], "--blended", files["B"],
                 "--out", str(tmp_path / "t.png")]) == 2
    assert "photo" in capsys.readouterr().err
    assert main(["project", files["photo"], "--model", str(tmp_path / "none"), "--out-dir", str(tmp_path)]) == 2
    assert "none does not exist" in capsys.readouterr().err
