"""`gafu spade paint` and interp/paint.py on tiny SPADE model files; `gafu blend` / `gafu sample` on SPADE files.

The model trees have init_model's exact structure (jax.eval_shape, no compile) filled with numpy values: xavier
(gain 1) kernels, random running statistics and the kernels' own singular vectors as spectral u, v, i.e. what a
trained file holds. init_model's jitted init costs 20-80 s on a busy 2-core CPU; the painting program is the same.
"""
import re

import jax
import numpy as np
import pytest
from flax import traverse_util
from PIL import Image

from datasets.sketch import rough_sketch
from interp import paint as P
from interp.toonify import prepare_photo
from nets import cli, images, modelfile, paths, spade
from nets.stylegan2 import preset as sg2_preset

CFG = spade.preset("tiny", vae=True, rough_size=64)        # 32 px, roughs made at 64 px as its training data
R, SEEDS = CFG.resolution, [0, 1, 0]                         # one batch size throughout: one compiled program
CELL = 128                                                   # 32 px cells upscaled x4 in the figure


@pytest.fixture(scope="module", autouse=True)
def _rank_promotion_allowed():
    """nets/spade.py adds [C] biases to [..., C] activations (Conv, Linear), which conftest's
    jax_numpy_rank_promotion='raise' refuses; drop this once nets/spade.py broadcasts them explicitly."""
    with jax.numpy_rank_promotion("allow"):
        yield


def random_model(cfg: spade.SPADEConfig, seed: int, n_previews: int = 4) -> dict:
    """Model-file variables {"G" (with previews), "D", "E"} of init_model's structure with random values."""
    shapes = traverse_util.flatten_dict(jax.eval_shape(lambda k: spade.init_model(cfg, k), jax.random.key(0)))
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in shapes.items():
        if k[1] == "params" and k[-1] == "kernel":                    # xavier normal, gain 1 ([k,k,I,O] / [I,O])
            field = int(np.prod(s.shape[:-2])) if len(s.shape) == 4 else 1
            out[k] = rng.normal(0, np.sqrt(2 / (field * (s.shape[-2] + s.shape[-1]))), s.shape)
        elif k[1] == "params":
            out[k] = rng.normal(0, 0.1, s.shape)
        elif k[1] == "batch_stats":
            out[k] = rng.normal(0, 0.1, s.shape) if k[-1] == "mean" else rng.uniform(0.5, 1.5, s.shape)
    for k in (k for k in shapes if k[1] == "spectral"):                 # converged power iteration: top pair
        w = out[(k[0], "params", *k[2:-1], "kernel")]
        u, _, vt = np.linalg.svd(np.transpose(w, (3, 2, 0, 1)).reshape(w.shape[-1], -1), full_matrices=False)
        out[k] = u[:, 0] if k[-1] == "u" else vt[0]
    tree = traverse_util.unflatten_dict({k: np.asarray(v, np.float32) for k, v in out.items()})
    tree["G"][paths.PREVIEWS] = {"cond": np.stack([block_rough(rng) for _ in range(n_previews)])}
    return tree


