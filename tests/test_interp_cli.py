"""`gafu blend` end to end on tiny model files: output trees, provenance, the figure, and bad input."""
import json
import re

import jax
import numpy as np
import pytest
from PIL import Image

from interp import blend as B
from interp.commands import parse_schedule
from nets import cli, modelfile, paths, sampling
from nets.stylegan2 import init_discriminator, init_generator, preset

CFG = preset("tiny")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("blend")
    for i in (0, 1):
        variables = {"G": init_generator(CFG, jax.random.key(i)), "D": init_discriminator(CFG, jax.random.key(9 + i))}
        modelfile.save_model(d / f"m{i}", variables, CFG, meta={"seed": i})
    # a narrower config; the config check fires before the variables are used, so m1's serve (no second init)
    modelfile.save_model(d / "narrow", {"G": variables["G"]}, preset("tiny", channel_max=16))
    return d


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_trees_equal(x, y) -> None:
    fx, fy = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (x, y))
    assert [paths.path_str(p) for p, _ in fx] == [paths.path_str(p) for p, _ in fy]
    for (p, a), (_, b) in zip(fx, fy):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=paths.path_str(p))


def test_toonify_blend_writes_model_provenance_and_figure(files, capsys, monkeypatch):
    monkeypatch.setenv("GAFU_NATIVE_SIZE", "1")           # the figure's cells at the models' 32 px, to compare
    low, high = modelfile.load_model(files / "m0"), modelfile.load_model(files / "m1")
    out, fig = files / "toon", files / "toon.png"
    rc, stdout, err = run(capsys, "blend", files / "m0", files / "m1", "--out", out, "--toonify", 8,
                          "--blend-width", 0.7, "--figure", fig, "--seeds", "3,5,7")
    assert rc == 0, err
    assert "rows: LOW, toonify at 32, toonify at 16, toonify at 8, toonify at 4, HIGH" in stdout
    mf = modelfile.load_model(out)
    assert_trees_equal(mf.variables["G"], B.blend_models(low.variables["G"], high.variables["G"], 8, 0, 0.7))
    assert_trees_equal(mf.variables["D"], low.variables["D"])
    assert mf.config == low.config and mf.arch == "stylegan2"
    info = mf.meta["blend"]
    assert (info["mode"], info["resolution"], info["level"], info["blend_width"]) == ("toonify", 8, 0, 0.7)
    assert info["low"] == str(low.path) and mf.meta["parents"]["high"] == {"seed": 1}
    shares = info["share_of_high"]
    assert shares["params/synthesis/b4/conv1"] == 0.0 and shares["params/mapping/fc0"] == 0.0
    assert shares["params/synthesis/b8/conv0"] == pytest.approx(0.5)          # the logistic's centre
    assert shares["params/synthesis/b16/conv1"] == pytest.approx(1 / (1 + np.exp(-3 / 0.7)), abs=1e-6)

    grid = np.asarray(Image.open(fig))                     # 6 rows x 3 seeds of 32 px, 2 px padding
    assert grid.shape == (6 * 34 + 2, 3 * 34 + 2, 3)
    cell = lambda r, c: grid[2 + 34 * r:34 * (r + 1), 2 + 34 * c:34 * (c + 1)]  # noqa: E731
    lo_imgs, hi_imgs = (sampling.sample(CFG, m.variables["G"], [3, 5, 7]) for m in (low, high))
    for c in range(3):
        np.testing.assert_array_equal(cell(0, c), lo_imgs[c])
        np.testing.assert_array_equal(cell(5, c), hi_imgs[c])
    assert not np.array_equal(cell(3, 0), cell(0, 0)) and not np.array_equal(cell(3, 0), cell(5, 0))


def test_clean_modes_match_the_library(files, capsys):
    low, high = (modelfile.load_model(files / f"m{i}").variables["G"] for i in (0, 1))
    scope = paths.GENERATOR_SCOPE
    cases = [(("--swap", 16), B.swap(low, high, 16, scope=scope)),
             (("--swap", 16, "--blend-width", 0.5), B.smooth_swap(low, high, 16, 0.5, scope=scope)),
             (("--alpha", 0.25), B.blend(low, high, 0.25, global_alpha=0.25, scope=scope)),
             (("--schedule", "4=0,8=0.5,16=1,32=1"), B.blend(low, high, {4: 0, 8: 0.5, 16: 1, 32: 1}, scope=scope))]
    for i, (flags, want) in enumerate(cases):
        out = files / f"clean{i}"
        rc, _, err = run(capsys, "blend", files / "m0", files / "m1", "--out", out, *flags)
        assert rc == 0, err
        assert_trees_equal(modelfile.load_model(out).variables["G"], want)
    swapped = modelfile.load_model(files / "clean0").meta["blend"]["share_of_high"]
    assert swapped["params/synthesis/b8/torgb"] == 0.0 and swapped["buffers/synthesis/b16/conv0"] == 1.0


def test_parse_schedule():
    assert parse_schedule("4=0, 8=0.5,16=1") == {4: 0.0, 8: 0.5, 16: 1.0}
    with pytest.raises(ValueError, match="'8:0.5' is not R=ALPHA"):
        parse_schedule("4=0,8:0.5")


def test_bad_input_is_reported_and_nothing_is_written(files, capsys):
    out = files / "never"
    broken = files / "broken"
    broken.mkdir()
    (broken / "variables").mkdir()
    (broken / "gafu.json").write_text(json.dumps({"format": "gafu-model", "version": 1, "arch": "stylegan2",
                                                  "config": CFG.to_dict(), "meta": {}}))
    m0, m1 = files / "m0", files / "m1"
    cases = [((m0, files / "missing", "--toonify", 8), "missing does not exist"),
             ((broken, m1, "--swap", 8), "cannot read the variables of model file .*broken"),
             ((m0, files / "narrow", "--swap", 8), r"different model configs \(channel_max: 32 vs 16\)"),
             ((m0, m1, "--swap", 64), r"r_swap 64 is not a block resolution .* valid: \[4, 8, 16, 32\]"),
             ((m0, m1, "--toonify", 12), r"resolution 12 is not a block resolution"),
             ((m0, m1, "--alpha", 0.5, "--figure", files / "f.png"), "figure sweeps the swap resolution"),
             ((m0, m1, "--alpha", 0.5, "--blend-width", 1), "blend_width applies to the toonify and swap"),
             ((m0, m1, "--swap", 8, "--level", 1), "level applies to the toonify mode only"),
             ((m0, m1, "--schedule", "4=0,8=1"), r"no value for resolutions \[16, 32\]")]
    for argv, message in cases:
        rc, _, err = run(capsys, "blend", *argv, "--out", out)
        assert rc == 2 and err.startswith("gafu blend: error: "), (argv, err)
        assert re.search(message, err), (message, err)
        assert not out.exists() and not (files / "f.png").exists()
        assert not [p for p in files.iterdir() if p.name.startswith(".never")]       # no temp left behind
    rc, _, err = run(capsys, "blend", m0, m1, "--out", m0, "--swap", 8)
    assert rc == 2 and "already exists (pass --overwrite" in err