def block_rough(rng: np.random.Generator, blocks: int = 4) -> np.ndarray:
    """A flat-colour rough uint8 [R,R,3]: blocks x blocks patches of random colours."""
    colours = rng.integers(0, 256, (blocks, blocks, 3), dtype=np.uint8)
    return np.kron(colours, np.ones((R // blocks, R // blocks, 1), np.uint8))


def photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth synthetic picture uint8 [h,w,3] (gradients and a disc) that the rough maker flattens."""
    y, x = np.mgrid[:h, :w] / max(h, w)
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.3, 1.0, 2)
    disc = (x - a / 2) ** 2 + (y - b / 2) ** 2 < 0.08
    rgb = np.stack([200 * x + 40 * disc, 180 * y, 120 + 100 * disc], -1) + rng.normal(0, 6, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("spade")
    low, high = random_model(CFG, 0), random_model(CFG, 1)
    modelfile.save_model(d / "low", low, CFG, arch="spade", meta={"seed": 0})
    modelfile.save_model(d / "high", high, CFG, arch="spade", meta={"seed": 1})
    novae = spade.preset("tiny", rough_size=64)                # the same G and D, no encoder
    modelfile.save_model(d / "novae", {"G": low["G"], "D": low["D"]}, novae, arch="spade")
    g_bare = {k: v for k, v in low["G"].items() if k != paths.PREVIEWS}
    modelfile.save_model(d / "noenc", {"G": g_bare, "D": low["D"]}, CFG, arch="spade")   # vae, but no E, no previews
    modelfile.save_model(d / "sg2", {"G": {"params": {"x": np.zeros(2, np.float32)}}}, sg2_preset("tiny"))
    rng = np.random.default_rng(7)
    for name, img in (("photo.png", photo(40, 56, 0)), ("style.png", photo(48, 48, 1)),
                      ("style2.png", photo(36, 30, 2)), ("rough.png", block_rough(rng)),
                      ("rough48.png", np.zeros((48, 48, 3), np.uint8))):
        images.write_png(d / name, img, min_side=0)      # inputs at their own size
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    return d


@pytest.fixture(scope="module")
def painter(files):
    return P.load_painter(files / "low")


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def cells(grid: np.ndarray, n: int, size: int = CELL) -> list[np.ndarray]:
    """The n cells of a one-row make_grid figure (pad 2), each downsampled back to R px (every k-th pixel)."""
    assert grid.shape == (size + 4, n * (size + 2) + 2, 3), grid.shape
    k = size // R
    return [grid[2:2 + size, 2 + i * (size + 2):2 + i * (size + 2) + size][::k, ::k] for i in range(n)]


# -- the library ----------------------------------------------------------------------------------------------------
def test_seeds_paint_different_pictures_and_a_seed_repeats_exactly(painter, files):
    rough = images.read_rgb(files / "rough.png")
    res = P.paint_figure(painter.cfg, painter.g_vars, rough, SEEDS)
    assert res.paintings.shape == (3, R, R, 3) and res.paintings.dtype == np.uint8 and res.style is None
    np.testing.assert_array_equal(res.paintings[0], res.paintings[2])                        # seed 0 twice
    assert np.abs(res.paintings[0].astype(int) - res.paintings[1]).mean() > 2                # seed 1 differs
    again = P.paint_figure(painter.cfg, painter.g_vars, rough, SEEDS)
    np.testing.assert_array_equal(again.paintings, res.paintings)
    # the prior's z: seed s's N(0, I) from RandomState(s), as spade.paint draws it
    np.testing.assert_array_equal(res.z[1], np.random.RandomState(1).randn(CFG.z_dim).astype(np.float32))
    np.testing.assert_array_equal(res.paintings, spade.paint(CFG, painter.g_vars, np.stack([rough] * 3), SEEDS))
    fig = res.figure()
    got = cells(fig, 4)
    np.testing.assert_array_equal(got[0], rough)
    for i in range(3):
        np.testing.assert_array_equal(got[1 + i], res.paintings[i])
    np.testing.assert_array_equal(fig[2:2 + CELL, 2:2 + CELL], images.upscale_nearest(rough[None], CELL)[0])


def test_the_rough_is_the_datasets_rough_of_the_prepared_photo(files):
    img = images.read_rgb(files / "photo.png")                                                # 56 x 40
    rough = P.rough_from_photo(img, CFG, rough_sketch)
    want = rough_sketch(prepare_photo(img, R), work_size=CFG.rough_size)
    np.testing.assert_array_equal(rough, want)
    assert rough.shape == (R, R, 3)
    assert not np.array_equal(rough, rough_sketch(prepare_photo(img, R), work_size=32))    # the work size counts
    with pytest.raises(ValueError, match=r"the rough made from the photo is 16x16 but the model paints 32x32"):
        P.rough_from_photo(img, CFG, lambda x, work: x[:16, :16])


def test_style_sets_z_through_the_encoder_deterministically(painter, files):
    rough, style = images.read_rgb(files / "rough.png"), images.read_rgb(files / "style.png")
    paint = lambda s, psi=1.0: P.paint_figure(CFG, painter.g_vars, rough, SEEDS, style=s,  # noqa: E731
                                              e_vars=painter.e_vars, psi=psi)
    a, a2, b = paint(style), paint(style), paint(images.read_rgb(files / "style2.png"))
    np.testing.assert_array_equal(a.paintings, a2.paintings)
    np.testing.assert_array_equal(a.paintings[0], a.paintings[2])
    prior = P.paint_figure(CFG, painter.g_vars, rough, SEEDS)
    for other in (b, prior):
        assert np.abs(a.paintings.astype(int) - other.paintings).mean() > 1
    # z = mu + psi * exp(logvar / 2) * eps_seed, mu and logvar of the style prepared to R
    np.testing.assert_array_equal(a.style, prepare_photo(style, R))
    mu, logvar = (np.asarray(t) for t in spade.encode_fn(CFG)(painter.e_vars, spade.to_float(a.style[None])))
    eps = np.stack([np.random.RandomState(s).randn(CFG.z_dim) for s in SEEDS])
    np.testing.assert_allclose(a.z, mu + np.exp(0.5 * logvar) * eps, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.paintings, spade.paint(CFG, painter.g_vars, np.stack([rough] * 3), SEEDS, z=a.z))
    at_mu = paint(style, psi=0.0)
    np.testing.assert_array_equal(at_mu.z, np.repeat(mu, 3, axis=0))                         # psi 0: mu itself
    np.testing.assert_array_equal(at_mu.paintings[0], at_mu.paintings[1])                    # tiny has no noise
    got = cells(a.figure(), 5)
    np.testing.assert_array_equal(got[4], a.style)                                           # ... | reference


# -- gafu spade paint -----------------------------------------------------------------------------------------------
def test_cli_paints_a_photo_a_rough_and_a_style(painter, files, capsys):
    out = files / "photo_fig.png"
    rc, stdout, err = run(capsys, "spade", "paint", files / "photo.png", "--model", files / "low", "--out", out,
                          "--seeds", "0,1,0")
    assert rc == 0, err
    assert stdout == f"wrote {out} (rough | 3 paintings)\n"
    got = cells(np.asarray(Image.open(out)), 4)
    rough = rough_sketch(prepare_photo(images.read_rgb(files / "photo.png"), R), work_size=CFG.rough_size)
    np.testing.assert_array_equal(got[0], rough)                         # the front's rough = the datasets rough
    want = P.paint_figure(CFG, painter.g_vars, rough, SEEDS).paintings  # ... and the library's paintings of it
    for i in range(3):
        np.testing.assert_array_equal(got[1 + i], want[i])

    out = files / "rough_fig.png"
    rc, _, err = run(capsys, "spade", "paint", files / "rough.png", "--rough", "--model", files / "low",
                     "--out", out, "--seeds", "0-1,0", "--style", files / "style.png")
    assert rc == 0, err
    got = cells(np.asarray(Image.open(out)), 5)
    want = P.paint_figure(CFG, painter.g_vars, images.read_rgb(files / "rough.png"), SEEDS,
                          style=images.read_rgb(files / "style.png"), e_vars=painter.e_vars)
    for have, cell in zip(got, [want.rough, *want.paintings, want.style]):
        np.testing.assert_array_equal(have, cell)
    rc, _, err = run(capsys, "spade", "paint", files / "rough.png", "--rough", "--model", files / "low",
                     "--out", out, "--seeds", "0-2", "--overwrite")
    assert rc == 0, err


def test_cli_bad_input_is_one_line_and_writes_nothing(files, capsys):
    out = files / "never.png"
    low = ("--model", files / "low")
    cases = [((files / "missing.png", *low), r"image .*missing\.png does not exist"),
             ((files / "corrupt.png", *low), r"cannot read image .*corrupt\.png"),
             ((files / "photo.png", "--model", files / "nomodel"), r"model file .*nomodel does not exist"),
             ((files / "photo.png", "--model", files / "sg2"), r"sg2 holds a 'stylegan2' model; this needs a 'spade'"),
             ((files / "rough48.png", "--rough", *low), r"rough .*rough48\.png is 48x48 but the model paints 32x32"),
             ((files / "photo.png", "--model", files / "novae", "--style", files / "style.png"),
              r"--style needs a VAE model .*novae has vae=False"),
             ((files / "photo.png", "--model", files / "noenc", "--style", files / "style.png"),
              r"--style needs the VAE encoder 'E', which model file .*noenc does not hold"),
             ((files / "photo.png", *low, "--style", files / "corrupt.png"), r"cannot read style image .*corrupt"),
             ((files / "photo.png", *low, "--seeds", "0-x"), r"seeds '0-x': '0-x' is not a number")]
    for argv, message in cases:
        rc, stdout, err = run(capsys, "spade", "paint", *argv, "--out", out)
        assert rc == 2 and err.startswith("gafu spade: error: ") and err.count("\n") == 1, (argv, err)
        assert re.search(message, err), (message, err)
        assert not out.exists() and not [p for p in files.iterdir() if p.name.startswith(".never")]
    with pytest.raises(SystemExit) as stop:                        # a bad flag value stops argparse itself
        run(capsys, "spade", "paint", files / "photo.png", *low, "--out", out, "--psi", "nan")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("gafu spade paint: error: argument --psi: must be a finite")
    assert not out.exists()
    images.write_png(out, np.zeros((4, 4, 3), np.uint8), min_side=0)
    rc, _, err = run(capsys, "spade", "paint", files / "photo.png", *low, "--out", out)
    assert rc == 2 and "never.png already exists (pass --overwrite" in err
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.zeros((4, 4, 3), np.uint8))   # untouched


# -- gafu blend / gafu sample on SPADE files ------------------------------------------------------------------------
def leaves(tree: dict) -> dict[str, np.ndarray]:
    return {paths.path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_blend_swap_and_lerp_of_spade_files(files, capsys):
    lo, hi = (modelfile.load_model(files / n).variables for n in ("low", "high"))
    g_lo, g_hi = leaves(lo["G"]), leaves(hi["G"])
    rc, _, err = run(capsys, "blend", files / "low", files / "high", "--out", files / "swap8", "--swap", 8)
    assert rc == 0, err
    mf = modelfile.load_model(files / "swap8")
    assert mf.arch == "spade" and mf.config == CFG.to_dict()
    swapped = leaves(mf.variables["G"])
    assert swapped.keys() == g_lo.keys()
    counts = {"low": 0, "high": 0}
    for key, x in swapped.items():
        r = paths.resolution_of(key.split("/"))
        side = "high" if r is not None and r >= 8 else "low"       # to_rgb with the top block; previews with LOW
        counts[side] += 1
        np.testing.assert_array_equal(x, (g_hi if side == "high" else g_lo)[key], err_msg=key)
        assert not np.array_equal(x, (g_lo if side == "high" else g_hi)[key]), key
    assert counts["low"] > 10 and counts["high"] > 10
    for net in ("D", "E"):                                         # the other networks come from LOW
        for key, x in leaves(mf.variables[net]).items():
            np.testing.assert_array_equal(x, leaves(lo[net])[key], err_msg=f"{net}/{key}")

    rc, _, err = run(capsys, "blend", files / "low", files / "high", "--out", files / "lerp", "--alpha", 0.3)
    assert rc == 0, err
    lerped = leaves(modelfile.load_model(files / "lerp").variables["G"])
    kinds = set()
    for key, x in lerped.items():
        kind = key.split("/")[0]
        kinds.add(kind)
        if kind == "params":
            np.testing.assert_allclose(x, 0.7 * g_lo[key] + 0.3 * g_hi[key], rtol=1e-5, atol=1e-6, err_msg=key)
        else:                                                      # batch_stats, spectral, previews: LOW's, whole
            np.testing.assert_array_equal(x, g_lo[key], err_msg=key)
            assert not np.array_equal(x, g_hi[key]), key
    assert kinds == {"params", "batch_stats", "spectral", "previews"}

    out = files / "blended_samples.png"
    rc, stdout, err = run(capsys, "sample", "--model", files / "swap8", "--seeds", "0-2", "--out", out)
    assert rc == 0 and stdout == f"wrote {out}\n", err
    want = images.make_grid(spade.sample(CFG, mf.variables["G"], [0, 1, 2]))             # previews 0, 1, 2
    np.testing.assert_array_equal(np.asarray(Image.open(out)), want)
    assert want.shape == (CELL + 4, 3 * (CELL + 2) + 2, 3)                               # 32 px shown 4x


def test_blend_and_sample_bad_spade_input(files, capsys):
    out, low = files / "never_blend", files / "low"
    cases = [(("blend", low, files / "novae", "--swap", 8), r"different model configs \(vae: True vs False\)"),
             (("blend", low, files / "sg2", "--swap", 8), r"SPADEConfig model and .* a StyleGAN2Config one"),
             (("blend", low, files / "high", "--toonify", 8),     # StyleGAN2's layer positions
              r"--toonify follows Pinkney's StyleGAN2 layer positions .* a 'spade' model: use --swap R"),
             (("blend", low, files / "high", "--swap", 64),
              r"r_swap 64 is not a block resolution .* valid: \[1, 2, 4, 8, 16, 32\]")]
    for argv, message in cases:
        rc, _, err = run(capsys, *argv, "--out", out)
        assert rc == 2 and err.startswith(f"gafu {argv[0]}: error: ") and err.count("\n") == 1, (argv, err)
        assert re.search(message, err), (message, err)
        assert not out.exists() and not [p for p in files.iterdir() if p.name.startswith(".never")]
    never = files / "never_sample.png"
    rc, _, err = run(capsys, "sample", "--model", files / "noenc", "--seeds", "0-2", "--out", never)
    assert rc == 2 and "carries no preview conditions" in err and "gafu spade paint" in err, err
    assert not never.exists()
